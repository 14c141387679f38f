"""Reported-vs-reproduced tables: one row per (dataset, architecture, prior) of a paper table.

Each reproduced number is the mean over the study's seeds, next to the paper's mean +- std, with
the difference (reproduced - reported), a status and the provenance that says how it was made.
Status is "within 2 sigma" when |difference| <= 2 sqrt(std_reported^2 + std_reproduced^2)
(std over seeds; with one seed, that run's own standard error where it has one), "off" otherwise,
and "not run" for rows the study did not reproduce. Rows of a smoke or reduced-budget study say so
in the ``profile`` column, and the Markdown rendering says so, with the profile's label, in its title
and in every row. Stand-in datasets are compared with the paper column the dataset registry names.

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

COLUMNS = [
    "dataset", "architecture", "prior", "metric", "reported_mean", "reported_std", "reproduced_mean",
    "reproduced_std", "n_seeds", "difference", "status", "profile", "data_used", "epochs_trained",
    "importance_samples", "exemplar_training", "config_hash", "note",
]
KEY = ["dataset", "architecture", "prior"]


def paper_column(dataset: str) -> str:
    return get_spec(dataset).paper_column


def load_reported(path: str | Path, table: str) -> pd.DataFrame:
    """The paper's numbers of one table (the project's copy of reported.csv)."""
    df = pd.read_csv(path)
    df = df[df["table"] == table].drop(columns="table")
    return df.rename(columns={"value": "reported_mean", "std": "reported_std"})


def records(kind: str, paths: list[str | Path]) -> pd.DataFrame:
    """One row per result JSON: the table key, the seed, the value in the paper's metric, provenance."""
    extract = {"nll": _nll_record, "knn": _knn_record, "augmentation": _augmentation_record, "nll_bits": _bits_record}[kind]
    rows = [extract(read_result(p)) for p in paths]  # each checked against its folder's checksum record
    return pd.DataFrame(
        rows, columns=[*KEY, "data_used", "seed", "value", "sem", "epochs", "samples", "exemplar_training", "config_hash"]
    )


def exemplar_training(cfg: dict) -> str:
    """How an exemplar prior was trained (the paper: exact with M = N/2 for the MLP models, 10NN for the
    ConvHVAE); empty for the other priors."""
    if cfg.get("prior") != "exemplar" or "exemplar_mode" not in cfg:
        return ""
    if cfg["exemplar_mode"] == "knn":
        return f"kNN, k={cfg['exemplar_k']}"
    return "exact, M=N" if cfg["exemplar_subset"] >= 1 else f"exact, M={cfg['exemplar_subset']:g}N"


def _run_key(run: dict) -> dict:
    """Key and provenance of the trained run an evaluation JSON names (its ``run`` record)."""
    cfg = run["config"]
    return {
        "dataset": paper_column(cfg["dataset"]),
        "architecture": cfg["architecture"],
        "prior": cfg["prior"],
        "data_used": cfg["dataset"],
        "seed": cfg["seed"],
        "epochs": run["epochs_trained"],
        "exemplar_training": exemplar_training(cfg),
        "config_hash": run["config_digest"],
    }


def _nll_record(result: dict) -> dict:
    # The paper reports the test log-likelihood, i.e. minus the NLL.
    return {**_run_key(result["run"]), "value": -result["nll"], "sem": result["nll_stderr"], "samples": result["samples"]}


def _bits_record(result: dict) -> dict:
    """Colour datasets: NLL in bits per dimension (the paper reports none, so nothing is negated)."""
    dims = result["nll"] / result["nll_bits_per_dim"]
    return {**_run_key(result["run"]), "value": result["nll_bits_per_dim"], "sem": result["nll_stderr"] / dims,
            "samples": result["samples"]}


def _knn_record(result: dict) -> dict:
    return {**_run_key(result["run"]), "value": result["latent"]["test_error"], "sem": math.nan, "samples": None}


