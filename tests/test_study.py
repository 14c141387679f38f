"""The study plan the Snakefile is built on: targets, per-run configs, consistency checks."""

from __future__ import annotations

import copy

import pytest
import yaml

from evae.config import ConfigError
from evae.study import Run, Study, figure_label, load_config
from tests.conftest import REPO


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


def test_paper_study_trains_every_combination_its_architectures_model_with_five_seeds():
    study = Study(load("config"))
    assert study.profile == "paper"
    assert len(study.runs) == 3 * 3 * 3 * 5 + 3  # binary datasets x 3 MLP/conv models x 5 seeds; CelebA: 1 seed
    assert {(r.architecture, r.seed) for r in study.runs if r.dataset == "celeba"} == {("convvae64", 0)}
    assert len(study.nll_targets()) == 138 and len(study.table_inputs("nll")) == 135
    assert len(study.knn_targets()) == 2 * 1 * 3 * 5  # mnist, fashion_mnist x vae x 3 priors x 5 seeds
    assert len(study.augmentation_targets()) == 2 * 2 * 2 * 5  # datasets x widths x {none, exemplar} x seeds


def test_paper_protocol_settings_reach_each_run():
    study = Study(load("config"))
    vae = study.train_config("mnist", "vae", "exemplar", 3)
    conv = study.train_config("omniglot", "convhvae", "exemplar", "0")  # wildcards arrive as strings
    assert (vae.lr, vae.batch_size, vae.warmup_epochs, vae.max_epochs, vae.patience) == (5e-4, 100, 100, 2000, 50)
    assert (vae.exemplar_mode, vae.exemplar_subset, vae.optimizer, vae.seed) == ("exact", 0.5, "adamnormgrad", 3)
    assert (conv.exemplar_mode, conv.exemplar_k) == ("knn", 10)  # the paper's 10NN rows


def test_each_profile_writes_under_its_own_root():
    paper, smoke = Study(load("config")), Study(load("smoke"))
    reduced = Study(load_config(REPO / "config" / "config.yaml", REPO / "config" / "reduced.yaml"))
    run = reduced.runs[0]
    assert (paper.run_dir(run), reduced.run_dir(run)) == (f"results/runs/{run.key}", f"results/reduced/runs/{run.key}")
    for study in (paper, reduced, smoke):
        others = [s.root for s in (paper, reduced, smoke) if s is not study and s.root != "results"]
        paths = study.all_targets() + [study.run_dir(r) for r in study.runs] + study.nll_targets()
        assert all(p.startswith(study.root + "/") and not any(p.startswith(o + "/") for o in others) for p in paths)


