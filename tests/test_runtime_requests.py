"""Time requests a cluster scheduler accepts: estimated from the epochs measured in the README's "Speed" section,
and never above the config's cap (``max_runtime_minutes``), retries included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from evae.config import TrainConfig
from evae.study import MAX_RUNTIME_MINUTES, Study, load_config, prior_images_per_step, train_epoch_seconds
from tests.conftest import REPO
from tests.test_pipeline import env, make_workdir

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# README "Speed", one thread, MNIST (50,000 training images), batch 100: seconds an epoch of each model and prior,
# exemplar rows from trained weights where measured (where a minibatch's neighbours overlap least)
MEASURED = [
    ("vae", "gaussian", "exact", 5.4), ("vae", "vampprior", "exact", 17.8), ("vae", "exemplar", "knn", 52.6),
    ("vae", "exemplar", "exact", 648), ("hvae", "gaussian", "exact", 17.6), ("hvae", "vampprior", "exact", 33.8),
    ("hvae", "exemplar", "knn", 40.4), ("hvae", "exemplar", "exact", 448), ("convhvae", "gaussian", "exact", 735),
    ("convhvae", "vampprior", "exact", 1.84 * 735), ("convhvae", "exemplar", "knn", 2.28 * 735),
    ("convhvae", "exemplar", "exact", 56 * 735),
]


@pytest.mark.parametrize(("arch", "prior", "mode", "seconds"), MEASURED)
def test_epoch_estimate_is_at_least_the_measured_epoch_and_at_most_twice_it(arch, prior, mode, seconds):
    # at most twice: rows measured from initialisation retrieve fewer distinct neighbours than the estimate charges
    cfg = TrainConfig(dataset="mnist", architecture=arch, prior=prior, exemplar_mode=mode)
    assert seconds <= train_epoch_seconds(cfg) <= 2 * seconds


def test_images_the_prior_encodes_a_step():
    n = 50_000
    cfg = TrainConfig(dataset="mnist", prior="exemplar")
    assert prior_images_per_step(cfg) == pytest.approx(n * (1 - (1 - 1 / n) ** (n // 2)))  # ~19,700 distinct of M
    assert prior_images_per_step(cfg.replace(exemplar_subset=1.0)) == n  # all N, no draws
    assert prior_images_per_step(cfg.replace(exemplar_mode="knn")) == 100 * 11  # batch x (k + 1) at most
    assert prior_images_per_step(cfg.replace(prior="vampprior")) == 500
    assert prior_images_per_step(cfg.replace(prior="gaussian")) == 0


def paper_study(**changes) -> Study:
    return Study({**load_config(REPO / "config" / "config.yaml"), **changes})


def every_request(study: Study, attempt: int) -> list[int]:
    """Every time request of the study's training, NLL and augmentation jobs at attempt ``attempt``."""
    configs = [study.train_config(r.dataset, r.architecture, r.prior, r.seed) for r in study.runs]
    aug = study.config["augmentation"]
    return ([study.train_runtime_minutes(cfg, attempt) for cfg in configs]
            + [study.nll_runtime_minutes(cfg, attempt) for cfg in configs]
            + [study.augment_runtime_minutes(d, h, a, attempt) for d in aug["datasets"] for h in aug["hidden"]
               for a in ("none", "exemplar")])


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_no_request_of_the_paper_profile_exceeds_the_cap_at_any_attempt(attempt):
    study = paper_study()
    assert study.max_runtime_minutes == MAX_RUNTIME_MINUTES == 2880
    assert max(every_request(study, attempt)) == study.max_runtime_minutes  # the longest jobs get the cap
    assert max(every_request(paper_study(max_runtime_minutes=600), attempt)) == 600


def test_a_retry_asks_for_more_time_within_the_cap():
    study = paper_study()
    short = study.train_config("mnist", "vae", "gaussian", 0)
    first, second = study.train_runtime_minutes(short, 1), study.train_runtime_minutes(short, 2)
    assert abs(second - 2 * first) <= 1 and second < study.max_runtime_minutes  # (minutes are rounded up)
    long = study.train_config("mnist", "vae", "exemplar", 0)  # exact mode: ~22 days on one CPU thread
    assert study.train_runtime_minutes(long, 1) == study.train_runtime_minutes(long, 2) == study.max_runtime_minutes


# Loads the workflow through Snakemake's API (in a process of its own: the API changes directory and logging) and
# prints, for attempts 1-3, the largest runtime each rule's resource gives over every job of the study.
RULE_RUNTIMES = """
import json, types
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    workflow = api.workflow(ResourceSettings(), ConfigSettings(), StorageSettings(), snakefile=Path("Snakefile"))._workflow
    study, aug = workflow.globals["STUDY"], workflow.globals["config"]["augmentation"]
    runs = [dict(dataset=r.dataset, architecture=r.architecture, prior=r.prior, seed=str(r.seed)) for r in study.runs]
    jobs = {"train": runs, "nll": runs, "knn": runs[:1], "table": [dict(table="nll")],
            "augment": [dict(dataset=d, hidden=str(h), augment=a, seed=str(s)) for d in aug["datasets"]
                        for h in aug["hidden"] for a in ("none", "exemplar") for s in aug["seeds"]]}
    maxima = {}
    for rule in workflow.rules:
        if rule.name == "all":
            continue
        wildcards = jobs.get(rule.name, [dict(dataset=study.runs[0].dataset, figure="tsne")])
        maxima[rule.name] = [max(rule.resources["runtime"].evaluate(types.SimpleNamespace(**w), attempt=a).value
                                 for w in wildcards) for a in (1, 2, 3)]
    print(json.dumps(maxima))
"""


def test_no_rule_asks_the_scheduler_for_more_than_the_cap_at_any_attempt(tmp_path):
    """Every rule's runtime resource, for every job of the paper profile and at the retries a time-limit kill brings
    (Snakemake evaluates attempt 2 only after a failure, so a dry run shows attempt 1 alone)."""
    workdir = make_workdir(tmp_path)
    proc = subprocess.run([sys.executable, "-c", RULE_RUNTIMES], cwd=workdir, env=env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    maxima = json.loads(proc.stdout.splitlines()[-1])
    assert {"train", "nll", "knn", "augment", "table", "model_figure", "prepare_data"} <= set(maxima)
    assert max(max(m) for m in maxima.values()) == MAX_RUNTIME_MINUTES, maxima
    assert maxima["train"] == [MAX_RUNTIME_MINUTES] * 3  # the longest training jobs get the cap at every attempt


def test_the_schema_takes_a_cap_of_an_hour_or_more():
    config = load_config(REPO / "config" / "config.yaml")
    validate(config, str(SCHEMA))
    with pytest.raises(WorkflowError, match="max_runtime_minutes"):
        validate({**config, "max_runtime_minutes": 30}, str(SCHEMA))  # below the fixed request of a figure job
