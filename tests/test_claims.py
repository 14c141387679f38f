"""The claims table: each claim's effect per seed, the paper's effect, and verdicts whose answers are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evae import checksums
from evae.report.claims import CLAIMS, compile_claims, margin, paper_effect, seed_effects, to_markdown, verdict
from evae.report.tables import load_reported
from evae.study import KIND, Study, load_config
from tests.conftest import REPO

REPORTED = REPO / "resources" / "paper" / "reported.csv"
NLL, VAMP_OVER_GAUSSIAN, KNN, AUGMENTATION = CLAIMS


def run_record(dataset, prior, seed, arch="vae"):
    config = {"dataset": dataset, "architecture": arch, "prior": prior, "seed": seed, "exemplar_mode": "knn",
              "exemplar_subset": 0.5, "exemplar_k": 10}
    return {"config": config, "config_digest": f"{prior}{seed}", "epochs_trained": 100, "best_epoch": 100}


def nll(dataset, prior, seed, value, arch="vae"):
    return {"run": run_record(dataset, prior, seed, arch), "nll": value, "nll_stderr": 0.2, "samples": 5000}


def knn(dataset, prior, seed, error):
    return {"run": run_record(dataset, prior, seed), "latent": {"k": 3, "test_error": error}}


def augmentation(dataset, augmented, seed, error, hidden=1024):
    return {"dataset": dataset, "classifier": {"hidden": hidden, "epochs": 100}, "seed": seed,
            "augmentation": {"noise_scale": 1.0} if augmented else None, "test_error": error,
            "run": run_record(dataset, "exemplar", 0) if augmented else None}


def write(tmp_path, kind, results):
    paths = []
    for i, result in enumerate(results):
        path = tmp_path / kind / f"{i}.json"
        path.parent.mkdir(exist_ok=True)
        checksums.write_json(path, result)
        paths.append(path)
    return paths


def values(rows):
    return pd.DataFrame(rows, columns=["prior", "seed", "value"])


def test_margin_is_the_winners_lead_over_the_best_other():
    assert margin(-84.0, [-85.0], higher_is_better=True) == pytest.approx(1.0)
    assert margin(1.5, [2.0, 1.7], higher_is_better=False) == pytest.approx(0.2)  # lead over the runner-up
    assert margin(1.9, [2.0, 1.7], higher_is_better=False) == pytest.approx(-0.2)


@pytest.mark.parametrize(
    "effects, expected",
    [([1.2, 0.3, 0.1], "holds on every seed"), ([-0.2, -0.1], "reversed on every seed"), ([0.4, -0.1], "mixed"),
     ([0.2, 0.0], "mixed"), ([0.0], "tied on every seed"), ([0.5], "holds on every seed"), ([], "not testable")],
)
def test_verdict_reads_the_signs_of_the_effects(effects, expected):
    assert verdict(effects) == expected


def test_seed_effects_pair_seeds_and_leave_out_incomplete_ones():
    found = values([("exemplar", 0, 1.1), ("gaussian", 0, 2.0), ("vampprior", 0, 1.5),
                    ("exemplar", 1, 1.6), ("gaussian", 1, 1.4), ("vampprior", 1, 1.7),
                    ("exemplar", 2, 1.0), ("gaussian", 2, 1.2)])  # seed 2 lacks the VampPrior
    assert seed_effects(found, KNN) == pytest.approx({0: 0.4, 1: -0.2})


def test_a_seed_with_two_results_of_one_prior_is_refused():
    with pytest.raises(ValueError, match="more than one result"):
        seed_effects(values([("exemplar", 0, 1.0), ("exemplar", 0, 1.1), ("vampprior", 0, 1.2)]), NLL)


def test_paper_effects_from_reported_csv():
    nll_rows = load_reported(REPORTED, "nll")
    mnist_vae = nll_rows[(nll_rows.dataset == "mnist") & (nll_rows.architecture == "vae")]
    effect, spread = paper_effect(mnist_vae, NLL)  # -82.09 +- 0.18 against -82.43 +- 0.06
    assert (effect, spread) == (pytest.approx(0.34), pytest.approx(math.hypot(0.18, 0.06)))
    knn_rows = load_reported(REPORTED, "knn")
    fashion = knn_rows[knn_rows.dataset == "fashion_mnist"]
    effect, spread = paper_effect(fashion, KNN)  # 12.56 +- 0.08 against the runner-up VampPrior, 12.74 +- 0.18
    assert (effect, spread) == (pytest.approx(0.18), pytest.approx(math.hypot(0.08, 0.18)))
    assert all(math.isnan(v) for v in paper_effect(mnist_vae[mnist_vae.prior != "vampprior"], NLL))


@pytest.fixture
def claims(tmp_path):
    """Made-up results whose verdicts are known: exemplar beats VampPrior on both MNIST seeds, VampPrior beats
    the Gaussian prior on one of two, the kNN claim is reversed on both, augmentation helps on its one seed,
    and the HVAE has no VampPrior (its two NLL claims cannot be tested)."""
    nlls = [nll("mnist", "exemplar", 0, 84.0), nll("mnist", "vampprior", 0, 85.2), nll("mnist", "gaussian", 0, 85.0),
            nll("mnist", "exemplar", 1, 84.5), nll("mnist", "vampprior", 1, 85.0), nll("mnist", "gaussian", 1, 86.0),
            nll("mnist", "exemplar", 0, 83.0, "hvae"), nll("mnist", "gaussian", 0, 84.0, "hvae")]
    knns = [knn("mnist", prior, seed, error) for seed in (0, 1)
            for prior, error in (("gaussian", 1.9), ("vampprior", 1.5), ("exemplar", 1.6 + seed / 10))]
    augs = [augmentation("fashion_mnist", False, 0, 9.80), augmentation("fashion_mnist", True, 0, 9.29)]
    results = {"nll": write(tmp_path, "nll", nlls), "knn": write(tmp_path, "knn", knns),
               "augmentation": write(tmp_path, "augmentation", augs)}
    return compile_claims(results, REPORTED, "reduced").set_index(["claim", "dataset", "architecture"])


def test_claims_of_made_up_results_get_their_known_verdicts(claims):
    assert len(claims) == 6  # two NLL claims on two architectures, the kNN claim, the augmentation claim
    exemplar = claims.loc[(NLL.text, "mnist", "vae")]
    assert exemplar["ours_by_seed"] == "seed0: +1.20; seed1: +0.50" and exemplar["verdict"] == "holds on every seed"
    assert (exemplar["ours_mean"], exemplar["ours_std"]) == (pytest.approx(0.85), pytest.approx(math.sqrt(0.245)))
    assert (exemplar["n_seeds"], exemplar["paper_effect"], exemplar["profile"]) == (2, pytest.approx(0.34), "reduced")
    vamp = claims.loc[(VAMP_OVER_GAUSSIAN.text, "mnist", "vae")]
    assert vamp["ours_by_seed"] == "seed0: -0.20; seed1: +1.00" and vamp["verdict"] == "mixed"
    knn_row = claims.loc[(KNN.text, "mnist", "vae")]
    assert knn_row["ours_by_seed"] == "seed0: -0.10; seed1: -0.20" and knn_row["verdict"] == "reversed on every seed"
    aug = claims.loc[(AUGMENTATION.text, "fashion_mnist", "mlp_2x1024")]
    assert aug["ours_by_seed"] == "seed0: +0.51" and aug["verdict"] == "holds on every seed"
    assert aug["paper_effect"] == pytest.approx(0.40) and math.isnan(aug["paper_spread"])  # the paper gives no std
    assert "classifier" in aug["note"] and "exemplar0" in aug["note"] and "width is not known" in aug["note"]


def test_a_claim_without_its_inputs_is_not_testable_and_says_what_is_missing(claims):
    for claim in (NLL, VAMP_OVER_GAUSSIAN):
        row = claims.loc[(claim.text, "mnist", "hvae")]
        assert row["verdict"] == "not testable" and row["n_seeds"] == 0 and row["note"] == "no vampprior result"
        assert row["ours_by_seed"] == "" and math.isnan(row["ours_mean"])


def test_markdown_verdicts_name_their_seeds_and_the_profile(claims):
    markdown = to_markdown(claims.reset_index(), "reduced")
    lines = markdown.splitlines()
    assert lines[0] == f"# The paper's claims on our results ({KIND['reduced']})" and "not comparable" in lines[2]
    assert "| mixed (2 seeds, REDUCED BUDGET) |" in markdown
    assert "| holds on every seed (1 seed, REDUCED BUDGET) |" in markdown
    assert "| not testable |" in markdown and "| +0.34 +- 0.19 |" in markdown


def test_a_study_without_results_of_a_kind_has_no_rows_of_its_claims(tmp_path):
    results = {"nll": write(tmp_path, "nll", [nll("mnist", "exemplar", 0, 84.0), nll("mnist", "vampprior", 0, 85.0)]),
               "knn": [], "augmentation": []}
    claims = compile_claims(results, REPORTED, "smoke")
    assert claims["claim"].tolist() == [NLL.text, VAMP_OVER_GAUSSIAN.text]
    assert claims["verdict"].tolist() == ["holds on every seed", "not testable"]


def test_a_classifier_width_the_paper_does_not_report_has_no_paper_effect(tmp_path):
    """MNIST's classifiers have known widths (1024, 8192): a width-64 one is compared with none of them, and is not
    mistaken for Fashion-MNIST's classifier of unknown width."""
    augs = [augmentation("mnist", False, 0, 2.0, hidden=64), augmentation("mnist", True, 0, 1.5, hidden=64)]
    row = compile_claims({"augmentation": write(tmp_path, "augmentation", augs)}, REPORTED, "smoke").iloc[0]
    assert (row["architecture"], row["ours_by_seed"]) == ("mlp_2x64", "seed0: +0.50")
    assert row["verdict"] == "holds on every seed"
    assert math.isnan(row["paper_effect"]) and "width" not in row["note"]