def test_unknown_training_key_is_rejected_with_the_run_named():
    config = load("smoke")
    config["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"learning_rate.*valid keys"):
        Study(config)


def test_bad_training_value_is_rejected():
    config = load("smoke")
    config["train_by_architecture"]["convhvae"]["exemplar_mode"] = "approximate"
    with pytest.raises(ConfigError, match=r"convhvae.*exemplar_mode.*approximate"):
        Study(config)


def test_evaluations_must_use_trained_models():
    config = load("smoke")
    bad = copy.deepcopy(config)
    bad["augmentation"]["exemplar_model"]["seed"] = 7
    with pytest.raises(ConfigError, match=r"augmentation of mnist_subset needs the trained model"):
        Study(bad)
    bad = copy.deepcopy(config)
    bad["knn"]["architectures"] = ["hvae", "convhvae", "vae"]
    bad["models"]["architectures"] = ["vae", "convvae64"]
    with pytest.raises(ConfigError, match=r"knn.architectures"):
        Study(bad)


def test_unknown_run_is_reported():
    with pytest.raises(ConfigError, match="not part of the 'smoke' study"):
        Study(load("smoke")).train_config("mnist", "vae", "gaussian", 0)


def test_runtime_estimate_scales_with_the_budget():
    study = Study(load("config"))
    cfg = study.train_config("mnist", "vae", "gaussian", 0)
    assert study.train_runtime_minutes(cfg.replace(max_epochs=200)) < study.train_runtime_minutes(cfg)
    assert study.train_runtime_minutes(study.train_config("mnist", "convhvae", "gaussian", 0)) > study.train_runtime_minutes(cfg)


def test_nll_runtime_estimate_follows_the_architecture_and_prior():
    study = Study(load("config"))
    minutes = lambda arch, prior: study.nll_runtime_minutes(study.train_config("mnist", arch, prior, 0))  # noqa: E731
    assert minutes("vae", "gaussian") < minutes("vae", "exemplar") < minutes("hvae", "exemplar") < minutes("convhvae", "gaussian")
    assert minutes("convhvae", "gaussian") > 24 * 60  # 10,000 images x 5000 samples of the gated-conv decoder on a CPU


def test_memory_requests_grow_with_the_data_and_the_model():
    study = Study(load("config"))
    mb = lambda d, a: study.train_mem_mb(study.train_config(d, a, "exemplar", 0))  # noqa: E731
    assert mb("mnist", "vae") < mb("mnist", "convhvae") < mb("celeba", "convvae64")
    smoke = Study(load("smoke"))
    assert max(smoke.train_mem_mb(smoke.train_config(r.dataset, r.architecture, r.prior, r.seed)) for r in smoke.runs) < 4000


def test_a_colour_dataset_is_an_ordinary_dataset_of_the_study():
    config = load("smoke")
    study = Study(config)
    colour = [r.key for r in study.runs if r.dataset == "celeba_standin"]
    assert colour == [f"celeba_standin/convvae64/{p}/seed0" for p in ("gaussian", "vampprior", "exemplar")]
    assert study.train_config("celeba_standin", "convvae64", "exemplar", 0).hidden == 8  # train_by_architecture
    assert list(study.tables()) == ["nll", "knn", "augmentation", "celeba"] and study.tables()["celeba"] == "nll_bits"
    assert study.table_inputs("celeba") == [study.eval_path(Run(*k.split("/")[:3], 0), "nll") for k in colour]
    assert not any("celeba" in t for t in study.table_inputs("nll"))
    figures = [t for t in study.all_targets() if "celeba_standin" in t]
    assert figures == [f"results/smoke/figures/{name}_celeba_standin.png"
                       for name in ("exemplar_samples", "unconditional_samples", "cyclic_generation")]
    off = copy.deepcopy(config)
    off["models"]["datasets"], off["figures"]["datasets"] = ["mnist_subset"], ["mnist_subset"]
    off["models"]["architectures"].remove("convvae64")
    assert not any("celeba" in t for t in Study(off).all_targets()) and "celeba" not in Study(off).tables()


def test_a_dataset_no_listed_architecture_models_is_an_error():
    config = load("smoke")
    config["models"]["architectures"].remove("convvae64")
    with pytest.raises(ConfigError, match=r"models.datasets: no architecture .* models 'celeba_standin'; add one of \['convvae64'\]"):
        Study(config)
    config = load("smoke")
    config["figures"]["architectures"] = ["vae"]
    with pytest.raises(ConfigError, match=r"figures of celeba_standin: none of figures.architectures"):
        Study(config)


def test_seeds_by_architecture_overrides_the_seeds_of_that_architecture_only():
    config = load("smoke")
    config["seeds"], config["seeds_by_architecture"] = [0, 1], {"convvae64": [0, 3]}
    study = Study(config)
    assert {r.seed for r in study.runs if r.architecture == "convvae64"} == {0, 3}
    assert {r.seed for r in study.runs if r.architecture == "vae"} == {0, 1}
    config["seeds_by_architecture"] = {"resnet": [0]}
    with pytest.raises(ConfigError, match=r"seeds_by_architecture: \['resnet'\] not a registered architecture"):
        Study(config)


@pytest.mark.parametrize(("section", "key", "name", "kind"), [
    ("models", "datasets", "cifar", "dataset"),
    ("models", "priors", "flow", "prior"),
    ("knn", "architectures", "resnet", "architecture"),
    ("figures", "datasets", "celebahq", "dataset"),
])
def test_unregistered_names_are_rejected_with_the_registered_ones(section, key, name, kind):
    config = load("smoke")
    config[section][key] = [*config[section][key], name]
    with pytest.raises(ConfigError, match=rf"{section}.{key}: \['{name}'\] not a registered {kind}; registered: \["):
        Study(config)


def test_config_files_merge_key_by_key_as_snakemake_merges_them(tmp_path):
    from snakemake.utils import update_config

    base, over = tmp_path / "base.yaml", tmp_path / "over.yaml"
    base.write_text("a: 1\nnested: {x: 1, y: {p: 1, q: 2}}\nsection: {k: 1}\n")
    over.write_text("nested: {y: {q: 3}, z: 4}\nsection: null\nb: 2\n")
    expected = yaml.safe_load(base.read_text())
    update_config(expected, yaml.safe_load(over.read_text()))
    assert load_config(base, over) == expected == {
        "a": 1, "b": 2, "nested": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}, "section": None
    }


# --- groups: a study that is not a full cross product ----------------------------------------------------------

PRIORS = ["gaussian", "vampprior", "exemplar"]


