"""The full-protocol study of the paper's MNIST MLP row (results/mnist_full/): the paper's settings, and every
run either finished without resume state in git or resumable from a fresh clone."""

from __future__ import annotations

import subprocess

import pytest

from evae.runs import read_metrics, read_summary
from evae.status import run_progress
from evae.study import Study, load_config
from tests.conftest import REPO


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
