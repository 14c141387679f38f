"""Reported-vs-reproduced tables: matching, statistics, status, provenance and labelling, on hand-made results."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evae import checksums
from evae.report.tables import PAPER_SEEDS, compile_table, segments, sigma, status, to_markdown
from evae.study import KIND, NOTICE
from tests.conftest import REPO

REPORTED = REPO / "resources" / "paper" / "reported.csv"


def write_results(tmp_path, kind, results):
    paths = []
    for i, r in enumerate(results):
        path = tmp_path / f"{kind}{i}.json"
        checksums.write_json(path, r)  # as the evaluations write them: recorded in the folder's checksums
        paths.append(path)
    return paths


def nll_result(dataset, arch, prior, seed, nll, sem=0.3, epochs=100, samples=5000, **run):
    return {"run": run_record(dataset, arch, prior, seed, epochs, **run), "nll": nll, "nll_stderr": sem,
            "samples": samples}


def run_record(dataset, arch, prior, seed, epochs=100, best_epoch=None, segments=None):
    config = {"dataset": dataset, "architecture": arch, "prior": prior, "seed": seed, "exemplar_mode": "exact",
              "exemplar_subset": 0.5, "exemplar_k": 10}
    return {"config": config, "config_digest": f"hash{seed}", "epochs_trained": epochs,
            "best_epoch": epochs if best_epoch is None else best_epoch, "segments": segments}


def segment(first, last, commit="a" * 40, host="cpu-box", device="Intel Xeon"):
    return {"first_epoch": first, "last_epoch": last, "git_commit": commit, "host": host, "device_name": device}


def row_of(table, key):
    return table.set_index(["dataset", "architecture", "prior"]).loc[key]


def test_reported_copy_matches_the_paper_for_a_few_known_values():
    df = pd.read_csv(REPORTED)
    row = df[(df.table == "nll") & (df.dataset == "mnist") & (df.architecture == "vae") & (df.prior == "exemplar")]
    assert (row["value"].item(), row["std"].item()) == (-82.09, 0.18)
    assert len(df[df.table == "nll"]) == 41 and len(df[df.table == "knn"]) == 6 and len(df[df.table == "augmentation"]) == 6


def test_nll_rows_carry_mean_std_difference_and_status(tmp_path):
    results = [
        nll_result("mnist", "vae", "exemplar", 1, 82.20, epochs=1000, best_epoch=950),  # seeds in any order
        nll_result("mnist", "vae", "exemplar", 0, 82.00, epochs=900, best_epoch=850),
        nll_result("mnist", "vae", "gaussian", 0, 90.0),
        nll_result("mnist", "vae", "gaussian", 1, 90.2),
    ]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "paper")
    row = row_of(table, ("mnist", "vae", "exemplar"))
    assert row["reproduced_mean"] == pytest.approx(-82.10)  # log-likelihood = -NLL
    assert row["reproduced_std"] == pytest.approx(math.sqrt(0.02))  # sample std of -82.0, -82.2
    assert row["difference"] == pytest.approx(-82.10 - (-82.09))
    assert row["sigma"] == pytest.approx(math.sqrt(0.18**2 / 5 + 0.02 / 2))  # 0.128: the two means' standard error
    assert row["status"] == "within 2 sigma (2 seeds)" and row["n_seeds"] == 2
    assert row["epochs_trained"] == "seed0: 900; seed1: 1000" and row["best_epoch"] == "seed0: 850; seed1: 950"
    assert row["importance_samples"] == "5000" and row["segments"] == ""  # segments not recorded
    assert row["config_hash"] == "hash0,hash1" and row["profile"] == "paper"
    gaussian = row_of(table, ("mnist", "vae", "gaussian"))
    assert gaussian["status"] == "off (2 seeds)"  # -90.1 against -84.45 +- 0.12
    assert gaussian["epochs_trained"] == "100" and gaussian["best_epoch"] == "100"  # one number when all runs agree
    assert row["exemplar_training"] == "exact, M=0.5N" and gaussian["exemplar_training"] == ""
    assert len(table) == 41  # every reported row, reproduced or not
    assert (table["status"] == "not run").sum() == 39


@pytest.mark.parametrize(
    "reported_std, reproduced_std, n, expected",
    [
        (0.18, math.sqrt(0.02), 2, math.sqrt(0.18**2 / 5 + 0.02 / 2)),  # two means, each over its seeds
        (0.10, 0.20, 5, math.sqrt(0.01 / 5 + 0.04 / 5)),
        (0.12, math.nan, 1, 0.12 * math.sqrt(1 + 1 / 5)),  # one seed: the paper's spread stands in for ours
        (math.nan, 0.30, 3, math.sqrt(0.09 / 5 + 0.09 / 3)),  # no reported std: ours stands in for the paper's
        (math.nan, math.nan, 1, math.nan),  # neither: nothing to compare with
        (0.12, math.nan, math.nan, math.nan),  # not reproduced
    ],
)
def test_sigma_is_the_standard_error_of_the_difference_of_two_means(reported_std, reproduced_std, n, expected):
    assert PAPER_SEEDS == 5
    assert sigma(reported_std, reproduced_std, n) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    "difference, se, n, reported_std, expected",
    [
        (0.25, 0.13, PAPER_SEEDS, 0.1, "within 2 sigma"),
        (-0.27, 0.13, PAPER_SEEDS, 0.1, "off"),
        (0.25, 0.13, 1, 0.1, "within 2 sigma (1 seed)"),
        (0.30, 0.13, 3, 0.1, "off (3 seeds)"),
        (0.30, 0.13, 3, math.nan, "off (3 seeds; paper gives no std)"),
        (0.30, 0.13, 5, math.nan, "off (paper gives no std)"),
        (1.24, math.nan, 1, math.nan, "no spread to compare (1 seed; paper gives no std)"),
    ],
)
def test_status_says_what_the_comparison_rests_on(difference, se, n, reported_std, expected):
    assert status(-84.45, -84.45 + difference, difference, se, n, reported_std) == expected


def test_status_of_rows_not_run_or_not_reported():
    assert status(-84.45, math.nan, math.nan, math.nan, math.nan, 0.12) == "not run"
    assert status(math.nan, 5.1, math.nan, math.nan, 1, math.nan) == "no reported value"


def test_single_seed_is_compared_with_the_papers_spread_not_its_standard_error(tmp_path):
    # one seed: sigma = 0.12 sqrt(1.2) = 0.131, 2 sigma = 0.263, whatever the standard error over test images
    key = ("mnist", "vae", "gaussian")

    def status_of(nll, sem):
        table = compile_table("nll", write_results(tmp_path, "n", [nll_result(*key, 0, nll, sem=sem)]), REPORTED, "paper")
        return row_of(table, key)["status"]

    assert status_of(84.70, sem=0.01) == "within 2 sigma (1 seed)"  # difference -0.25
    assert status_of(84.75, sem=5.0) == "off (1 seed)"  # difference -0.30: a large sem does not widen sigma


def test_segments_are_counted_and_a_note_names_the_commits_hosts_and_devices_that_differ():
    one_place = [segment(1, 300), segment(301, 700)]
    moved = [segment(1, 300), segment(301, None, host="gpu-box"),  # killed before its first epoch: not counted
             segment(301, 900, commit="b" * 40 + "+dirty", host="gpu-box", device="NVIDIA A100")]
    assert segments(None) == (None, "")
    assert segments(one_place) == (2, "")
    assert segments(moved) == (2, f"commits {'a' * 12}, {'b' * 12}+dirty; hosts cpu-box, gpu-box; "
                                  "devices Intel Xeon, NVIDIA A100")


def test_rows_carry_each_runs_segments_and_best_epoch(tmp_path):
    moved = [segment(1, 300), segment(301, 900, commit="b" * 40, host="gpu-box")]
    results = [nll_result("mnist", "vae", "exemplar", 0, 82.0, epochs=900, best_epoch=850, segments=moved),
               nll_result("mnist", "vae", "exemplar", 1, 82.2, epochs=900, best_epoch=850, segments=[segment(1, 900)])]
    row = row_of(compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "paper"),
                 ("mnist", "vae", "exemplar"))
    assert (row["epochs_trained"], row["best_epoch"], row["segments"]) == ("900", "850", "seed0: 2; seed1: 1")
    assert row["note"] == f"seed0 trained in 2 segments: commits {'a' * 12}, {'b' * 12}; hosts cpu-box, gpu-box"


def test_stand_in_datasets_are_compared_with_the_paper_column_and_labelled(tmp_path):
    results = [nll_result("mnist_subset", "hvae", "vampprior", 0, 120.0, samples=100)]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "smoke")
    row = row_of(table, ("mnist", "hvae", "vampprior"))
    assert (row["data_used"], row["profile"], row["reported_mean"]) == ("mnist_subset", "smoke", -81.56)
    markdown = to_markdown(table, "nll", "smoke")
    assert "SMOKE" in markdown.splitlines()[0] and "not comparable with the paper's" in markdown.splitlines()[2]
    line = next(line for line in markdown.splitlines() if "mnist_subset" in line)
    assert "SMOKE" in line and "-120.00" in line and "-81.56 +- 0.09" in line


def test_knn_rows_take_the_latent_error_at_the_chosen_k(tmp_path):
    results = [
        {"run": run_record("mnist", "vae", "exemplar", s), "latent": {"k": 3, "test_error": err}}
        for s, err in ((0, 1.10), (1, 1.20))
    ]
    table = compile_table("knn", write_results(tmp_path, "knn", results), REPORTED, "reduced")
    row = row_of(table, ("mnist", "vae", "exemplar"))
    assert row["reproduced_mean"] == pytest.approx(1.15) and row["status"] == "within 2 sigma (2 seeds)"
    assert row["profile"] == "reduced" and len(table) == 6
    assert "REDUCED BUDGET" in to_markdown(table, "knn", "reduced").splitlines()[0]


def test_every_profile_has_a_notice_and_the_full_protocol_says_how_it_differs_from_the_papers(tmp_path):
    assert list(NOTICE) == list(KIND) and NOTICE["paper"] is None
    table = compile_table("nll", write_results(tmp_path, "nll", [nll_result("mnist", "vae", "exemplar", 0, 82.0)]),
                          REPORTED, "mnist_full")
    lines = to_markdown(table, "nll", "mnist_full").splitlines()
    assert lines[0] == f"# nll table: reported vs reproduced ({KIND['mnist_full']})"
    assert "the paper's protocol, except that the exemplar prior trains in kNN mode (k = 10) instead of exact mode " \
           "with M = N/2" in lines[2] and "not comparable" not in lines[2]
    row = next(line for line in lines if "| exemplar |" in line and "-82.00" in line)
    assert "within 2 sigma (1 seed)" in row and KIND["mnist_full"] in row  # fewer seeds than the paper's: said
    paper = to_markdown(compile_table("nll", [], REPORTED, "paper"), "nll", "paper").splitlines()
    assert paper[0] == "# nll table: reported vs reproduced (paper protocol)" and paper[2].startswith("| dataset |")


def test_augmentation_rows_by_width_and_fashion_mnist_of_unknown_width(tmp_path):
    def result(dataset, hidden, augmented, seed, err):
        return {"dataset": dataset, "classifier": {"hidden": hidden, "epochs": 100}, "seed": seed,
                "augmentation": {"noise_scale": 0.1} if augmented else None, "test_error": err,
                "run": run_record(dataset, "vae", "exemplar", 0) if augmented else None}

    results = [result("mnist", 1024, False, 0, 1.25), result("mnist", 1024, True, 0, 0.80),
               result("fashion_mnist", 1024, True, 0, 8.10)]
    table = compile_table("augmentation", write_results(tmp_path, "aug", results), REPORTED, "paper")
    rows = table.set_index(["dataset", "architecture", "prior"])
    assert rows.loc[("mnist", "mlp_2x1024", "none"), "reproduced_mean"] == 1.25
    assert rows.loc[("mnist", "mlp_2x1024", "exemplar"), "reported_mean"] == 0.77
    assert rows.loc[("mnist", "mlp_2x1024", "exemplar"), "best_epoch"] == ""  # a classifier has none
    assert rows.loc[("mnist", "mlp_2x8192", "exemplar"), "status"] == "not run"
    fashion = rows.loc[("fashion_mnist", "mlp_2x1024", "exemplar")]
    assert fashion["reported_mean"] == 8.16 and "compared with width mlp_2x1024" in fashion["note"]
    assert fashion["status"] == "no spread to compare (1 seed; paper gives no std)"


def test_colour_datasets_get_a_bits_per_dimension_table_named_after_their_paper_column(tmp_path):
    result = {"run": run_record("celeba_standin", "convvae64", "exemplar", 0), "nll": 5000.0,
              "nll_bits_per_dim": 5000.0 / (3 * 64 * 64 * math.log(2)), "nll_stderr": 30.0, "samples": 100}
    table = compile_table("nll_bits", write_results(tmp_path, "bits", [result]), REPORTED, "smoke", name="celeba")
    row = row_of(table, ("celeba", "convvae64", "exemplar"))
    assert row["reproduced_mean"] == pytest.approx(result["nll_bits_per_dim"]) and row["data_used"] == "celeba_standin"
    assert row["status"] == "no reported value (STAND-IN data)" and table["metric"].tolist() == ["test_nll_bits_per_dim"]
    assert row["note"] == "STAND-IN (synthetic faces, not CelebA)"  # the registry's text: this result records no data
    assert to_markdown(table, "celeba", "smoke").startswith("# celeba table: reported vs reproduced (SMOKE)")


def test_a_damaged_result_is_refused_and_no_table_is_compiled(tmp_path):
    paths = write_results(tmp_path, "nll", [nll_result("mnist", "vae", "gaussian", 0, 89.0)])
    paths[0].write_text(paths[0].read_text().replace("89.0", "79.0"))
    with pytest.raises(checksums.DamagedFileError, match=rf"{paths[0]} is damaged"):
        compile_table("nll", paths, REPORTED, "paper")


OMNIGLOT_SPLIT = ("STAND-IN built from raw Omniglot (not the paper's chardata.mat): ink=1, area-downsampled 105->28, "
                  "drawings 1-15 train pool (shuffled with seed 0: 23,000 train / 1,345 val), drawings 16-20 test")


def test_rows_of_a_study_of_groups_each_have_their_own_seeds(tmp_path):
    """Three seeds of the MNIST VAE, one of the HVAE: each row's mean and std over the seeds it has."""
    results = [nll_result("mnist", "vae", "exemplar", s, v) for s, v in ((0, 82.0), (1, 82.3), (2, 82.6))]
    results += [nll_result("mnist", "hvae", "exemplar", 0, 81.5)]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "reduced")
    vae, hvae = row_of(table, ("mnist", "vae", "exemplar")), row_of(table, ("mnist", "hvae", "exemplar"))
    assert (vae["n_seeds"], vae["reproduced_mean"]) == (3, pytest.approx(-82.3))
    assert vae["reproduced_std"] == pytest.approx(0.3) and vae["status"] == "within 2 sigma (3 seeds)"
    assert vae["sigma"] == pytest.approx(math.sqrt(0.18**2 / 5 + 0.09 / 3))  # 0.19: 0.21 off is within 2 sigma
    assert (hvae["n_seeds"], hvae["reproduced_mean"], hvae["reported_mean"]) == (1, -81.5, -81.22)
    assert math.isnan(hvae["reproduced_std"]) and hvae["status"] == "off (1 seed)"  # 0.28 > 2 x 0.05 sqrt(1.2)
    markdown = to_markdown(table, "nll", "reduced")
    assert "| mnist | vae | exemplar | -82.09 +- 0.18 | -82.30 +- 0.30 | 3 |" in markdown
    assert "| mnist | hvae | exemplar | -81.22 +- 0.05 | -81.50 | 1 |" in markdown


