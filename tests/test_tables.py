"""Reported-vs-reproduced tables: matching, statistics, status and labelling, on hand-made results."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evae import checksums
from evae.report.tables import compile_table, to_markdown
from tests.conftest import REPO

REPORTED = REPO / "resources" / "paper" / "reported.csv"


def write_results(tmp_path, kind, results):
    paths = []
    for i, r in enumerate(results):
        path = tmp_path / f"{kind}{i}.json"
        checksums.write_json(path, r)  # as the evaluations write them: recorded in the folder's checksums
        paths.append(path)
    return paths


def nll_result(dataset, arch, prior, seed, nll, sem=0.3, epochs=100, samples=5000):
    return {"run": run_record(dataset, arch, prior, seed, epochs), "nll": nll, "nll_stderr": sem, "samples": samples}


def run_record(dataset, arch, prior, seed, epochs=100):
    config = {"dataset": dataset, "architecture": arch, "prior": prior, "seed": seed, "exemplar_mode": "exact",
              "exemplar_subset": 0.5, "exemplar_k": 10}
    return {"config": config, "config_digest": f"hash{seed}", "epochs_trained": epochs}


def test_reported_copy_matches_the_paper_for_a_few_known_values():
    df = pd.read_csv(REPORTED)
    row = df[(df.table == "nll") & (df.dataset == "mnist") & (df.architecture == "vae") & (df.prior == "exemplar")]
    assert (row["value"].item(), row["std"].item()) == (-82.09, 0.18)
    assert len(df[df.table == "nll"]) == 41 and len(df[df.table == "knn"]) == 6 and len(df[df.table == "augmentation"]) == 6


def test_nll_rows_carry_mean_std_difference_and_status(tmp_path):
    results = [
        nll_result("mnist", "vae", "exemplar", 0, 82.00, epochs=900),
        nll_result("mnist", "vae", "exemplar", 1, 82.20, epochs=1000),
        nll_result("mnist", "vae", "gaussian", 0, 90.0),
        nll_result("mnist", "vae", "gaussian", 1, 90.2),
    ]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "paper")
    row = table.set_index(["dataset", "architecture", "prior"]).loc[("mnist", "vae", "exemplar")]
    assert row["reproduced_mean"] == pytest.approx(-82.10)  # log-likelihood = -NLL
    assert row["reproduced_std"] == pytest.approx(math.sqrt(0.02))  # sample std of -82.0, -82.2
    assert row["difference"] == pytest.approx(-82.10 - (-82.09))
    assert row["status"] == "within 2 sigma" and row["n_seeds"] == 2
    assert row["epochs_trained"] == "900-1000" and row["importance_samples"] == "5000"
    assert row["config_hash"] == "hash0,hash1" and row["profile"] == "paper"
    gaussian = table.set_index(["dataset", "architecture", "prior"]).loc[("mnist", "vae", "gaussian")]
    assert gaussian["status"] == "off"  # -90.1 against -84.45 +- 0.12
    assert row["exemplar_training"] == "exact, M=0.5N" and gaussian["exemplar_training"] == ""
    assert len(table) == 41  # every reported row, reproduced or not
    assert (table["status"] == "not run").sum() == 39


def test_single_seed_uses_its_standard_error(tmp_path):
    # |difference| = 0.5; sigma = sqrt(0.12^2 + 0.3^2) = 0.323 -> within 2 sigma; with sem 0.1 -> off
    near = [nll_result("mnist", "vae", "gaussian", 0, 84.95, sem=0.3)]
    far = [nll_result("mnist", "vae", "gaussian", 0, 84.95, sem=0.1)]
    key = ("mnist", "vae", "gaussian")
    status = lambda res: compile_table("nll", write_results(tmp_path, "n", res), REPORTED, "paper").set_index(  # noqa: E731
        ["dataset", "architecture", "prior"]).loc[key, "status"]
    assert status(near) == "within 2 sigma"
    assert status(far) == "off"


def test_stand_in_datasets_are_compared_with_the_paper_column_and_labelled(tmp_path):
    results = [nll_result("mnist_subset", "hvae", "vampprior", 0, 120.0, samples=100)]
    table = compile_table("nll", write_results(tmp_path, "nll", results), REPORTED, "smoke")
    row = table.set_index(["dataset", "architecture", "prior"]).loc[("mnist", "hvae", "vampprior")]
    assert (row["data_used"], row["profile"], row["reported_mean"]) == ("mnist_subset", "smoke", -81.56)
    markdown = to_markdown(table, "nll", "smoke", "SMOKE")
    assert "SMOKE" in markdown.splitlines()[0]
    line = next(line for line in markdown.splitlines() if "mnist_subset" in line)
    assert "SMOKE" in line and "-120.00" in line and "-81.56 +- 0.09" in line


def test_knn_rows_take_the_latent_error_at_the_chosen_k(tmp_path):
    results = [
        {"run": run_record("mnist", "vae", "exemplar", s), "latent": {"k": 3, "test_error": err}}
        for s, err in ((0, 1.10), (1, 1.20))
    ]
    table = compile_table("knn", write_results(tmp_path, "knn", results), REPORTED, "reduced")
    row = table.set_index(["dataset", "architecture", "prior"]).loc[("mnist", "vae", "exemplar")]
    assert row["reproduced_mean"] == pytest.approx(1.15) and row["status"] == "within 2 sigma"
    assert row["profile"] == "reduced" and len(table) == 6
    assert "REDUCED BUDGET" in to_markdown(table, "knn", "reduced", "REDUCED BUDGET").splitlines()[0]


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
    assert rows.loc[("mnist", "mlp_2x8192", "exemplar"), "status"] == "not run"
    fashion = rows.loc[("fashion_mnist", "mlp_2x1024", "exemplar")]
    assert fashion["reported_mean"] == 8.16 and "compared with width mlp_2x1024" in fashion["note"]


def test_colour_datasets_get_a_bits_per_dimension_table_named_after_their_paper_column(tmp_path):
    result = {"run": run_record("celeba_standin", "convvae64", "exemplar", 0), "nll": 5000.0,
              "nll_bits_per_dim": 5000.0 / (3 * 64 * 64 * math.log(2)), "nll_stderr": 30.0, "samples": 100}
    table = compile_table("nll_bits", write_results(tmp_path, "bits", [result]), REPORTED, "smoke", name="celeba")
    row = table.set_index(["dataset", "architecture", "prior"]).loc[("celeba", "convvae64", "exemplar")]
    assert row["reproduced_mean"] == pytest.approx(result["nll_bits_per_dim"]) and row["data_used"] == "celeba_standin"
    assert row["status"] == "no reported value" and table["metric"].tolist() == ["test_nll_bits_per_dim"]
    assert to_markdown(table, "celeba", "smoke", "SMOKE").startswith("# celeba table: reported vs reproduced (SMOKE)")


def test_a_damaged_result_is_refused_and_no_table_is_compiled(tmp_path):
    paths = write_results(tmp_path, "nll", [nll_result("mnist", "vae", "gaussian", 0, 89.0)])
    paths[0].write_text(paths[0].read_text().replace("89.0", "79.0"))
    with pytest.raises(checksums.DamagedFileError, match=rf"{paths[0]} is damaged"):
        compile_table("nll", paths, REPORTED, "paper")