def cross_product(config: dict) -> list[Run]:
    """The runs of a one-group ``models`` section, written out as the cross product it stands for."""
    m, by_arch = config["models"], config.get("seeds_by_architecture", {})
    return [Run(d, a, p, s) for d in m["datasets"] for a in m["architectures"] for p in m["priors"]
            for s in by_arch.get(a, config["seeds"]) if (d == "celeba" or d.endswith("standin")) == (a == "convvae64")]


@pytest.mark.parametrize(("name", "count"), [("config", 138), ("smoke", 12), ("mnist_full", 3)])
def test_every_profile_keeps_its_cross_product_run_list(name, count):
    config = load_config(REPO / "config" / "config.yaml", REPO / "config" / f"{name}.yaml")
    study = Study(config)
    assert isinstance(config["models"], dict) and study.runs == cross_product(config) and len(study.runs) == count


def groups_config() -> dict:
    """The reduced profile grown as planned: seeds 1-2 of its MLP VAE runs, the Omniglot stand-in and the MNIST HVAE
    (the README's list of the paper's cells)."""
    config = load_config(REPO / "config" / "config.yaml", REPO / "config" / "reduced.yaml")
    config["models"] = [
        {"datasets": ["mnist", "fashion_mnist"], "architectures": ["vae"], "priors": PRIORS, "seeds": [0, 1, 2]},
        {"datasets": ["omniglot_raw28"], "architectures": ["vae"], "priors": PRIORS},
        {"datasets": ["mnist"], "architectures": ["hvae"], "priors": PRIORS},
    ]
    config["knn"].update(datasets=["mnist", "fashion_mnist", "omniglot_raw28"], architectures=["vae", "hvae"])
    return config


def test_groups_train_the_union_of_their_runs_and_nothing_else():
    study = Study(groups_config())
    expected = ([f"{d}/vae/{p}/seed{s}" for d in ("mnist", "fashion_mnist") for p in PRIORS for s in (0, 1, 2)]
                + [f"omniglot_raw28/vae/{p}/seed0" for p in PRIORS]  # the top-level seeds: [0]
                + [f"mnist/hvae/{p}/seed0" for p in PRIORS])
    assert [r.key for r in study.runs] == expected
    assert study.trained("dataset") == ["mnist", "fashion_mnist", "omniglot_raw28"]
    assert study.trained("architecture") == ["vae", "hvae"] and study.stand_ins() == {
        "omniglot_raw28": "raw Omniglot, not the paper's chardata.mat"}
    assert len(study.knn_targets()) == len(study.table_inputs("nll")) == 24  # every run: knn names all of them
    assert "results/reduced/eval/mnist/hvae/exemplar/seed0/knn.json" in study.knn_targets()
    with pytest.raises(ConfigError, match="not part of the 'reduced' study"):
        study.train_config("fashion_mnist", "hvae", "gaussian", 0)  # no group asks for it


def test_the_committed_reduced_study_is_the_planned_one():
    """config/reduced.yaml holds the whole plan: seeds 0-2 of MNIST and Fashion-MNIST, the Omniglot stand-in and the
    MNIST HVAE, with kNN probes of both architectures."""
    committed = Study(load_config(REPO / "config" / "config.yaml", REPO / "config" / "reduced.yaml"))
    planned = Study(groups_config())
    assert committed.runs == planned.runs and len(committed.runs) == 24
    assert committed.knn_targets() == planned.knn_targets()
    assert committed.config["augmentation"]["seeds"] == [0, 1, 2]


def test_a_run_two_groups_name_is_trained_once_where_first_listed():
    config = groups_config()
    config["models"].insert(0, {"datasets": ["mnist"], "architectures": ["vae"], "priors": ["exemplar"], "seeds": [2]})
    config["models"].append({"datasets": ["mnist"], "architectures": ["vae"], "priors": ["gaussian"], "seeds": [0]})
    keys = [r.key for r in Study(config).runs]
    assert len(keys) == len(set(keys)) == 24
    assert keys[:2] == ["mnist/vae/exemplar/seed2", "mnist/vae/gaussian/seed0"]


def test_a_group_without_seeds_takes_its_architectures_seeds():
    config = groups_config()
    config["seeds"], config["seeds_by_architecture"] = [0, 1], {"hvae": [4]}
    study = Study(config)
    assert {r.seed for r in study.runs if r.dataset == "omniglot_raw28"} == {0, 1}
    assert {r.seed for r in study.runs if r.architecture == "hvae"} == {4}
    assert {r.seed for r in study.runs if r.dataset == "fashion_mnist"} == {0, 1, 2}  # the group's own seeds win


