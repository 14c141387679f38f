"""The paper's claims tested on a study's evaluation results: one row per claim, dataset and architecture.

A claim says that one prior (or training set) beats the others of the same dataset and architecture.
Its effect on one seed is that winner's margin over the best of the others, signed so that an effect
above 0 means the claim holds on that seed:

- exemplar NLL better than VampPrior: LL(exemplar) - LL(VampPrior), test log-likelihood in nats;
- VampPrior NLL better than Gaussian: LL(VampPrior) - LL(Gaussian);
- exemplar kNN error lowest: min(error(Gaussian), error(VampPrior)) - error(exemplar), in percentage points;
- exemplar augmentation lowers the classifier's error: error(no augmentation) - error(augmentation),
  one effect per classifier seed (the augmenting exemplar model is the same for every seed).

Seeds are paired: a seed has an effect when it has every result the claim compares, so where the
priors of one dataset and architecture were run with different seeds, only the seeds they share
count, and the row's note names the seeds left out. Next to ours
stands the paper's effect, the same margin of its means, with its spread sqrt(s_winner^2 +
s_runner_up^2): the std of one seed's effect were the paper's runs independent, comparable with the
std of ours. The verdict reads the signs of our effects: "holds on every seed", "reversed on every
seed", "tied on every seed", "mixed", or "not testable" where no seed has every result the claim
needs. It says nothing about the size of the effect, nor beyond the study's budget (its profile).
A dataset that stands in for the paper's (``evae.report.tables.stand_in_note``) gets its own rows, beside
the paper's effect on the paper's data: the signs, the order of the priors, are what compare.

Metrics are the pure functions `margin`, `verdict`, `seed_effects`, `paper_effect` and `evaluate_claim`;
`compile_claims` reads the results (verified, through `evae.report.tables.records`) and applies them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evae.report.tables import UNKNOWN_WIDTH, heading, load_reported, markdown_rows, records
from evae.study import KIND


@dataclass(frozen=True)
class Claim:
    """That ``winner`` beats every one of ``others`` in the values of a table of ``kind``."""

    text: str
    kind: str  # the table its values come from (`evae.report.tables`)
    winner: str
    others: tuple[str, ...]
    higher_is_better: bool
    effect: str  # the effect's definition, as the table shows it
    unit: str


CLAIMS = (
    Claim("exemplar NLL better than VampPrior", "nll", "exemplar", ("vampprior",), True,
          "LL(exemplar) - LL(vampprior)", "nats"),
    Claim("VampPrior NLL better than Gaussian", "nll", "vampprior", ("gaussian",), True,
          "LL(vampprior) - LL(gaussian)", "nats"),
    Claim("exemplar kNN error lowest", "knn", "exemplar", ("gaussian", "vampprior"), False,
          "min(error(gaussian), error(vampprior)) - error(exemplar)", "percentage points"),
    Claim("exemplar augmentation lowers the classifier's error", "augmentation", "exemplar", ("none",), False,
          "error(none) - error(exemplar)", "percentage points"),
)
COLUMNS = ["claim", "dataset", "architecture", "effect", "unit", "paper_effect", "paper_spread", "ours_by_seed",
           "ours_mean", "ours_std", "n_seeds", "verdict", "profile", "data_used", "note"]


def margin(winner: float, others: Sequence[float], higher_is_better: bool) -> float:
    """The winner's margin over the best of ``others`` (above 0: the winner is best)."""
    return winner - max(others) if higher_is_better else min(others) - winner


def verdict(effects: Sequence[float]) -> str:
    """What the signs of a claim's effects, one a seed, say about it."""
    if not effects:
        return "not testable"
    for word, holds in (("holds", lambda e: e > 0), ("reversed", lambda e: e < 0), ("tied", lambda e: e == 0)):
        if all(map(holds, effects)):
            return f"{word} on every seed"
    return "mixed"


def seed_effects(values: pd.DataFrame, claim: Claim) -> dict[int, float]:
    """Each seed's effect, from ``values`` (columns ``prior``, ``seed``, ``value``) of one dataset and
    architecture; seeds without every compared result are left out."""
    by_seed = values.set_index(["seed", "prior"])["value"]
    if by_seed.index.has_duplicates:
        twice = by_seed.index[by_seed.index.duplicated()].tolist()
        raise ValueError(f"{claim.text}: more than one result of a (seed, prior): {twice}")
    effects = {}
    for seed in sorted(set(values["seed"])):
        found = by_seed.loc[seed]
        if all(p in found.index for p in (claim.winner, *claim.others)):
            effects[int(seed)] = margin(found[claim.winner], [found[p] for p in claim.others], claim.higher_is_better)
    return effects


def paper_effect(reported: pd.DataFrame, claim: Claim) -> tuple[float, float]:
    """The paper's effect and its spread, from its rows (``prior``, ``reported_mean``, ``reported_std``) of
    one dataset and architecture; NaN where the paper lacks a number."""
    rows = reported.set_index("prior")
    if not all(p in rows.index for p in (claim.winner, *claim.others)):
        return math.nan, math.nan
    means = rows["reported_mean"]
    effect = margin(means[claim.winner], [means[p] for p in claim.others], claim.higher_is_better)
    best = (max if claim.higher_is_better else min)(claim.others, key=lambda p: means[p])
    return effect, math.hypot(rows.at[claim.winner, "reported_std"], rows.at[best, "reported_std"])