def _augmentation_record(result: dict) -> dict:
    run = result["run"]
    return {
        "dataset": paper_column(result["dataset"]),
        "architecture": f"mlp_2x{result['classifier']['hidden']}",
        "prior": "none" if result["augmentation"] is None else "exemplar",
        "data_used": result["dataset"],
        "seed": result["seed"],
        "value": result["test_error"],
        "sem": math.nan,
        "epochs": result["classifier"]["epochs"],
        "samples": None,
        "exemplar_training": exemplar_training(run["config"]) if run else "",
        "config_hash": run["config_digest"] if run else "",
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
    (dataset, arch, prior)."""
    reported = load_reported(reported_path, name or kind)
    runs = records(kind, result_paths)
    reproduced = [_summarise(group) for _, group in runs.groupby(KEY, sort=False)] if len(runs) else []
    rep = pd.DataFrame(reproduced, columns=[*KEY, "reproduced_mean", "reproduced_std", "n_seeds", "sigma_run",
                                            "data_used", "epochs_trained", "importance_samples", "exemplar_training",
                                            "config_hash"])
    if kind == "augmentation":
        reported = _match_unknown_widths(reported, rep)
    # the paper's row order, rows it does not report after them (an outer merge would sort by key)
    reported = reported.assign(_order=range(len(reported)))
    table = reported.merge(rep, on=KEY, how="outer").sort_values("_order", kind="stable", na_position="last")
    table["metric"] = table["metric"].fillna(_METRIC[kind])
    table["difference"] = table["reproduced_mean"] - table["reported_mean"]
    table["status"] = [_status(r) for r in table.itertuples()]
    table["profile"] = np.where(table["n_seeds"].notna(), profile, "")
    table["note"] = table["note"].fillna("")
    return table[COLUMNS].reset_index(drop=True)


def _summarise(group: pd.DataFrame) -> dict:
    n = len(group)
    return {
        **dict(zip(KEY, group.iloc[0][KEY])),
        "reproduced_mean": group["value"].mean(),
        "reproduced_std": group["value"].std(ddof=1) if n > 1 else math.nan,
        "n_seeds": n,
        "sigma_run": group["sem"].iloc[0] if n == 1 else math.nan,
        "data_used": ",".join(sorted(set(group["data_used"]))),
        "epochs_trained": _span(group["epochs"]),
        "importance_samples": _span(group["samples"].dropna()) if group["samples"].notna().any() else "",
        "exemplar_training": ",".join(sorted(set(group["exemplar_training"]) - {""})),
        "config_hash": ",".join(sorted(set(group["config_hash"]))),
    }


def _span(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _status(row) -> str:
    if pd.isna(row.reproduced_mean):
        return "not run"
    if pd.isna(row.reported_mean):
        return "no reported value"
    spread = row.reproduced_std if not pd.isna(row.reproduced_std) else row.sigma_run
    sigma = math.hypot(*(0.0 if pd.isna(v) else v for v in (row.reported_std, spread)))
    return "within 2 sigma" if abs(row.difference) <= 2 * sigma else "off"


def _match_unknown_widths(reported: pd.DataFrame, reproduced: pd.DataFrame) -> pd.DataFrame:
    """The paper gives Fashion-MNIST's augmentation result without a width ("mlp"): compare every
    width reproduced for that dataset with it, and say so in the note."""
    rows = []
    for row in reported.itertuples(index=False):
        widths = reproduced[(reproduced["dataset"] == row.dataset) & reproduced["architecture"].str.startswith("mlp_")]
        if row.architecture == "mlp" and len(widths):
            for arch in sorted(set(widths["architecture"])):
                rows.append({**row._asdict(), "architecture": arch, "note": f"{row.note}; compared with width {arch}"})
        else:
            rows.append(row._asdict())
    return pd.DataFrame(rows, columns=reported.columns)


def to_markdown(table: pd.DataFrame, name: str, profile: str, label: str) -> str:
    """A Markdown rendering of table ``name``; rows not made with the paper's protocol are marked with the
    profile's ``label`` in the title and each row."""
    title = f"# {name} table: reported vs reproduced ({label})"
    lines = [title, ""]
    if profile != "paper":
        lines += [
            f"**{label} run: the reproduced numbers come from a {profile} study (see `profile`, "
            "`data_used`, `epochs_trained`) and are not comparable with the paper's.**",
            "",
        ]
    shown = table.copy()
    shown["reported"] = [_pm(m, s) for m, s in zip(shown["reported_mean"], shown["reported_std"])]
    shown["reproduced"] = [_pm(m, s) for m, s in zip(shown["reproduced_mean"], shown["reproduced_std"])]
    shown["difference"] = [("" if pd.isna(d) else f"{d:+.2f}") for d in shown["difference"]]
    shown["n_seeds"] = [("" if pd.isna(n) else str(int(n))) for n in shown["n_seeds"]]
    shown["profile"] = [label if p == profile else "" for p in shown["profile"]]
    cols = ["dataset", "architecture", "prior", "reported", "reproduced", "n_seeds", "difference", "status",
            "profile", "data_used", "epochs_trained", "importance_samples", "exemplar_training", "config_hash", "note"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for row in shown[cols].itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    lines += ["", f"Metric: {table['metric'].iloc[0] if len(table) else ''}. Difference = reproduced - reported. "
              "Status: within 2 sigma when |difference| <= 2 sqrt(std_reported^2 + std_reproduced^2)."]
    return "\n".join(lines) + "\n"


def _pm(mean, std) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} +- {std:.2f}"