def test_every_study_targets_its_claims_table_compiled_from_its_evaluations():
    study = Study(load_config(REPO / "config" / "config.yaml", REPO / "config" / "smoke.yaml"))
    assert study.claims_targets() == ["results/smoke/tables/claims.csv", "results/smoke/tables/claims.md"]
    assert set(study.claims_targets()) <= set(study.all_targets())
    assert study.claims_inputs() == {"nll": study.table_inputs("nll"), "knn": study.knn_targets(),
                                     "augmentation": study.augmentation_targets()}


OMNIGLOT_SPLIT = "STAND-IN built from raw Omniglot (not the paper's chardata.mat): ink=1, area-downsampled 105->28"


def test_rows_of_three_seeds_and_of_one_seed_pair_only_the_seeds_both_sides_have(tmp_path):
    """The planned reduced study: the MNIST VAE's exemplar and VampPrior on seeds 0-2 (the VampPrior's seed 2 is
    missing here), the HVAE on seed 0, and the Omniglot stand-in on seed 0."""
    ll = {("exemplar", 0): 84.0, ("exemplar", 1): 84.4, ("exemplar", 2): 83.0, ("vampprior", 0): 85.0,
          ("vampprior", 1): 84.2, ("gaussian", 0): 87.0, ("gaussian", 1): 86.0, ("gaussian", 2): 86.5}
    nlls = [nll("mnist", prior, seed, value) for (prior, seed), value in ll.items()]
    nlls += [nll("mnist", "exemplar", 0, 81.0, "hvae"), nll("mnist", "vampprior", 0, 81.4, "hvae"),
             nll("mnist", "gaussian", 0, 82.0, "hvae")]
    nlls += [{**nll("omniglot_raw28", prior, 0, value), "data": {"split": OMNIGLOT_SPLIT}}
             for prior, value in (("exemplar", 100.0), ("vampprior", 101.5), ("gaussian", 103.0))]
    claims = compile_claims({"nll": write(tmp_path, "nll", nlls)}, REPORTED, "reduced")
    rows = claims.set_index(["claim", "data_used", "architecture"])
    vae = rows.loc[(NLL.text, "mnist", "vae")]  # seed 2 has no VampPrior: left out, and the note says so
    assert vae["ours_by_seed"] == "seed0: +1.00; seed1: -0.20" and vae["n_seeds"] == 2 and vae["verdict"] == "mixed"
    assert vae["note"] == "seed2 left out: not every compared result has it (seeds are paired)"
    gaussian = rows.loc[(VAMP_OVER_GAUSSIAN.text, "mnist", "vae")]
    assert gaussian["ours_by_seed"] == "seed0: +2.00; seed1: +1.80" and gaussian["ours_mean"] == pytest.approx(1.9)
    assert gaussian["note"] == "seed2 left out: not every compared result has it (seeds are paired)"
    hvae = rows.loc[(NLL.text, "mnist", "hvae")]
    assert (hvae["ours_by_seed"], hvae["n_seeds"], hvae["note"]) == ("seed0: +0.40", 1, "")
    assert hvae["paper_effect"] == pytest.approx(-81.22 + 81.56)  # beside the paper's HVAE row
    stand_in = rows.loc[(NLL.text, "omniglot_raw28", "vae")]
    assert (stand_in["dataset"], stand_in["ours_by_seed"], stand_in["verdict"]) == ("omniglot", "seed0: +1.50",
                                                                                     "holds on every seed")
    assert stand_in["paper_effect"] == pytest.approx(-105.22 + 106.78)
    assert stand_in["note"] == (f"{OMNIGLOT_SPLIT}; the paper's effect is on its own data: only the sign, the order "
                                "of the priors, compares")
    assert len(claims) == 6 and set(claims["n_seeds"]) == {2, 1}
    markdown = to_markdown(claims, "reduced")
    assert "| mixed (2 seeds, REDUCED BUDGET) |" in markdown and markdown.count("(1 seed, REDUCED BUDGET)") == 4