def test_figures_compare_only_the_priors_trained_with_the_figure_model():
    config = groups_config()
    config["models"][1]["priors"] = ["gaussian", "exemplar"]
    config["figures"].update(datasets=["mnist", "omniglot_raw28"])
    study = Study(config)
    assert study.figure_priors("mnist", "vae") == PRIORS
    assert study.figure_priors("omniglot_raw28", "vae") == ["gaussian", "exemplar"]


@pytest.mark.parametrize(("group", "key", "value", "message"), [
    (1, "priors", ["gaussian", "flow"], r"models\[1\].priors: \['flow'\] not a registered prior"),
    (2, "datasets", ["mnist", "cifar"], r"models\[2\].datasets: \['cifar'\] not a registered dataset"),
    (2, "architectures", ["convvae64"], r"models\[2\].datasets: no architecture of models\[2\].architectures "
                                        r"\['convvae64'\] models 'mnist'; add one of \['vae', 'hvae', 'convhvae'\]"),
    (0, "architectures", ["vae", "convvae64"], r"models\[0\].architectures: 'convvae64' models none of models\[0\]"),
])
def test_a_bad_group_is_named_in_the_error(group, key, value, message):
    config = groups_config()
    config["models"][group][key] = value
    with pytest.raises(ConfigError, match=message):
        Study(config)


def test_evaluations_must_use_models_some_group_trains():
    config = groups_config()
    config["knn"]["datasets"].append("omniglot")
    with pytest.raises(ConfigError, match=r"knn.datasets lists \['omniglot'\], which no group of models trains"):
        Study(config)
    config = groups_config()
    config["augmentation"]["exemplar_model"]["architecture"] = "hvae"  # hvae is trained on mnist only
    with pytest.raises(ConfigError, match=r"augmentation of fashion_mnist needs the trained model "
                                          r"fashion_mnist/hvae/exemplar/seed0"):
        Study(config)


def test_the_schema_takes_one_group_or_a_list_of_them():
    from snakemake.utils import validate

    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    validate(groups_config(), schema)
    validate(load_config(REPO / "config" / "config.yaml", REPO / "config" / "reduced.yaml"), schema)
    for bad in ([], [{"datasets": ["mnist"], "architectures": ["vae"], "priors": ["gaussian"], "seed": [1]}],
                [{"datasets": ["mnist"], "architectures": ["vae"]}]):
        config = groups_config()
        config["models"] = bad
        with pytest.raises(Exception, match="models"):
            validate(config, schema)


# --- figures of several architectures ----------------------------------------------------------------------

ALL_FIGURES = ("exemplar_samples", "unconditional_samples", "cyclic_generation", "interpolations", "tsne",
               "prior_comparison")
SAMPLE_FIGURES = ALL_FIGURES[:3]


@pytest.mark.parametrize(("name", "root", "stems"), [
    ("config", "results", {"mnist": ALL_FIGURES, "fashion_mnist": ALL_FIGURES, "omniglot": ALL_FIGURES,
                           "celeba": SAMPLE_FIGURES}),
    ("smoke", "results/smoke", {"mnist_subset": ALL_FIGURES, "celeba_standin": SAMPLE_FIGURES}),
    ("reduced", "results/reduced", {"mnist": ALL_FIGURES, "mnist_hvae": ALL_FIGURES, "fashion_mnist": ALL_FIGURES,
                                    "omniglot_raw28": ALL_FIGURES}),
    ("mnist_full", "results/mnist_full", {"mnist": ALL_FIGURES}),
])
def test_the_profiles_keep_their_figure_files(name, root, stems):
    """Their figures, named {figure}_{dataset} for a dataset's first architecture and {figure}_{dataset}_{architecture}
    for the others (the reduced profile's MNIST HVAE)."""
    study = Study(load_config(REPO / "config" / "config.yaml", REPO / "config" / f"{name}.yaml"))
    expected = [f"{root}/figures/{figure}_{stem}.png" for stem, figures in stems.items() for figure in figures]
    expected += [f"{root}/figures/{f}.png" for f in ("training_curves", "knn_error_vs_k")]
    assert study.figure_targets() == expected
    datasets = study.config["figures"]["datasets"]
    assert all(study.figure_priors(d, a) == PRIORS for d in datasets for a in study.figure_architectures(d))


def two_architectures_config() -> dict:
    """The groups config with the HVAE trained on MNIST, figures of MNIST and Fashion-MNIST from VAE and HVAE."""
    config = groups_config()
    config["models"][2]["priors"] = ["gaussian", "exemplar"]
    config["figures"].update(datasets=["mnist", "fashion_mnist"], architectures=["vae", "hvae"])
    return config