def test_stand_in_rows_sit_beside_the_papers_column_but_are_not_compared_with_it(tmp_path):
    data = {"name": "omniglot_raw28", "split": OMNIGLOT_SPLIT, "labels": "character index (0..1622)"}
    results = [{**nll_result("omniglot_raw28", "vae", prior, 0, nll), "data": data}
               for prior, nll in (("gaussian", 108.34), ("vampprior", 95.0), ("exemplar", 120.0))]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "reduced")
    assert len(table) == 41  # the stand-in's rows are the paper's Omniglot rows, not rows of their own
    for prior, value in (("gaussian", -108.34), ("vampprior", -95.0), ("exemplar", -120.0)):
        row = row_of(table, ("omniglot", "vae", prior))
        assert (row["data_used"], row["reproduced_mean"], row["n_seeds"]) == ("omniglot_raw28", value, 1)
        assert row["status"] == "STAND-IN data: not compared with the paper's value (1 seed)"
        assert math.isnan(row["difference"]) and math.isnan(row["sigma"]) and row["note"] == OMNIGLOT_SPLIT
    # the same Gaussian value as the paper's would read "within 2 sigma", a far one "off": neither is said
    assert not table["status"].str.contains("within|off").loc[table["data_used"] == "omniglot_raw28"].any()
    assert row_of(table, ("omniglot", "hvae", "gaussian"))["status"] == "not run"
    markdown = to_markdown(table, "nll", "reduced")
    line = next(line for line in markdown.splitlines() if "| omniglot | vae | gaussian |" in line)
    assert "-108.34 +- 0.06 | -108.34 | 1 |  |  | STAND-IN data" in line and "STAND-IN built from raw Omniglot" in line
    assert "STAND-IN rows (see their note) are of data that only stand in for the paper's" in markdown
    assert "STAND-IN rows" not in to_markdown(compile_table("nll", [], REPORTED, "reduced"), "nll", "reduced")


