"""Reported-vs-reproduced tables: one row per (dataset, architecture, prior) of a paper table.

Each reproduced number is the mean over the study's seeds, next to the paper's mean +- std, with
the difference (reproduced - reported), a status and the provenance that says how it was made:
each run's epochs trained, its best-validation (early-stopping) epoch and the number of segments it
was trained in (a note names the commits, hosts and devices where a run's segments differ).
A dataset that stands in for the paper's (the registry's ``stand_in``, e.g. ``omniglot_raw28`` for the
paper's Omniglot) sits beside the paper column the registry names, but its rows are not compared with
the paper's numbers: no difference, no sigma, a status that says STAND-IN, and a note that says how its
images were made. Data that differ from the paper's give other absolute values; what the paper's
claims say of them, the order of the priors, is tested in the claims table (`evae.report.claims`).
A kNN row names the labels its probe classified (the dataset's provenance), where the results record them.

Status compares like with like: the paper's number is a mean over ``PAPER_SEEDS`` = 5 training
runs with std s_p (docs/protocol.md section 5 says so for the NLL; the kNN and augmentation tables give a
std without a count, taken as 5 too), ours a mean over n seeds with std s_o. Their difference has
standard error

    sigma = sqrt(s_p^2 / 5 + s_o^2 / n),

and the row is "within 2 sigma" when |difference| <= 2 sigma, "off" otherwise. One side's missing
spread is taken from the other: with one seed, ours has no spread over training, so s_p stands in
for s_o (a single model against the paper's distribution of models, sigma = s_p sqrt(1 + 1/5)); where
the paper gives no std, s_o stands in for s_p; with neither, the status is "no spread to compare".
The status says in parentheses when fewer seeds than the paper's were run ("within 2 sigma (1 seed)")
and when the paper's std was missing. Standard errors over test images are not part of sigma: both
means are over the same test images, and what separates two trained models on them is the spread
over seeds. Rows the study did not reproduce are "not run"; rows the paper does not report, "no
reported value".

Rows of a study other than the paper protocol say so in the ``profile`` column, and the Markdown
rendering says so, with the profile's label (`evae.study.KIND`), in its title, in a notice of how
its numbers stand to the paper's (`evae.study.NOTICE`) and in every row.

Kinds of table: ``nll`` (test log-likelihood in nats), ``knn``, ``augmentation`` (the paper's three)
and ``nll_bits`` (test NLL in bits per dimension, for colour datasets).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from evae.data.registry import get_spec
from evae.runs import read_result
from evae.study import KIND, NOTICE

PAPER_SEEDS = 5
COLUMNS = [
    "dataset", "architecture", "prior", "metric", "reported_mean", "reported_std", "reproduced_mean",
    "reproduced_std", "n_seeds", "difference", "sigma", "status", "profile", "data_used", "epochs_trained",
    "best_epoch", "segments", "importance_samples", "exemplar_training", "config_hash", "note",
]
KEY = ["dataset", "architecture", "prior"]
UNKNOWN_WIDTH = "mlp"  # reported.csv's architecture of a classifier whose width the paper does not give
RECORD = [*KEY, "data_used", "seed", "value", "epochs", "best_epoch", "segments", "segment_note", "samples",
          "exemplar_training", "config_hash", "stand_in", "labels"]


def paper_column(dataset: str) -> str:
    return get_spec(dataset).paper_column


def stand_in_note(dataset: str, data: dict | None) -> str:
    """What a stand-in dataset's images are and how they were made: its provenance's ``split`` where that says
    STAND-IN, else the registry's ``stand_in`` text followed by it; "" for the paper's own data."""
    spec = get_spec(dataset)
    if not spec.stand_in:
        return ""
    split = (data or {}).get("split", "")
    return split if "STAND-IN" in split else f"STAND-IN ({spec.stand_in})" + (f": {split}" if split else "")


def load_reported(path: str | Path, table: str) -> pd.DataFrame:
    """The paper's numbers of one table (the project's copy of reported.csv)."""
    df = pd.read_csv(path)
    df = df[df["table"] == table].drop(columns="table")
    return df.rename(columns={"value": "reported_mean", "std": "reported_std"})


def records(kind: str, paths: list[str | Path]) -> pd.DataFrame:
    """One row per result JSON: the table key, the seed, the value in the paper's metric, provenance."""
    extract = {"nll": _nll_record, "knn": _knn_record, "augmentation": _augmentation_record, "nll_bits": _bits_record}[kind]
    rows = [extract(read_result(p)) for p in paths]  # each checked against its folder's checksum record
    return pd.DataFrame(rows, columns=RECORD).astype({"epochs": object, "best_epoch": object, "segments": object})


