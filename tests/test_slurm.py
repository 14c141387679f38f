"""The pipeline on a real SLURM cluster, through snakemake-executor-plugin-slurm and profiles/slurm.

A one-node Slurm 22.05 cluster on loopback (munged, slurmctld, slurmd; no accounting, no memory
enforcement) is started by tests/slurm/up.sh, installing Debian's packages when they are missing,
and stopped by tests/slurm/down.sh when the module's tests end, failed or not. Needs root; skips,
saying why, where the cluster cannot be brought up. Each SLURM job costs ~12 s of overhead here
(two Snakemake start-ups per job, and polling), so the run is kept to six jobs in four waves.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from evae.io import torch_load
from tests.conftest import REPO
from tests.test_pipeline import SNAKEMAKE, env, make_workdir

pytestmark = pytest.mark.slow

CLUSTER_SCRIPTS = REPO / "tests" / "slurm"
STATE = Path(os.environ.get("EVAE_SLURM_STATE", "/run/evae-slurm"))  # .ci/run may stop it from a trap
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")

# The profile polls as a real cluster should (jobs of hours); a test cluster's jobs take seconds.
# squeue, because this cluster has no accounting (sacct fails, and the plugin would wait forever).
TEST_CLUSTER_FLAGS = (
    "--jobs", "2",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
)
SMOKE = ("--configfile", "config/smoke.yaml")
# Two smoke runs (the MLP VAE with the Gaussian and the exemplar prior), their test NLL and a figure
# drawn from the exemplar model: six jobs in four waves (prepare_data; train x 2; nll x 2 and the figure).
RUNS = [Path(f"results/smoke/runs/mnist_subset/vae/{prior}/seed0") for prior in ("gaussian", "exemplar")]
FIGURES = [Path("results/smoke/figures/exemplar_samples_mnist_subset.png")]
EVALS = [Path(str(run).replace("results/smoke/runs", "results/smoke/eval")) for run in RUNS]
TARGETS = [str(run / "summary.json") for run in RUNS] + [str(e / "nll.json") for e in EVALS] + [str(f) for f in FIGURES]


def running(names=DAEMONS) -> list[str]:
    """'name pid' of every process with one of these exact names."""
    found = []
    for name in names:
        pids = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
        found += [f"{name} {pid}" for pid in pids]
    return found


@pytest.fixture(scope="module")
def slurm_node() -> dict:
    """Bring the cluster up for this module; its node's CPUTot and RealMemory. Always brought down again."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: pip install -e '.[slurm]'")
    if os.geteuid() != 0:
        pytest.skip("starting munged, slurmctld and slurmd (and installing them with apt-get) needs root")
    if shutil.which("pgrep") is None:
        pytest.skip("pgrep (procps) is missing: the test could not check that it left no daemon behind")
    if busy := running():
        pytest.skip(f"Slurm or munge is already running here ({', '.join(busy)}); the test starts and stops its own cluster only")
    try:
        up = subprocess.run([CLUSTER_SCRIPTS / "up.sh", STATE], capture_output=True, text=True, timeout=600)
        if up.returncode != 0:
            pytest.skip(f"no local SLURM cluster (tests/slurm/up.sh exit {up.returncode}): {up.stderr.strip()[-3000:]}")
        node = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True, check=True).stdout
        yield {key: int(re.search(rf"\b{key}=(\d+)", node).group(1)) for key in ("CPUTot", "RealMemory")}
    finally:
        down = subprocess.run([CLUSTER_SCRIPTS / "down.sh", STATE], capture_output=True, text=True, timeout=120)
        left = running() + [f"job {pid}" for pid in subprocess.run(
            ["pgrep", "-f", "executor slurm-jobstep"], capture_output=True, text=True).stdout.split()]
        assert down.returncode == 0 and not left, f"cluster not stopped cleanly: {down.stderr} still running: {left}"


