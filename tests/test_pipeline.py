"""The Snakemake pipeline: lint, planning, config validation, resuming.

The smoke study end to end, and its report, are CI's first part: the README's Quickstart run verbatim
(.ci/run, tests/quickstart.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, checkpoint_epoch, mirror_root

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", "resources/paper", "environment.yml")


def make_workdir(dest: Path) -> Path:
    """A copy of the workflow (not of results) in which Snakemake may write freely."""
    for name in WORKFLOW_FILES:
        src, dst = REPO / name, dest / name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return dest


def env() -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    root = mirror_root()
    if root is not None:
        e["EVAE_DATA_MIRROR"] = str(root)
    return e


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env(), capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("pipeline"))


def test_lint_is_clean(workdir):
    proc = snakemake(workdir, "--lint")
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


def test_every_rule_has_a_log_a_benchmark_and_resources():
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name = block.split(":")[0]
            for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:"):
                assert f"\n    {directive}" in block, f"rule {name} ({path.name}) lacks {directive}"


def test_paper_config_plans_the_full_study(workdir):
    proc = snakemake(workdir, "results/tables/nll.csv", "-n", "--quiet", "rules")
    counts = {line.split()[0]: int(line.split()[-1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[-1].isdigit()}
    assert counts["train"] == 3 * 3 * 3 * 5 and counts["nll"] == 135 and counts["table"] == 1, proc.stdout


@pytest.mark.parametrize(
    "bad, message",
    [
        ("nll={'samples': 0, 'exemplar_bound': null, 'max_images': null}", "samples"),
        ("epochs=3", "Additional properties are not allowed ('epochs' was unexpected)"),
        ("train={'max_epochs': -1}", "max_epochs: must be >= 1"),
        ("models=[{'datasets':['mnist'],'architectures':['vae'],'priors':['gaussian','flow']}]",
         "models[0].priors: ['flow'] not a registered prior"),
    ],
)
def test_bad_config_stops_before_any_job(workdir, bad, message):
    proc = snakemake(workdir, "-n", "--config", bad, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


PRIORS = ["gaussian", "vampprior", "exemplar"]


def planned_jobs(output: str) -> dict[str, tuple[str, list[str]]]:
    """Each job a dry run plans, by its output: its rule and its inputs."""
    jobs = {}
    for block in re.split(r"^(?:local)?rule ", output, flags=re.M)[1:]:
        fields = dict(re.findall(r"^    (input|output): (.*)$", block, flags=re.M))
        if "output" in fields:
            jobs[fields["output"]] = (block.split(":")[0], fields.get("input", "").split(", "))
    return jobs


def test_each_figure_architecture_s_figures_are_planned_from_its_runs(workdir):
    """MNIST figures of the VAE (plain names) and of the HVAE (named after it), each from its own rule and runs."""
    (workdir / "config" / "two_architectures.yaml").write_text(
        "models: [{datasets: [mnist_subset], architectures: [vae], priors: [gaussian, vampprior, exemplar]},\n"
        "         {datasets: [mnist_subset], architectures: [hvae], priors: [gaussian, exemplar]}]\n"
        "figures: {datasets: [mnist_subset], architectures: [vae, hvae]}\n"
    )
    figures = [f"results/smoke/figures/{f}_mnist_subset{a}.png" for a in ("", "_hvae")
               for f in ("tsne", "unconditional_samples", "cyclic_generation")]
    proc = snakemake(workdir, *figures, "-n", "--configfile", "config/smoke.yaml", "config/two_architectures.yaml")
    jobs = planned_jobs(proc.stdout)
    runs = "results/smoke/runs/mnist_subset/{}/{}/seed0/summary.json"
    for architecture, suffix, priors in (("vae", "", PRIORS), ("hvae", "_of_architecture", ["gaussian", "exemplar"])):
        exemplar_run = [runs.format(architecture, "exemplar")]
        name = f"_mnist_subset{'_hvae' if suffix else ''}.png"
        assert jobs[f"results/smoke/figures/tsne{name}"] == (f"model_figure{suffix}", exemplar_run)
        assert jobs[f"results/smoke/figures/cyclic_generation{name}"] == (f"cyclic_generation{suffix}", exemplar_run)
        assert jobs[f"results/smoke/figures/unconditional_samples{name}"] == (
            f"unconditional_samples{suffix}", [runs.format(architecture, p) for p in priors])


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    workdir = make_workdir(tmp_path)
    target = "results/smoke/runs/mnist_subset/vae/gaussian/seed0/summary.json"
    args = [target, "--cores", "1", "--configfile", "config/smoke.yaml",
            "--config", "train={'max_epochs': 40, 'warmup_epochs': 40, 'patience': 40}"]
    run_dir = workdir / Path(target).parent
    # SIGINT as a terminal delivers it, even where the test runs in a background job (whose SIGINT is ignored)
    proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not checkpoint_epoch(run_dir) >= 3:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "training never reached epoch 3"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: Snakemake and its jobs get SIGINT
    output = proc.communicate(timeout=120)[0]
    interrupted_at = checkpoint_epoch(run_dir)  # what training resumes from (metrics.csv may lag it by one epoch)
    assert not (run_dir / "summary.json").exists() and (run_dir / "checkpoint.pt").exists(), output
    assert interrupted_at < 40
    snakemake(workdir, *args)
    log = (workdir / "logs/smoke/train/mnist_subset/vae/gaussian/seed0.log").read_text()
    assert f"resuming after epoch {interrupted_at}" in log
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(1, 41))


@pytest.mark.slow
def test_a_damaged_run_file_fails_its_job_with_the_paragraph_in_the_log(tmp_path):
    workdir = make_workdir(tmp_path)
    run = "results/smoke/runs/mnist_subset/vae/gaussian/seed0"
    smoke = ["--cores", "1", "--configfile", "config/smoke.yaml"]
    snakemake(workdir, f"{run}/summary.json", *smoke)
    best = workdir / run / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    target = "results/smoke/eval/mnist_subset/vae/gaussian/seed0/knn.json"
    proc = snakemake(workdir, target, *smoke, check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/smoke/knn/mnist_subset/vae/gaussian/seed0.log").read_text()
    assert f"{run}/best.pt is damaged" in log and "Traceback" not in log, log
    assert not (workdir / target).exists()