def exemplar_training(cfg: dict) -> str:
    """How an exemplar prior was trained (the paper: exact with M = N/2 for the MLP models, 10NN for the
    ConvHVAE); empty for the other priors."""
    if cfg.get("prior") != "exemplar" or "exemplar_mode" not in cfg:
        return ""
    if cfg["exemplar_mode"] == "knn":
        return f"kNN, k={cfg['exemplar_k']}"
    return "exact, M=N" if cfg["exemplar_subset"] >= 1 else f"exact, M={cfg['exemplar_subset']:g}N"


def segments(recorded: list[dict] | None) -> tuple[int | None, str]:
    """How many segments a run was trained in (None when its summary predates their record), and what
    differs between them: the commits, hosts and devices, where there is more than one of a kind."""
    if recorded is None:
        return None, ""
    done = [s for s in recorded if s.get("last_epoch") is not None]  # a process killed before its first epoch
    differ = []
    for key, what in (("git_commit", "commits"), ("host", "hosts"), ("device_name", "devices")):
        values = list(dict.fromkeys(_short(s[key]) if key == "git_commit" else s[key] for s in done if s.get(key)))
        if len(values) > 1:
            differ.append(f"{what} {', '.join(values)}")
    return len(done), "; ".join(differ)


def _short(commit: str) -> str:
    """A git commit as its first 12 digits, keeping a ``+dirty`` mark."""
    head, plus, rest = commit.partition("+")
    return (head[:12] if len(head) == 40 else head) + plus + rest


def _run_key(result: dict) -> dict:
    """Key and provenance of the trained run an evaluation JSON names (its ``run`` record) and of its data."""
    run = result["run"]
    cfg = run["config"]
    count, differ = segments(run.get("segments"))
    return {
        "dataset": paper_column(cfg["dataset"]),
        "architecture": cfg["architecture"],
        "prior": cfg["prior"],
        "data_used": cfg["dataset"],
        "seed": cfg["seed"],
        "epochs": run["epochs_trained"],
        "best_epoch": run["best_epoch"],
        "segments": count,
        "segment_note": f"seed{cfg['seed']} trained in {count} segments: {differ}" if differ else "",
        "exemplar_training": exemplar_training(cfg),
        "config_hash": run["config_digest"],
        "stand_in": stand_in_note(cfg["dataset"], result.get("data")),
        "labels": "",
    }


def _nll_record(result: dict) -> dict:
    # The paper reports the test log-likelihood, i.e. minus the NLL.
    return {**_run_key(result), "value": -result["nll"], "samples": result["samples"]}


def _bits_record(result: dict) -> dict:
    """Colour datasets: NLL in bits per dimension (the paper reports none, so nothing is negated)."""
    return {**_run_key(result), "value": result["nll_bits_per_dim"], "samples": result["samples"]}


def _knn_record(result: dict) -> dict:
    return {**_run_key(result), "value": result["latent"]["test_error"], "samples": None,
            "labels": result.get("labels") or ""}


def _augmentation_record(result: dict) -> dict:
    """A classifier's test error; its seed is the classifier's (the augmenting model is the same for every seed)."""
    run = result["run"]
    return {
        "dataset": paper_column(result["dataset"]),
        "architecture": f"mlp_2x{result['classifier']['hidden']}",
        "prior": "none" if result["augmentation"] is None else "exemplar",
        "data_used": result["dataset"],
        "seed": result["seed"],
        "value": result["test_error"],
        "epochs": result["classifier"]["epochs"],
        "best_epoch": None,
        "segments": None,
        "segment_note": "",
        "samples": None,
        "exemplar_training": exemplar_training(run["config"]) if run else "",
        "config_hash": run["config_digest"] if run else "",
        "stand_in": stand_in_note(result["dataset"], result.get("data")),
        "labels": "",
    }


_METRIC = {
    "nll": "test_log_likelihood_nats",
    "knn": "knn_test_error_percent",
    "augmentation": "test_error_percent",
    "nll_bits": "test_nll_bits_per_dim",
}