def evaluate_claim(claim: Claim, values: pd.DataFrame, reported: pd.DataFrame) -> dict:
    """One row of the claims table: ``claim`` on our ``values`` and the paper's ``reported`` rows of one
    dataset and architecture (without profile, data used and notes)."""
    effects = seed_effects(values, claim)
    ours = list(effects.values())
    paper, spread = paper_effect(reported, claim)
    return {
        "claim": claim.text, "effect": claim.effect, "unit": claim.unit, "paper_effect": paper, "paper_spread": spread,
        "ours_by_seed": "; ".join(f"seed{s}: {e:+.2f}" for s, e in effects.items()),
        "ours_mean": sum(ours) / len(ours) if ours else math.nan,
        "ours_std": pd.Series(ours).std(ddof=1) if len(ours) > 1 else math.nan,
        "n_seeds": len(ours), "verdict": verdict(ours),
    }


def compile_claims(results: Mapping[str, Sequence[str | Path]], reported_path: str | Path,
                   profile: str) -> pd.DataFrame:
    """Every claim on every dataset and architecture of ``results`` (evaluation JSONs by table kind: ``nll``,
    ``knn``, ``augmentation``)."""
    found = {kind: records(kind, list(paths)) for kind, paths in results.items()}
    rows = []
    for claim in CLAIMS:
        values = found.get(claim.kind)
        if values is None or values.empty:
            continue
        reported = load_reported(reported_path, claim.kind)
        for (dataset, architecture, data_used), group in values.groupby(["dataset", "architecture", "data_used"],
                                                                        sort=False):
            paper, width_unknown = _paper_rows(reported, dataset, architecture)
            row = evaluate_claim(claim, group, paper)
            rows.append({**row, "dataset": dataset, "architecture": architecture, "profile": profile,
                         "data_used": data_used, "note": _note(claim, group, row["verdict"], width_unknown)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _paper_rows(reported: pd.DataFrame, dataset: str, architecture: str) -> tuple[pd.DataFrame, bool]:
    """The paper's rows of one dataset and architecture, and whether they are those of a classifier whose
    width the paper does not give (its Fashion-MNIST augmentation, compared with every width)."""
    rows = reported[(reported["dataset"] == dataset) & (reported["architecture"] == architecture)]
    if rows.empty and architecture.startswith("mlp_"):
        unknown = reported[(reported["dataset"] == dataset) & (reported["architecture"] == UNKNOWN_WIDTH)]
        return unknown, not unknown.empty
    return rows, False


def _note(claim: Claim, group: pd.DataFrame, found: str, width_unknown: bool) -> str:
    """What a reader needs besides the numbers: which results are missing, what the seeds are."""
    notes = [n for n in dict.fromkeys(group["stand_in"]) if n]
    if notes:
        notes.append("the paper's effect is on its own data: only the sign, the order of the priors, compares")
    if found == "not testable":
        missing = [p for p in (claim.winner, *claim.others) if p not in set(group["prior"])]
        notes.append(f"no {', '.join(missing)} result" if missing else "no seed has every result compared")
    else:
        compared = group[group["prior"].isin((claim.winner, *claim.others))]
        complete = compared.groupby("seed")["prior"].nunique() == 1 + len(claim.others)
        if not complete.all():
            left = ", ".join(f"seed{s}" for s in complete.index[~complete])
            notes.append(f"{left} left out: not every compared result has it (seeds are paired)")
    if claim.kind == "augmentation":
        model = group.loc[group["prior"] == "exemplar", ["config_hash", "exemplar_training"]].drop_duplicates()
        named = "; ".join(f"config {h}, {t}" for h, t in model.itertuples(index=False))
        notes.append("seeds are the classifier's" + (f"; the augmenting exemplar model ({named}) is the same for "
                                                      "every seed" if named else ""))
    if width_unknown:
        notes.append("the paper's classifier width is not known")
    return "; ".join(notes)


def to_markdown(claims: pd.DataFrame, profile: str) -> str:
    """The claims table in Markdown, every verdict naming its number of seeds and the profile's label."""
    label = KIND[profile]
    shown = claims.copy()
    shown["paper"] = [_signed(e, s) for e, s in zip(shown["paper_effect"], shown["paper_spread"])]
    shown["ours"] = [_signed(m, s) for m, s in zip(shown["ours_mean"], shown["ours_std"])]
    shown["verdict"] = [v if v == "not testable" else f"{v} ({n} seed{'s' if n > 1 else ''}, {label})"
                        for v, n in zip(shown["verdict"], shown["n_seeds"])]
    cols = ["claim", "dataset", "architecture", "effect", "unit", "paper", "ours_by_seed", "ours", "n_seeds",
            "verdict", "data_used", "note"]
    lines = heading("The paper's claims on our results", profile) + markdown_rows(shown[cols])
    lines += ["", "Effect: the claimed winner's margin over the best of the others, above 0 when the claim holds "
              "(LL: test log-likelihood; error: test error in %, margins in percentage points). Paper: the margin "
              "of its means +- sqrt(s_winner^2 + s_runner_up^2), the std of one seed's effect were its runs "
              "independent. Ours: each seed's effect "
              "(seeds paired: the same training seed, or for augmentation the same classifier seed), their mean +- "
              "std. Verdict: the signs of our effects on the seeds run; it does not weigh the effects' size, and "
              "holds at this study's budget only."]
    return "\n".join(lines) + "\n"


def _signed(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:+.2f}" if pd.isna(std) else f"{mean:+.2f} +- {std:.2f}"
