"""The evaluation subcommands end to end on a model trained briefly on the embedded MNIST subset."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest

from evae.cli import main
from tests.conftest import REPO

PROVENANCE = ("environment", "run", "seed", "split", "wall_seconds", "data")


def checkout_commit() -> str | None:
    """The commit the code under test was checked out at; None outside a git checkout."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:  # no git
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    settings = [
        "dataset=mnist_subset", "max_epochs=1", "warmup_epochs=1", "max_train_images=1000", "max_val_images=200"
    ]
    assert main(["train", "--out", str(out), "--no-progress", *[a for s in settings for a in ("--set", s)]]) == 0
    return out


def read(path):
    result = json.loads(path.read_text())
    assert set(PROVENANCE) <= set(result), set(PROVENANCE) - set(result)
    assert result["run"]["epochs_trained"] == 1 and len(result["run"]["config_digest"]) == 12
    assert result["run"]["config"]["dataset"] == "mnist_subset"
    commit = checkout_commit()  # the commit of this checkout (+dirty with local changes); "unknown" only outside git
    expected = re.escape(commit) + r"(\+dirty)?" if commit else "unknown"
    assert re.fullmatch(expected, result["environment"]["git_commit"]), result["environment"]["git_commit"]
    assert result["environment"]["torch"]
    return result


def test_nll_command(run_dir, tmp_path):
    out = tmp_path / "nll.json"
    assert main(["nll", "--run", str(run_dir), "--out", str(out), "--samples", "50", "--max-images", "4",
                 "--bound", "0.001", "--no-progress"]) == 0
    r = read(out)
    assert r["images"] == 4 and r["max_images"] == 4 and r["samples"] == 50 and r["exemplar_bound"] == 0.001
    assert r["num_exemplars"] == 1000 and r["certified_bound"]["max"] <= 0.001
    assert 50 < r["nll"] < r["neg_elbo"] < 800 and r["images_per_second"] > 0
    assert r["nll_bits_per_dim"] == pytest.approx(r["nll"] / (784 * math.log(2)))
    assert (tmp_path / "nll.per_image.npz").exists()


def test_knn_command(run_dir, tmp_path):
    out = tmp_path / "knn.json"
    assert main(["knn", "--run", str(run_dir), "--out", str(out), "--ks", "1", "3", "5"]) == 0
    r = read(out)
    for space, dim in (("latent", 40), ("pixel", 784)):
        assert r[space]["k"] in (1, 3, 5) and r[space]["dim"] == dim
        assert set(r[space]["test_error_by_k"]) == {"1", "3", "5"}
        assert 0 <= r[space]["test_error"] < 50  # far better than chance (90%) even after one epoch
    assert r["references"] == {"validation": "train", "test": "train + val"}


def test_augment_command_with_and_without_a_model(run_dir, tmp_path):
    common = [
        "--dataset", "mnist_subset", "--hidden", "128", "--epochs", "3", "--max-train-images", "2000", "--no-progress"
    ]
    assert main(["augment", *common, "--run", str(run_dir), "--out", str(tmp_path / "aug.json")]) == 0
    r = read(tmp_path / "aug.json")
    assert r["augmentation"]["noise_scale"] == pytest.approx(r["augmentation"]["prior_scale"])
    assert r["train_images"] == 2000 and [h["epoch"] for h in r["history"]] == [1, 2, 3]
    assert 0 <= r["test_error"] < 60
    assert main(["augment", *common, "--out", str(tmp_path / "plain.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["augmentation"] is None and plain["run"] is None and 0 <= plain["test_error"] < 60


def test_bad_input_exits_with_a_message(run_dir, tmp_path, capsys):
    assert main(["nll", "--run", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert "not a finished training run" in capsys.readouterr().err
    assert main(["augment", "--dataset", "mnist", "--run", str(run_dir), "--out", str(tmp_path / "y.json")]) == 2
    assert "trained on 'mnist_subset'" in capsys.readouterr().err