def compile_table(
    kind: str, result_paths: list[str | Path], reported_path: str | Path, profile: str, name: str | None = None
) -> pd.DataFrame:
    """Every reported row of table ``name`` (default: ``kind``) plus every reproduced one, matched on
    (dataset, arch, prior); each reproduced row is one dataset's (``data_used``) mean over the seeds it has."""
    reported = load_reported(reported_path, name or kind)
    runs = records(kind, result_paths)
    groups = runs.groupby([*KEY, "data_used"], sort=False) if len(runs) else []
    rep = pd.DataFrame([_summarise(group) for _, group in groups],
                       columns=[*KEY, "reproduced_mean", "reproduced_std", "n_seeds", "data_used", "epochs_trained",
                                "best_epoch", "segments", "importance_samples", "exemplar_training", "config_hash",
                                "stand_in", "run_note"])
    if kind == "augmentation":
        reported = _match_unknown_widths(reported, rep)
    # the paper's row order, rows it does not report after them in the study's order (an outer merge sorts by key)
    reported, rep = reported.assign(_order=range(len(reported))), rep.assign(_found=range(len(rep)))
    table = reported.merge(rep, on=KEY, how="outer").sort_values(["_order", "_found"], kind="stable",
                                                                 na_position="last")
    table["metric"] = table["metric"].fillna(_METRIC[kind])
    table["difference"] = table["reproduced_mean"] - table["reported_mean"]
    table["sigma"] = [sigma(r.reported_std, r.reproduced_std, r.n_seeds) for r in table.itertuples()]
    table["status"] = [status(r.reported_mean, r.reproduced_mean, r.difference, r.sigma, r.n_seeds, r.reported_std)
                       for r in table.itertuples()]
    stand_in = table["stand_in"].fillna("") != ""
    table.loc[stand_in, ["difference", "sigma"]] = math.nan
    table.loc[stand_in, "status"] = [stand_in_status(r.reported_mean, r.n_seeds) for r in table[stand_in].itertuples()]
    table["profile"] = np.where(table["n_seeds"].notna(), profile, "")
    table["note"] = ["; ".join(n for n in notes if isinstance(n, str) and n)
                     for notes in zip(table["note"], table["run_note"], table["stand_in"])]
    return table[COLUMNS].reset_index(drop=True)


def sigma(reported_std: float, reproduced_std: float, n_seeds: float) -> float:
    """The standard error of (our mean over ``n_seeds`` - the paper's mean over ``PAPER_SEEDS``); a side
    without a spread takes the other's (NaN when neither has one, or nothing was reproduced)."""
    if pd.isna(n_seeds):
        return math.nan
    ours = reproduced_std if n_seeds > 1 and not pd.isna(reproduced_std) else reported_std
    paper = reported_std if not pd.isna(reported_std) else ours
    return math.sqrt(paper**2 / PAPER_SEEDS + ours**2 / n_seeds)


def status(reported_mean: float, reproduced_mean: float, difference: float, se: float, n_seeds: float,
           reported_std: float) -> str:
    """Whether our mean lies within 2 standard errors ``se`` (`sigma`) of the paper's, saying what the
    comparison rests on."""
    if pd.isna(reproduced_mean):
        return "not run"
    if pd.isna(reported_mean):
        return "no reported value"
    n = int(n_seeds)
    caveats = ([f"{n} seed{'s' if n > 1 else ''}"] if n < PAPER_SEEDS else []) + (
        ["paper gives no std"] if pd.isna(reported_std) else [])
    if pd.isna(se):
        return f"no spread to compare ({'; '.join(caveats)})"
    verdict = "within 2 sigma" if abs(difference) <= 2 * se else "off"
    return f"{verdict} ({'; '.join(caveats)})" if caveats else verdict


def stand_in_status(reported_mean: float, n_seeds: float) -> str:
    """The status of a row of stand-in data: never agreement or disagreement with the paper's number."""
    if pd.isna(reported_mean):
        return "no reported value (STAND-IN data)"
    n = int(n_seeds)
    return f"STAND-IN data: not compared with the paper's value ({n} seed{'s' if n > 1 else ''})"


def _summarise(group: pd.DataFrame) -> dict:
    group = group.sort_values("seed", kind="stable")
    n = len(group)
    return {
        **dict(zip(KEY, group.iloc[0][KEY])),
        "reproduced_mean": group["value"].mean(),
        "reproduced_std": group["value"].std(ddof=1) if n > 1 else math.nan,
        "n_seeds": n,
        "data_used": ",".join(sorted(set(group["data_used"]))),
        "epochs_trained": per_seed(group["seed"], group["epochs"]),
        "best_epoch": per_seed(group["seed"], group["best_epoch"]),
        "segments": per_seed(group["seed"], group["segments"]),
        "importance_samples": _span(group["samples"].dropna()) if group["samples"].notna().any() else "",
        "exemplar_training": ",".join(sorted(set(group["exemplar_training"]) - {""})),
        "config_hash": ",".join(sorted(set(group["config_hash"]))),
        "stand_in": "; ".join(dict.fromkeys(n for n in group["stand_in"] if n)),
        "run_note": ". ".join([*(f"kNN labels: {labels}" for labels in dict.fromkeys(group["labels"]) if labels),
                               *(n for n in group["segment_note"] if n)]),
    }