def test_every_trained_figure_architecture_draws_the_figures_the_first_under_the_plain_names():
    study = Study(two_architectures_config())
    assert study.figure_architectures("mnist") == ["vae", "hvae"]
    assert study.figure_architectures("fashion_mnist") == ["vae"]  # no HVAE trained on it
    root = "results/reduced/figures"
    assert study.dataset_figure_targets("mnist") == ([f"{root}/{f}_mnist.png" for f in ALL_FIGURES]
                                                     + [f"{root}/{f}_mnist_hvae.png" for f in ALL_FIGURES])
    assert study.dataset_figure_targets("fashion_mnist") == [f"{root}/{f}_fashion_mnist.png" for f in ALL_FIGURES]
    assert study.figure_priors("mnist", "vae") == PRIORS
    assert study.figure_priors("mnist", "hvae") == ["gaussian", "exemplar"]
    assert study.figure_model("mnist", "hvae", "gaussian") == Run("mnist", "hvae", "gaussian", 0)


def test_the_first_trained_figure_architecture_keeps_the_plain_names_whichever_it_is():
    config = two_architectures_config()
    config["figures"]["architectures"] = ["hvae", "vae"]
    study = Study(config)
    root = "results/reduced/figures"
    assert study.figure_architectures("mnist") == ["hvae", "vae"]
    assert study.dataset_figure_targets("mnist")[:2] == [f"{root}/exemplar_samples_mnist.png",
                                                         f"{root}/unconditional_samples_mnist.png"]
    assert f"{root}/tsne_mnist_vae.png" in study.dataset_figure_targets("mnist")
    assert study.dataset_figure_targets("fashion_mnist")[0] == f"{root}/exemplar_samples_fashion_mnist.png"


@pytest.mark.parametrize("change", ["seed", "prior"])
def test_a_figure_architecture_without_its_trained_exemplar_model_draws_no_figures(change):
    config = two_architectures_config()
    if change == "seed":
        config["models"][2]["seeds"] = [1]  # the HVAE trained, but not with figures.seed
    else:
        config["models"][2]["priors"] = ["gaussian", "vampprior"]
    study = Study(config)
    assert study.figure_architectures("mnist") == ["vae"]
    assert not any("hvae" in t for t in study.figure_targets())


def test_a_figure_file_names_the_architecture_it_is_drawn_from():
    study = Study(two_architectures_config())
    assert study.figure_architecture("mnist", None) == "vae" and study.figure_architecture("mnist", "hvae") == "hvae"
    assert study.figure_architecture("fashion_mnist", None) == "vae"
    for dataset, named in (("mnist", "vae"), ("mnist", "convhvae"), ("fashion_mnist", "hvae")):
        with pytest.raises(ConfigError, match=f"no figure of {dataset} is named after '{named}'"):
            study.figure_architecture(dataset, named)


def test_no_figure_file_name_can_be_read_two_ways():
    """Every (figure, dataset, architecture or none) has a file name of its own, so each figure file matches one
    rule (dataset and architecture wildcards take registered names only) and splits into wildcards one way."""
    from evae.data.registry import DATASETS
    from evae.models.registry import ARCHITECTURES

    names = [f"{f}_{d}{'' if a is None else '_' + a}.png"
             for f in ALL_FIGURES for d in DATASETS for a in (None, *ARCHITECTURES)]
    assert len(names) == len(set(names))


def test_figures_need_a_trained_exemplar_model_of_a_figure_architecture():
    config = groups_config()
    config["models"][2]["datasets"] = ["mnist_subset"]  # the HVAE alone on the subset
    config["figures"].update(datasets=["mnist", "mnist_subset"], architectures=["vae", "hvae"])
    study = Study(config)
    assert study.figure_architectures("mnist") == ["vae"] and study.figure_architectures("mnist_subset") == ["hvae"]
    config["figures"]["seed"] = 1  # trained for the VAE on mnist, for no architecture on the subset
    with pytest.raises(ConfigError, match=r"figures of mnist_subset needs the trained model "
                                          r"mnist_subset/vae/exemplar/seed1 or mnist_subset/hvae/exemplar/seed1"):
        Study(config)


def test_figure_titles_say_not_comparable_only_for_profiles_off_the_papers_protocol():
    assert figure_label("paper") is None
    assert figure_label("paper", in_progress=True) == "IN PROGRESS run"
    assert figure_label("mnist_full") == "FULL PROTOCOL, MNIST MLP, exemplar kNN-trained run"
    assert figure_label("reduced") == "REDUCED BUDGET run: not comparable with the paper"
    assert figure_label("smoke", in_progress=True) == "SMOKE, IN PROGRESS run: not comparable with the paper"
