"""Fault injection: every file of a run folder or an evaluation folder flipped, truncated or deleted, then read
by the command that uses it. Each must stop with one paragraph naming the file (exit code 2 from the CLI, no
traceback) and write nothing from it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evae import checksums, runs
from evae.checksums import DamagedFileError
from evae.cli import main
from evae.config import TrainConfig
from evae.evaluate.knn import knn_probe
from evae.evaluate.nll import evaluate_nll
from evae.io import torch_load
from evae.pipeline_job import pipeline_job
from evae.report import figures
from evae.train.trainer import train

REPO = Path(__file__).resolve().parent.parent
SETTINGS = dict(dataset="mnist_subset", prior="exemplar", max_train_images=200, max_val_images=100, hidden=64,
                max_epochs=2, warmup_epochs=1)
DAMAGES = ("flip", "truncate", "delete")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny finished run and its evaluation folder (nll.json, nll.per_image.npz, knn.json)."""
    root = tmp_path_factory.mktemp("study")
    train(TrainConfig(**SETTINGS), root / "run", progress=False)
    evaluate_nll(root / "run", root / "eval" / "nll.json", samples=20, max_images=3, progress=False)
    knn_probe(root / "run", root / "eval" / "knn.json", ks=(1, 3), pixel_baseline=False)
    return root


@pytest.fixture
def copy(study, tmp_path):
    shutil.copytree(study, tmp_path, dirs_exist_ok=True)
    return tmp_path


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


def cli(*args: str, settings: dict | None = None) -> list[str]:
    return [*args, *[a for k, v in (settings or {}).items() for a in ("--set", f"{k}={v}")]]


def assert_one_paragraph_naming(err: str, path: Path) -> None:
    assert err.startswith("error: ") and str(path) in err and "Traceback" not in err, err
    assert err.strip().count("\n") == 0, err


@pytest.mark.parametrize("previous", ("flip", "delete"))
@pytest.mark.parametrize("how", ("flip", "truncate"))
def test_damaged_checkpoint_and_previous_stop_the_resume_before_any_epoch(copy, capsys, how, previous):
    run = copy / "run"
    before = {n: (run / n).read_bytes() for n in ("metrics.csv", "summary.json")}
    damage(run / "checkpoint.pt", how)
    damage(run / "checkpoint.prev.pt", previous)
    assert main(cli("train", "--out", str(run), "--no-progress", settings={**SETTINGS, "max_epochs": 3})) == 2
    err = capsys.readouterr().err
    assert_one_paragraph_naming(err, run / "checkpoint.pt")
    assert "delete" in err and "epoch 1" in err and "checkpoint.prev.pt" in err
    assert {n: (run / n).read_bytes() for n in before} == before  # nothing trained, nothing rewritten


