"""The full-protocol study of the paper's MNIST MLP row (results/mnist_full/): the paper's settings, and every
run either finished without resume state in git or resumable from a fresh clone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evae.report import claims
from evae.report.tables import compile_table, to_markdown
from evae.runs import read_metrics, read_summary
from evae.status import run_progress
from evae.study import Study, load_config
from tests.conftest import REPO

REPORTED = REPO / "resources" / "paper" / "reported.csv"


def study(name: str) -> Study:
    return Study(load_config(REPO / "config" / "config.yaml", *([REPO / "config" / f"{name}.yaml"] if name else [])))


def test_the_profile_is_the_papers_protocol_with_the_exemplar_trained_in_knn_mode():
    full, paper = study("mnist_full"), study("")
    assert full.root == "results/mnist_full" and {(r.dataset, r.architecture, r.seed) for r in full.runs} == {("mnist", "vae", 0)}
    assert {r.prior for r in full.runs} == {"gaussian", "vampprior", "exemplar"}
    for run in full.runs:
        cfg = full.train_config(run.dataset, run.architecture, run.prior, run.seed)
        ours = paper.train_config(run.dataset, run.architecture, run.prior, run.seed)
        assert cfg.exemplar_mode == "knn" and cfg.exemplar_k == 10
        assert cfg.replace(exemplar_mode=ours.exemplar_mode).digest() == ours.digest()  # max_epochs included
    assert (full.config["nll"]["samples"], full.config["nll"]["exemplar_bound"]) == (5000, 1e-3)
    assert full.config["nll"]["max_images"] is None and full.config["augmentation"]["hidden"] == [1024]


def test_each_run_is_finished_without_resume_state_or_resumable_from_git():
    full = study("mnist_full")
    tracked = set(subprocess.run(["git", "ls-files", full.root], cwd=REPO, capture_output=True, text=True).stdout.split())
    if not tracked:
        pytest.skip("not a git checkout holding the mnist_full study")
    for run in full.runs:
        folder = full.run_dir(run)
        cfg = full.train_config(run.dataset, run.architecture, run.prior, run.seed)
        if not any(p.startswith(f"{folder}/") for p in tracked):
            continue  # not started when it was committed
        progress = run_progress(REPO / folder, cfg)  # verifies the checkpoint or summary against its checksum record
        if progress.finished:
            assert f"{folder}/checkpoint.pt" not in tracked, f"{folder} has finished: git rm --cached its checkpoint.pt"
            summary = read_summary(REPO / folder)
            assert summary["segments"] and summary["segments"][-1]["last_epoch"] == summary["epochs_trained"]
        else:
            assert {f"{folder}/checkpoint.pt", f"{folder}/best.pt", f"{folder}/checksums.json"} <= tracked, folder
            assert read_metrics(REPO / folder)[-1]["epoch"] == progress.epoch > 0


def finished_study() -> Study:
    """The full-protocol study once its tables are committed (skips the test before)."""
    full = study("mnist_full")
    if not (REPO / full.root / "tables" / "claims.csv").exists():
        pytest.skip("the full-protocol study has no tables yet")
    return full


@pytest.mark.parametrize("kind", ["nll", "knn", "augmentation"])
def test_committed_tables_are_what_the_evaluation_jsons_compile_to(kind):
    full = finished_study()
    recompiled = compile_table(kind, [REPO / t for t in full.table_inputs(kind)], REPORTED, full.profile)
    assert recompiled.to_csv(index=False) == (REPO / full.root / "tables" / f"{kind}.csv").read_text()
    assert to_markdown(recompiled, kind, full.profile) == (REPO / full.root / "tables" / f"{kind}.md").read_text()
    ours = recompiled[recompiled["status"] != "not run"]
    assert set(ours["profile"]) == {"mnist_full"} and set(ours["dataset"]) == {"mnist"}
    if kind != "augmentation":  # each row names the epochs its run trained and where it stopped early
        for _, row in ours.iterrows():
            summary = read_summary(REPO / full.run_dir(next(r for r in full.runs if r.prior == row["prior"])))
            assert (int(row["epochs_trained"]), int(row["best_epoch"])) == (summary["epochs_trained"],
                                                                            summary["best_epoch"])
            assert summary["stopped"].startswith("early stopping") and summary["epochs_trained"] < 2000


def test_committed_claims_are_what_the_evaluation_jsons_compile_to():
    full = finished_study()
    inputs = {kind: [REPO / p for p in paths] for kind, paths in full.claims_inputs().items()}
    recompiled = claims.compile_claims(inputs, REPORTED, full.profile)
    assert recompiled.to_csv(index=False) == (REPO / full.root / "tables" / "claims.csv").read_text()
    assert claims.to_markdown(recompiled, full.profile) == (REPO / full.root / "tables" / "claims.md").read_text()
    assert len(recompiled) == len(claims.CLAIMS) and (recompiled["verdict"] != "not testable").all()


def test_fresh_clone_finds_the_finished_study_up_to_date(tmp_path):
    full = finished_study()
    clone = tmp_path / "clone"
    if subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], capture_output=True).returncode != 0:
        pytest.skip(f"cannot clone {REPO}")
    if not (clone / full.root / "tables" / "claims.csv").exists():
        pytest.skip("the checkout's HEAD holds no finished full-protocol study yet")
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run([snakemake, "-n", "--configfile", "config/mnist_full.yaml"], cwd=clone, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