def run_snakemake(workdir: Path, *args: str, timeout: float = 900) -> tuple[int, str]:
    """Snakemake's exit status and output. Stopped with SIGINT, which scancels its jobs (SIGTERM would not)."""
    proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output = proc.communicate(timeout=timeout)[0]
    except BaseException as stop:  # the timeout, or Ctrl-C on pytest: stop Snakemake and its jobs before going on
        os.killpg(proc.pid, signal.SIGINT)
        try:
            output = proc.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0]
        if isinstance(stop, subprocess.TimeoutExpired):
            raise AssertionError(f"snakemake {' '.join(args)} did not finish in {timeout} s:\n{output[-6000:]}") from None
        raise
    return proc.returncode, output


def printed_jobs(output: str) -> list[dict]:
    """Every job Snakemake announced (rule, jobid, threads, mem_mb, runtime), dry run or not."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]\n]+\]\n(?:local)?rule \w+:)", output)[1:]:
        def number(name: str, default: int | None = None) -> int | None:
            found = re.search(rf"\b{name}[:=] ?(\d+)", block)  # "jobid: 4", "threads: 2", "mem_mb=6000"
            return int(found.group(1)) if found else default

        rule = re.match(r"\[[^\]]+\]\n(?:local)?rule (\w+):", block).group(1)
        jobs.append({"rule": rule, "jobid": number("jobid"), "threads": number("threads", 1),
                     "mem_mb": number("mem_mb", 0), "runtime": number("runtime")})
    return jobs


def reproducible(record):
    """A result JSON without what differs between two runs of the same seed: timings, and where and when it ran
    (the environment, and the training segments that record it)."""
    if isinstance(record, dict):
        return {key: reproducible(value) for key, value in record.items()
                if key not in ("environment", "segments") and not re.search(r"seconds?$", key)}
    return [reproducible(value) for value in record] if isinstance(record, list) else record


def slurm_time(minutes: int) -> str:
    """A time limit as squeue prints it (%l): M:SS, H:MM:SS or D-HH:MM:SS."""
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:00"
    return f"{hours}:{minutes:02d}:00" if hours else f"{minutes}:00"


def workflow_copy(dest: Path) -> Path:
    """make_workdir's copy of the workflow, with both profiles (the ones under test)."""
    make_workdir(dest)
    shutil.copytree(REPO / "profiles", dest / "profiles", dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, str]:
    """The targets made by a local run (profiles/default); the work folder and Snakemake's output."""
    workdir = workflow_copy(tmp_path_factory.mktemp("local"))
    status, output = run_snakemake(workdir, *TARGETS, "--cores", "2", *SMOKE)
    assert status == 0, output[-8000:]
    return workdir, output


@pytest.fixture(scope="module")
def slurm_run(slurm_node, tmp_path_factory) -> tuple[Path, str]:
    """The same targets made through SLURM with profiles/slurm; the work folder and Snakemake's output."""
    workdir = workflow_copy(tmp_path_factory.mktemp("slurm"))
    status, output = run_snakemake(workdir, *TARGETS, "--profile", "profiles/slurm", *TEST_CLUSTER_FLAGS, *SMOKE)
    assert status == 0, output[-8000:]
    return workdir, output


def test_every_job_ran_as_a_slurm_job_with_the_rules_resources(slurm_run, local_run):
    _, output = slurm_run
    announced = {job["jobid"]: job for job in printed_jobs(output)}
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    local_jobs = sorted(job["rule"] for job in printed_jobs(local_run[1]))
    assert len(local_jobs) >= 6 and sorted(announced[int(j)]["rule"] for j in submitted) == local_jobs, output[-8000:]
    # MinJobAge=600 keeps finished jobs visible to squeue: what Slurm granted each of them.
    squeue = subprocess.run(["squeue", "--states=all", "-h", "-j", ",".join(submitted.values()), "-o", "%i|%T|%C|%m|%l"],
                            capture_output=True, text=True, check=True).stdout.split()
    granted = {line.split("|")[0]: line.split("|")[1:] for line in squeue}
    for jobid, slurm_id in submitted.items():
        job = announced[int(jobid)]
        expected = ["COMPLETED", str(job["threads"]), f"{job['mem_mb']}M", slurm_time(job["runtime"])]
        assert granted[slurm_id] == expected, (job, granted[slurm_id])


