"""`python -m evae status`: the epochs left agree with the trainer's early stopping, and each state of a run
folder (not started, interrupted, finished, finished but max_epochs raised) reads as what it is."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from evae.cli import main as cli_main
from evae.config import TrainConfig
from evae.report import figures
from evae.status import epochs_left, format_progress, run_progress
from evae.study import Study, load_config
from evae.train import loop
from evae.train.trainer import train
from tests.conftest import REPO

TINY = dict(dataset="mnist_subset", max_train_images=200, max_val_images=100, hidden=64, warmup_epochs=1)


def stop_epoch_without_improvement(epoch: int, bad_epochs: int, cfg: TrainConfig) -> int:
    """The epoch the trainer's own rule stops at when no epoch after ``epoch`` sets a new best."""
    state = {"best_val": 0.0, "best_epoch": 0, "bad_epochs": bad_epochs}
    for e in range(epoch + 1, cfg.max_epochs + 1):
        if loop.early_stopping(state, 1.0, e, cfg.warmup_epochs, cfg.patience)[1]:
            return e
    return cfg.max_epochs


@pytest.mark.parametrize("warmup,patience,max_epochs", [(100, 50, 2000), (1, 3, 10), (5, 2, 6), (0, 1, 4)])
def test_epochs_left_runs_to_the_trainers_earliest_stop_and_at_most_to_max_epochs(warmup, patience, max_epochs):
    cfg = TrainConfig(warmup_epochs=warmup, patience=patience, max_epochs=max_epochs)
    for epoch, bad in itertools.product(range(0, max_epochs, max(1, max_epochs // 40)), range(patience)):
        if bad and epoch < warmup:
            continue  # the trainer holds the counter at 0 during the warm-up
        least, most = epochs_left(epoch, bad, cfg)
        assert epoch + least == stop_epoch_without_improvement(epoch, bad, cfg), (epoch, bad)
        assert most == max_epochs - epoch


def test_the_papers_protocol_right_after_the_first_epoch():
    # patience counts from epoch 100 (beta = 1): 50 bad epochs end at epoch 149 at the earliest
    assert epochs_left(1, 0, TrainConfig(warmup_epochs=100, patience=50, max_epochs=2000)) == (148, 1999)


def test_each_state_of_a_run_folder(tmp_path):
    cfg = TrainConfig(**TINY, max_epochs=2, patience=5)
    assert run_progress(tmp_path / "run", cfg).state == "not started"

    train(cfg, tmp_path / "run", progress=False)
    done = run_progress(tmp_path / "run", cfg, key="tiny")
    assert (done.state, done.epoch, done.epochs_left, done.segments) == ("finished: max_epochs", 2, (0, 0), 1)

    more = cfg.replace(max_epochs=30)  # a finished run whose max_epochs was raised resumes: it reads as unfinished
    resumable = run_progress(tmp_path / "run", more)
    assert (resumable.state, resumable.epoch, resumable.max_epochs) == ("unfinished", 2, 30)
    assert resumable.patience_left == 5 - (0 if resumable.best_epoch == 2 else 1)
    assert resumable.epochs_left == epochs_left(2, 5 - resumable.patience_left, more)
    assert resumable.seconds_per_epoch > 0 and resumable.segments == 1
    assert math.isfinite(resumable.best_val)

    text = format_progress([done, resumable])
    assert "tiny" in text and "finished: max_epochs" in text and "2/30" in text and "time left" in text


def test_the_command_lists_a_studys_runs_and_its_resumable_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the study's results root is relative, as in the pipeline
    args = ["status", "--base", str(REPO / "config" / "config.yaml"), "--configfile", str(REPO / "config" / "smoke.yaml")]
    study = Study(load_config(REPO / "config" / "config.yaml", REPO / "config" / "smoke.yaml"))
    first = study.runs[0]
    cfg = study.train_config(first.dataset, first.architecture, first.prior, first.seed)
    train(cfg.replace(max_epochs=1), study.run_dir(first), progress=False)  # an unfinished run of the study

    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert f"{first.key}" in out and "unfinished" in out and f"1/{cfg.max_epochs}" in out
    assert out.count("not started") == len(study.runs) - 1

    assert cli_main([*args, "--resumable"]) == 0
    assert capsys.readouterr().out.split() == [f"{study.run_dir(first)}/checkpoint.pt"]

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out: drawn.append((fig.texts[0].get_text(), out)))
    assert cli_main([*args, "--plot", "progress.png"]) == 0  # the one run started so far, as far as it has come
    assert "progress.png: the validation curves of the 1 runs started so far" in capsys.readouterr().out
    assert drawn == [("training curves [SMOKE, IN PROGRESS run: not comparable with the paper]", "progress.png")]


def test_the_curves_loss_axis_starts_a_tenth_into_the_longest_run():
    long = pd.DataFrame({"epoch": range(1, 101), "val_loss": [100.0 + 1000 / e for e in range(1, 101)]})
    short = pd.DataFrame({"epoch": range(1, 6), "val_loss": [500.0, 400, 300, 200, 150]})
    low, high = figures._loss_range([long, short])
    margin = 0.05 * (200 - 110)  # epochs 10..100 of the long run and none of the short one's
    assert (low, high) == pytest.approx((110 - margin, 200 + margin))
