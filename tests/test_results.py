"""The committed CPU-budget study (results/reduced/): complete, labelled, consistent with the evaluation
JSONs it was compiled from, carrying provenance, and never touched by another profile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from evae.data.registry import DATASETS
from evae.report import claims
from evae.report.tables import compile_table, paper_column, to_markdown
from evae.study import Study, load_config
from tests.conftest import REPO

REDUCED = REPO / "results" / "reduced"
REPORTED = REPO / "resources" / "paper" / "reported.csv"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PRIORS = ("gaussian", "vampprior", "exemplar")


def merged_config(name: str) -> dict:
    return load_config(REPO / "config" / "config.yaml", REPO / "config" / f"{name}.yaml")


@pytest.fixture(scope="module")
def study() -> Study:
    return Study(merged_config("reduced"))


def test_reduced_study_runs_the_paper_settings_stopped_at_100_epochs(study):
    """Every run is the paper profile's run of the same architecture, prior and seed on the paper's column of its
    dataset, stopped at epoch 100, the exemplar prior in kNN mode."""
    assert study.root == "results/reduced" and "mnist" in study.trained("dataset")
    assert set(study.trained("prior")) == set(PRIORS)
    paper = Study(merged_config("config"))
    for run in study.runs:
        cfg = study.train_config(run.dataset, run.architecture, run.prior, run.seed)
        assert (cfg.max_epochs, cfg.warmup_epochs, cfg.lr, cfg.batch_size) == (100, 100, 5e-4, 100)
        assert cfg.exemplar_mode == "knn" and cfg.exemplar_k == 10
        same = paper.train_config(paper_column(run.dataset), run.architecture, run.prior, run.seed)
        changed = cfg.replace(exemplar_mode=same.exemplar_mode, dataset=same.dataset, max_epochs=same.max_epochs)
        assert changed.trajectory_digest() == same.trajectory_digest()


@pytest.mark.parametrize("kind", ["nll", "knn", "augmentation"])
def test_committed_table_holds_every_row_labelled_reduced_budget(study, kind):
    table = pd.read_csv(REDUCED / "tables" / f"{kind}.csv")
    ours = table[table["status"] != "not run"]
    if kind == "augmentation":
        expected = {(d, f"mlp_2x{h}", p) for d in study.config[kind]["datasets"] for h in study.config[kind]["hidden"]
                    for p in ("none", "exemplar")}
    else:
        knn = study.config["knn"]
        expected = {(r.dataset, r.architecture, r.prior) for r in study.runs
                    if kind == "nll" or (r.dataset in knn["datasets"] and r.architecture in knn["architectures"])}
    assert set(zip(ours["data_used"], ours["architecture"], ours["prior"])) == expected
    seeds = {}
    for run in study.runs:
        seeds.setdefault((run.dataset, run.architecture, run.prior), set()).add(run.seed)
    if kind == "augmentation":
        seeds = {key: set(study.config[kind]["seeds"]) for key in expected}
    assert [int(n) for n in ours["n_seeds"]] == [len(seeds[key]) for key in
                                                 zip(ours["data_used"], ours["architecture"], ours["prior"])]
    assert ours["reproduced_mean"].notna().all() and set(ours["profile"]) == {"reduced"}
    markdown = (REDUCED / "tables" / f"{kind}.md").read_text().splitlines()
    assert "REDUCED BUDGET" in markdown[0]
    rows = [line for line in markdown if line.startswith("| ") and "| dataset |" not in line]
    reproduced = [line for line in rows if "not run" not in line]
    assert len(reproduced) >= len(expected) and all("REDUCED BUDGET" in line for line in reproduced)
    if kind != "augmentation":
        assert ours["epochs_trained"].astype(float).eq(100).all()
        exemplar = ours[ours["prior"] == "exemplar"]
        assert set(exemplar["exemplar_training"]) == {"kNN, k=10"}
    if kind == "nll":
        assert ours["importance_samples"].astype(float).eq(5000).all()
        assert ours["reproduced_mean"].between(-400, -60).all()  # test log-likelihood in nats


@pytest.mark.parametrize("kind", ["nll", "knn", "augmentation"])
def test_committed_table_is_what_its_evaluation_jsons_compile_to(study, kind):
    assert study.tables()[kind] == kind
    recompiled = compile_table(kind, [REPO / t for t in study.table_inputs(kind)], REPORTED, study.profile)
    assert recompiled.to_csv(index=False) == (REDUCED / "tables" / f"{kind}.csv").read_text()
    assert to_markdown(recompiled, kind, study.profile) == (REDUCED / "tables" / f"{kind}.md").read_text()


def test_committed_claims_are_what_the_evaluation_jsons_compile_to_and_name_the_budget(study):
    inputs = {kind: [REPO / p for p in paths] for kind, paths in study.claims_inputs().items()}
    recompiled = claims.compile_claims(inputs, REPORTED, study.profile)
    assert recompiled.to_csv(index=False) == (REDUCED / "tables" / "claims.csv").read_text()
    markdown = (REDUCED / "tables" / "claims.md").read_text()
    assert claims.to_markdown(recompiled, study.profile) == markdown
    # every claim on every dataset and architecture it applies to, labelled with the budget
    tested = {(r.dataset, r.architecture) for r in study.runs}
    augmented = {(d, f"mlp_2x{h}") for d in study.config["augmentation"]["datasets"]
                 for h in study.config["augmentation"]["hidden"]}
    knn = {(d, a) for d, a in tested if d in study.config["knn"]["datasets"] and a in study.config["knn"]["architectures"]}
    expected = {"augmentation": augmented, "knn": knn}
    for claim in claims.CLAIMS:
        rows = recompiled[recompiled["claim"] == claim.text]
        assert set(zip(rows["data_used"], rows["architecture"])) == expected.get(claim.kind, tested), claim.text
    assert (recompiled["verdict"] != "not testable").all()
    assert markdown.count("REDUCED BUDGET) |") == len(recompiled)


def test_every_committed_number_carries_its_provenance(study):
    for run in study.runs:
        summary = json.loads((REPO / study.run_dir(run) / "summary.json").read_text())
        assert summary["epochs_trained"] == 100 and summary["train_seconds"] > 0
        assert summary["data"]["files"] and summary["environment"]["git_commit"] not in ("", "unknown")
        for what in ("nll", "knn"):
            result = json.loads((REPO / study.eval_path(run, what)).read_text())
            assert result["run"]["config_digest"] == summary["config_digest"]
            env = result["environment"]
            assert env["git_commit"] not in ("", "unknown") and env["cpu"]["model"] and env["torch"]
            assert result["data"]["files"] == summary["data"]["files"]
        nll = json.loads((REPO / study.eval_path(run, "nll")).read_text())
        test_images = DATASETS[run.dataset].split_sizes[2]
        assert (nll["images"], nll["samples"], nll["split"]) == (test_images, 5000, "test") and nll["wall_seconds"] > 0
        if run.prior == "exemplar":
            assert nll["exemplar_bound"] == 1e-3 and nll["certified_bound"]["max"] <= 1e-3 + 1e-12


def test_committed_run_folders_hold_what_a_reader_needs_and_finished_runs_no_resume_state(study):
    try:
        listed = subprocess.run(["git", "ls-files", "results/reduced"], cwd=REPO, capture_output=True, text=True)
    except OSError:  # no git
        listed = None
    tracked = set(listed.stdout.split()) if listed is not None and listed.returncode == 0 else set()
    if not tracked:
        pytest.skip("not a git checkout with the committed results")
    for run in study.runs:
        folder = study.run_dir(run)
        for name in ("summary.json", "metrics.csv", "config.yaml", "best.pt"):
            assert f"{folder}/{name}" in tracked, f"{folder}/{name} is not committed"
    assert not any(p.endswith((".npz", ".log", ".tmp")) for p in tracked)
    # resume state only where a run under way spans sessions, outside the config until it has landed
    finished = {study.run_dir(run) for run in study.runs}
    assert not any(p.endswith("checkpoint.pt") and p.rsplit("/", 1)[0] in finished for p in tracked)
    for target in study.all_targets():
        assert target in tracked, f"{target} is not committed"


def _dry_run_outputs(workdir: Path, *args: str) -> list[str]:
    proc = subprocess.run([SNAKEMAKE, "-n", "--quiet", "all", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_smoke_profile_writes_nowhere_under_another_profiles_root(tmp_path):
    """Every output, log and benchmark the smoke study would write lies under its own root."""
    for name in ("Snakefile", "workflow", "config", "resources/paper"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    proc = subprocess.run([SNAKEMAKE, "-n", "--configfile", "config/smoke.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = re.findall(r"^\s+(?:output|log|benchmark): (.+)$", proc.stdout + proc.stderr, flags=re.M)
    files = [p.strip() for line in paths for p in line.split(",")]
    assert len(files) > 30
    assert all(f.startswith(("results/smoke/", "logs/smoke/")) for f in files), sorted(
        f for f in files if not f.startswith(("results/smoke/", "logs/smoke/")))


def test_fresh_clone_finds_the_committed_study_up_to_date(tmp_path, study):
    """git keeps no modification times: a clone's committed outputs must still count as done, and --forceall
    must plan the study from scratch."""
    clone = tmp_path / "clone"
    proc = subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot clone {REPO}: {proc.stderr.strip()}")
    if not (clone / "results" / "reduced" / "tables" / "nll.csv").exists():
        pytest.skip("the checkout's HEAD holds no committed reduced study yet")
    args = ("-n", "--configfile", "config/reduced.yaml")
    proc = subprocess.run([SNAKEMAKE, *args], cwd=clone, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    forced = subprocess.run([SNAKEMAKE, *args, "--forceall", "--quiet", "rules"], cwd=clone, capture_output=True,
                            text=True, timeout=600)
    counts = {line.split()[0]: int(line.split()[-1]) for line in forced.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[-1].isdigit()}
    expected = (len(study.runs), len(study.nll_targets()), len(study.augmentation_targets()))
    assert (counts.get("train"), counts.get("nll"), counts.get("augment")) == expected, forced.stdout
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""