def test_a_stand_in_and_the_papers_own_data_are_never_averaged_together(tmp_path):
    results = [nll_result("omniglot", "vae", "exemplar", 0, 105.2),
               {**nll_result("omniglot_raw28", "vae", "exemplar", 0, 99.0), "data": {"split": OMNIGLOT_SPLIT}}]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "paper")
    rows = table[(table["dataset"] == "omniglot") & (table["architecture"] == "vae") & (table["prior"] == "exemplar")]
    assert rows.set_index("data_used")["reproduced_mean"].to_dict() == {"omniglot": -105.2, "omniglot_raw28": -99.0}
    assert rows.set_index("data_used")["status"].to_dict() == {
        "omniglot": "within 2 sigma (1 seed)",
        "omniglot_raw28": "STAND-IN data: not compared with the paper's value (1 seed)"}


def test_knn_rows_name_the_labels_and_a_stand_in_without_a_paper_value_reads_not_reported(tmp_path):
    data = {"name": "omniglot_raw28", "split": OMNIGLOT_SPLIT, "labels": "character index (0..1622)"}
    results = [{"run": run_record("omniglot_raw28", "vae", "exemplar", 0), "latent": {"k": 1, "test_error": 60.0},
                "labels": "character index (0..1622)", "classes": 1623, "data": data},
               {"run": run_record("mnist", "vae", "exemplar", 0), "latent": {"k": 3, "test_error": 1.1},
                "labels": "class index (0..9)", "classes": 10}]
    table = compile_table("knn", write_results(tmp_path, "knn", results), REPORTED, "reduced")
    omniglot = row_of(table, ("omniglot", "vae", "exemplar"))
    assert math.isnan(omniglot["reported_mean"]) and omniglot["status"] == "no reported value (STAND-IN data)"
    assert omniglot["note"] == f"kNN labels: character index (0..1622); {OMNIGLOT_SPLIT}"
    mnist = row_of(table, ("mnist", "vae", "exemplar"))
    assert mnist["note"] == "encoder means; k not stated; kNN labels: class index (0..9)"


def test_rows_the_paper_does_not_report_follow_its_rows_in_the_studys_order(tmp_path):
    priors = ["gaussian", "vampprior", "exemplar"]  # not sorted by name: the order the study lists them in
    results = [{"run": run_record("omniglot_raw28", "vae", p, 0), "latent": {"k": 1, "test_error": 60.0 + i}}
               for i, p in enumerate(priors)]
    table = compile_table("knn", write_results(tmp_path, "knn", results), REPORTED, "reduced")
    assert list(table["prior"].iloc[-3:]) == priors and table["reported_mean"].iloc[:-3].notna().all()