def test_slurm_run_equals_local_run(slurm_run, local_run):
    slurm_dir, local_dir = slurm_run[0], local_run[0]
    for run in RUNS:
        local, cluster = local_dir / run, slurm_dir / run
        assert (cluster / "metrics.csv").read_bytes() == (local / "metrics.csv").read_bytes(), run
        summaries = [reproducible(json.loads((d / "summary.json").read_text())) for d in (local, cluster)]
        assert summaries[0] == summaries[1], run
        best = [torch_load(d / "best.pt")["model"] for d in (local, cluster)]
        assert best[0].keys() == best[1].keys()
        assert all(torch.equal(best[0][name], best[1][name]) for name in best[0]), run
    for evaluation in EVALS:
        local, cluster = local_dir / evaluation, slurm_dir / evaluation
        results = [json.loads((d / "nll.json").read_text()) for d in (local, cluster)]
        assert reproducible(results[0]) == reproducible(results[1]), evaluation
        assert results[0]["nll"] == results[1]["nll"]  # the number itself, whatever else the file holds
        for arrays in local.glob("*.npz"):  # per-image values (compared as arrays: a zip stores write times)
            with np.load(arrays) as a, np.load(cluster / arrays.name) as b:
                assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), evaluation / arrays.name
    for figure in FIGURES:
        assert (slurm_dir / figure).read_bytes() == (local_dir / figure).read_bytes(), figure


def test_every_smoke_job_fits_the_test_node(slurm_node, tmp_path):
    """What the smoke study would submit: nothing may ask for more CPUs or memory than the node has."""
    workdir = workflow_copy(tmp_path)
    # A dry run prints a job's threads only when --cores is given, capped at it: give more than any node has.
    status, output = run_snakemake(workdir, "--profile", "profiles/slurm", *TEST_CLUSTER_FLAGS, *SMOKE,
                                   "--dry-run", "--cores", "1024", timeout=300)
    assert status == 0, output[-8000:]
    jobs = [job for job in printed_jobs(output) if job["rule"] != "all"]
    assert len(jobs) > 20, output[-8000:]
    too_big = [job for job in jobs if job["threads"] > slurm_node["CPUTot"] or job["mem_mb"] > slurm_node["RealMemory"]]
    assert not too_big, f"the node has {slurm_node}; sbatch would reject these jobs: {too_big}"


@pytest.mark.parametrize(
    "request_, rejection",
    [("threads", "More processors requested than permitted"), ("mem_mb", "Memory specification can not be satisfied")],
)
def test_a_request_the_node_cannot_satisfy_fails_at_once(slurm_node, tmp_path, request_, rejection):
    """sbatch rejects it (EnforcePartLimits=ALL) and Snakemake stops, instead of waiting on a job that would
    pend forever. The threads case also shows that nothing (such as a `cores` in profiles/default) caps a
    cluster job's threads at the submitting machine's cores."""
    workdir = workflow_copy(tmp_path)
    if request_ == "threads":
        too_much = ("--set-threads", f"prepare_data={slurm_node['CPUTot'] + 1}")
    else:
        too_much = ("--set-resources", f"prepare_data:mem_mb={slurm_node['RealMemory'] + 1}")
    status, output = run_snakemake(workdir, "results/smoke/data/mnist_subset.json", "--profile", "profiles/slurm",
                                   *TEST_CLUSTER_FLAGS, *too_much, *SMOKE, timeout=120)
    assert status != 0 and rejection in output, output[-8000:]