@pytest.mark.parametrize("how", ("flip", "truncate"))
def test_damaged_checkpoint_costs_one_epoch_not_the_run(copy, tmp_path, caplog, how):
    """checkpoint.prev.pt, the checkpoint of the epoch before, stands in: the run goes on from it and ends as an
    uninterrupted run."""
    run = copy / "run"
    assert torch_load(run / "checkpoint.prev.pt")["state"]["epoch"] == 1
    damage(run / "checkpoint.pt", how)
    summary = train(TrainConfig(**{**SETTINGS, "max_epochs": 3}), run, progress=False)
    assert f"Resuming from {run / 'checkpoint.prev.pt'} instead (epoch 1)" in caplog.text
    assert summary["segments"][-1]["resumed_from"] == {"epoch": 1, "file": "checkpoint.prev.pt", "device": "cpu",
                                                       "device_changed": False}
    train(TrainConfig(**{**SETTINGS, "max_epochs": 3}), tmp_path / "straight", progress=False)
    assert (run / "metrics.csv").read_bytes() == (tmp_path / "straight" / "metrics.csv").read_bytes()
    for name in ("best.pt", "checkpoint.pt"):
        a, b = (torch_load(d / name)["model"] for d in (run, tmp_path / "straight"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch_load(run / "checkpoint.prev.pt")["state"]["epoch"] == 2  # the damaged one was not kept


def test_deleted_checkpoint_means_training_again_from_epoch_1(copy, caplog):
    run = copy / "run"
    damage(run / "checkpoint.pt", "delete")
    summary = train(TrainConfig(**{**SETTINGS, "max_epochs": 3}), run, progress=False)
    assert summary["epochs_trained"] == 3 and len(runs.read_metrics(run)) == 3
    assert "checkpoint.pt was deleted: training this run again from epoch 1" in caplog.text


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_best_weights_stop_the_nll(copy, capsys, how):
    damage(copy / "run" / "best.pt", how)
    out = copy / "new" / "nll.json"
    assert main(["nll", "--run", str(copy / "run"), "--out", str(out), "--samples", "5", "--no-progress"]) == 2
    assert_one_paragraph_naming(capsys.readouterr().err, copy / "run" / "best.pt")
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_summary_stops_knn_and_train(copy, capsys, how):
    run = copy / "run"
    damage(run / "summary.json", how)
    out = copy / "new" / "knn.json"
    assert main(["knn", "--run", str(run), "--out", str(out), "--ks", "1"]) == 2
    assert_one_paragraph_naming(capsys.readouterr().err, run / "summary.json")
    assert not out.exists()
    if how != "delete":  # a deleted summary is how a finished run is trained on (see the advice)
        assert main(cli("train", "--out", str(run), "--no-progress", settings=SETTINGS)) == 2
        assert_one_paragraph_naming(capsys.readouterr().err, run / "summary.json")


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_config_stops_augment(copy, capsys, how):
    damage(copy / "run" / "config.yaml", how)
    out = copy / "new" / "aug.json"
    args = ["augment", "--dataset", "mnist_subset", "--run", str(copy / "run"), "--epochs", "1", "--hidden", "8"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    assert_one_paragraph_naming(capsys.readouterr().err, copy / "run" / "config.yaml")
    assert not out.exists()


FIGURES = {  # a figure's input that gets damaged, and how to draw the figure into ``out``
    "run/metrics.csv": lambda copy, out: figures.training_curves([copy / "run" / "summary.json"], out),
    "eval/knn.json": lambda copy, out: figures.knn_error_vs_k([copy / "eval" / "knn.json"], out),
}


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("damaged", FIGURES)
def test_a_damaged_input_stops_its_figure(copy, how, damaged):
    damage(copy / damaged, how)
    with pytest.raises(DamagedFileError, match=str(copy / damaged)):
        FIGURES[damaged](copy, copy / "figure.png")
    assert not (copy / "figure.png").exists()


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_per_image_values_are_refused(copy, how):
    assert len(runs.read_per_image(copy / "eval" / "nll.json")["nll"]) == 3
    damage(copy / "eval" / "nll.per_image.npz", how)
    with pytest.raises(DamagedFileError, match=str(copy / "eval" / "nll.per_image.npz")):
        runs.read_per_image(copy / "eval" / "nll.json")


def test_cli_exits_2_with_the_paragraph_and_no_traceback(copy):
    damage(copy / "run" / "best.pt", "flip")
    proc = subprocess.run([sys.executable, "-m", "evae", "nll", "--run", str(copy / "run"), "--out",
                           str(copy / "x.json"), "--samples", "5", "--no-progress"], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 2
    paragraph = proc.stderr.strip().splitlines()[-1]
    assert paragraph.startswith(f"error: {copy / 'run' / 'best.pt'} is damaged") and "Traceback" not in proc.stderr
    assert not (copy / "x.json").exists()


def test_legacy_folder_is_refused_until_recorded_after_the_fact(copy, capsys):
    for folder in (copy / "run", copy / "eval"):
        (folder / checksums.RECORD).unlink()
    out = copy / "new" / "knn.json"
    assert main(["knn", "--run", str(copy / "run"), "--out", str(out), "--ks", "1", "--no-pixel"]) == 2
    err = capsys.readouterr().err
    assert_one_paragraph_naming(err, copy / "run" / "summary.json")
    assert f"python -m evae record-checksums {copy / 'run'}" in err
    assert main(["record-checksums", str(copy)]) == 0
    printed = capsys.readouterr().out
    assert "7 recorded after the fact" in printed and "3 recorded after the fact" in printed
    assert main(["knn", "--run", str(copy / "run"), "--out", str(out), "--ks", "1", "--no-pixel"]) == 0
    entry = json.loads((copy / "run" / checksums.RECORD).read_text())["files"]["best.pt"]
    assert entry["recorded"] == "after the fact"
    assert runs.read_result(copy / "eval" / "nll.json")["images"] == 3


def test_files_of_another_config_are_refused(copy, capsys):
    run = copy / "run"
    assert main(cli("train", "--out", str(run), "--no-progress", settings={**SETTINGS, "lr": 1e-3})) == 2
    assert "different config" in capsys.readouterr().err
    runs.write_config(run, TrainConfig(**{**SETTINGS, "lr": 1e-3}))  # recorded, but not the summary's config
    assert main(["knn", "--run", str(run), "--out", str(copy / "k.json"), "--ks", "1"]) == 2
    err = capsys.readouterr().err
    assert "belong to different configs" in err and str(run / "config.yaml") in err
    assert not (copy / "k.json").exists()


def test_resume_removes_stale_temporaries(copy):
    run = copy / "run"
    for i in range(3):
        (run / f".checkpoint.pt.killed{i}.tmp").write_bytes(b"half a checkpoint")
    train(TrainConfig(**{**SETTINGS, "max_epochs": 3}), run, progress=False)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_pipeline_job_logs_the_paragraph_without_a_traceback(tmp_path):
    log = tmp_path / "job.log"
    smk = SimpleNamespace(log=[str(log)], threads=1, rule="nll")
    with pytest.raises(DamagedFileError):
        with pipeline_job(smk):
            raise DamagedFileError("results/x/best.pt is damaged: it is truncated. Delete the run folder.")
    text = log.read_text()
    assert "job nll failed: results/x/best.pt is damaged: it is truncated. Delete the run folder." in text
    assert "Traceback" not in text