def per_seed(seeds: pd.Series, values: pd.Series) -> str:
    """A whole-number provenance value of each seed's run: one number when every run has the same ("100"),
    each seed's otherwise ("seed0: 900; seed1: 1000", "?" where a run has none); "" when none has one."""
    shown = ["?" if v is None or pd.isna(v) else str(int(v)) for v in values]
    if set(shown) == {"?"}:
        return ""
    if len(set(shown)) == 1:
        return shown[0]
    return "; ".join(f"seed{s}: {v}" for s, v in zip(seeds, shown))


def _span(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _match_unknown_widths(reported: pd.DataFrame, reproduced: pd.DataFrame) -> pd.DataFrame:
    """The paper gives Fashion-MNIST's augmentation result without a width ("mlp"): compare every
    width reproduced for that dataset with it, and say so in the note."""
    rows = []
    for row in reported.itertuples(index=False):
        widths = reproduced[(reproduced["dataset"] == row.dataset) & reproduced["architecture"].str.startswith("mlp_")]
        if row.architecture == UNKNOWN_WIDTH and len(widths):
            for arch in sorted(set(widths["architecture"])):
                rows.append({**row._asdict(), "architecture": arch, "note": f"{row.note}; compared with width {arch}"})
        else:
            rows.append(row._asdict())
    return pd.DataFrame(rows, columns=reported.columns)


def heading(title: str, profile: str) -> list[str]:
    """A Markdown title naming the profile's label and, for a study other than the paper protocol, the
    notice of how its numbers stand to the paper's."""
    lines = [f"# {title} ({KIND[profile]})", ""]
    if NOTICE[profile]:
        lines += [f"**{KIND[profile]}: {NOTICE[profile]}**", ""]
    return lines


def markdown_rows(frame: pd.DataFrame) -> list[str]:
    """``frame`` as the lines of a Markdown table (empty cells for missing values)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return lines


def to_markdown(table: pd.DataFrame, name: str, profile: str) -> str:
    """A Markdown rendering of table ``name`` of a study of ``profile``; rows not made with the paper's
    protocol carry the profile's label."""
    label = KIND[profile]
    shown = table.copy()
    shown["reported"] = [_pm(m, s) for m, s in zip(shown["reported_mean"], shown["reported_std"])]
    shown["reproduced"] = [_pm(m, s) for m, s in zip(shown["reproduced_mean"], shown["reproduced_std"])]
    shown["difference"] = [("" if pd.isna(d) else f"{d:+.2f}") for d in shown["difference"]]
    shown["sigma"] = [("" if pd.isna(s) else f"{s:.2f}") for s in shown["sigma"]]
    shown["n_seeds"] = [("" if pd.isna(n) else str(int(n))) for n in shown["n_seeds"]]
    shown["profile"] = [label if p == profile else "" for p in shown["profile"]]
    cols = ["dataset", "architecture", "prior", "reported", "reproduced", "n_seeds", "difference", "sigma", "status",
            "profile", "data_used", "epochs_trained", "best_epoch", "segments", "importance_samples",
            "exemplar_training", "config_hash", "note"]
    metric = table["metric"].iloc[0] if len(table) else ""
    lines = heading(f"{name} table: reported vs reproduced", profile) + markdown_rows(shown[cols])
    lines += ["", f"Metric: {metric}. Reported: the paper's mean +- std over its {PAPER_SEEDS} training runs; "
              "reproduced: ours over `n_seeds` seeds (one seed: no spread over training). Difference = reproduced - "
              f"reported; sigma = sqrt(std_reported^2/{PAPER_SEEDS} + std_reproduced^2/n_seeds), the standard error "
              "of that difference, one side's missing std taken from the other (with one seed, the paper's: a single "
              "model against the paper's distribution of models). Status: within 2 sigma when |difference| <= "
              "2 sigma, else off; in parentheses, fewer seeds than the paper's and a missing reported std. "
              "epochs_trained, best_epoch (the best-validation epoch whose weights are evaluated) and segments (the "
              "processes a run was trained in; blank: not recorded) are per run, seed by seed where they differ."]
    if (table["note"].str.contains("STAND-IN")).any():
        lines += ["", "STAND-IN rows (see their note) are of data that only stand in for the paper's: their absolute "
                  "values are not comparable with the paper's, so they get no difference, sigma or verdict; what "
                  "compares is the order of the priors (the claims table)."]
    return "\n".join(lines) + "\n"


def _pm(mean, std) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} +- {std:.2f}"
