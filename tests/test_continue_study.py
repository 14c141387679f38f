"""Continuing a finished study with a raised max_epochs, in a profile whose results are committed (its evaluations'
inputs are marked ``ancient``): every run resumes from its checkpoint and every evaluation, table and figure is
redone from the continued runs."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evae.study import Study, load_config
from tests.test_pipeline import make_workdir, snakemake

# A small committed study on the embedded subset: two priors of the MLP VAE, every kind of job once
STUDY = {
    "committed": True,
    "models": {"datasets": ["mnist_subset"], "architectures": ["vae"], "priors": ["gaussian", "exemplar"]},
    "train": {"max_epochs": 1, "warmup_epochs": 1, "max_train_images": 500, "max_val_images": 200},
    "nll": {"samples": 10, "exemplar_bound": None, "max_images": 5},
    "knn": {"datasets": ["mnist_subset"], "architectures": ["vae"], "ks": [1, 3]},
    "augmentation": {"datasets": ["mnist_subset"], "hidden": [16], "epochs": 1, "seeds": [0],
                     "exemplar_model": {"architecture": "vae", "seed": 0}},
    "figures": {"datasets": ["mnist_subset"], "architectures": ["vae"], "seed": 0, "tsne_points": 100,
                "prior_comparison_ks": [1, 2]},
}
CONFIGS = ("config/smoke.yaml", "config/continue.yaml")
# What the README tells a reader to run after raising max_epochs
CONTINUE = ("--forceall",)


def run_study(workdir: Path, max_epochs: int, *extra: str) -> None:
    (workdir / CONFIGS[1]).write_text(yaml.safe_dump({**STUDY, "train": {**STUDY["train"], "max_epochs": max_epochs}}))
    snakemake(workdir, "--cores", "2", "--configfile", *CONFIGS, *extra)


@pytest.mark.slow
def test_raising_max_epochs_continues_every_run_and_redoes_what_depends_on_it(tmp_path):
    workdir = make_workdir(tmp_path)
    run_study(workdir, 1)
    study = Study(load_config(*(workdir / c for c in ("config/config.yaml", *CONFIGS))))
    outputs = [workdir / p for p in study.nll_targets() + study.knn_targets() + study.all_targets()]
    first_rows = {run: pd.read_csv(workdir / study.run_dir(run) / "metrics.csv") for run in study.runs}
    finished = time.time()
    time.sleep(1)  # modification times after the first study are later than this

    run_study(workdir, 2, *CONTINUE)

    for run in study.runs:
        folder = workdir / study.run_dir(run)
        metrics = pd.read_csv(folder / "metrics.csv")
        assert list(metrics["epoch"]) == [1, 2]
        pd.testing.assert_frame_equal(metrics.iloc[:1], first_rows[run])  # epoch 1 kept: continued, not redone
        log = (workdir / f"logs/smoke/train/{run.key}.log").read_text()
        assert "resuming after epoch 1" in log, log
        for what in ("nll", "knn"):
            result = json.loads((workdir / study.eval_path(run, what)).read_text())
            assert result["run"]["epochs_trained"] == 2, (run.key, what)
    exemplar = workdir / study.augmentation_path("mnist_subset", 16, "exemplar", 0)
    assert json.loads(exemplar.read_text())["run"]["epochs_trained"] == 2
    for table in ("nll", "knn"):
        rows = pd.read_csv(workdir / study.root / "tables" / f"{table}.csv").dropna(subset=["reproduced_mean"])
        assert len(rows) == 2 and set(rows["epochs_trained"]) == {2}
    stale = [str(p.relative_to(workdir)) for p in outputs if p.stat().st_mtime < finished]
    assert not stale, f"not redone: {stale}"


@pytest.mark.slow
def test_a_seed_added_to_a_committed_study_is_trained_evaluated_and_tabled(tmp_path):
    """Committed inputs are ancient, missing ones are not: a run the config gains is trained and evaluated, and the
    tables are redone with it, while what was already computed stays untouched."""
    workdir = make_workdir(tmp_path)
    run_study(workdir, 1)
    study = Study(load_config(*(workdir / c for c in ("config/config.yaml", *CONFIGS))))
    before = {p: (workdir / p).stat().st_mtime for run in study.runs for p in (study.eval_path(run, "nll"),
                                                                             study.eval_path(run, "knn"))}

    shutil.rmtree(workdir / ".snakemake")  # a clone of a committed study has no record of its jobs
    (workdir / CONFIGS[1]).write_text(yaml.safe_dump({**STUDY, "models": {**STUDY["models"], "seeds": [0, 1]}}))
    snakemake(workdir, "--cores", "2", "--configfile", *CONFIGS)

    for table in ("nll", "knn"):
        rows = pd.read_csv(workdir / study.root / "tables" / f"{table}.csv").dropna(subset=["reproduced_mean"])
        assert len(rows) == 2 and set(rows["n_seeds"]) == {2}, table
    assert {p: (workdir / p).stat().st_mtime for p in before} == before  # seed 0's evaluations not redone
