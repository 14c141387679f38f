"""How far each training run of a study has come, read from its run folder (nothing is changed).

    python -m evae status --configfile config/mnist_full.yaml

A run is *finished* once its summary.json says it will not train further (early stopping, or
``max_epochs`` reached at the config's value), *unfinished* while only its checkpoint.pt exists, and
*not started* without either. For an unfinished run the time left is a range: from the earliest
early stop (no new best validation loss from now on) to ``max_epochs``, at the seconds an epoch of its
recent epochs (on the machine that trained them, named in its last segment).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from evae import runs
from evae.config import TrainConfig
from evae.runs import CHECKPOINT, SUMMARY

RECENT_EPOCHS = 20  # seconds an epoch: the median over this many last epochs


@dataclass(frozen=True)
class Progress:
    """One run's progress (``None`` where a run has no such figure yet)."""

    run: str
    state: str  # "finished: <stop reason>", "unfinished" or "not started"
    epoch: int
    max_epochs: int
    best_val: float | None = None
    best_epoch: int | None = None
    patience_left: int | None = None
    seconds_per_epoch: float | None = None
    epochs_left: tuple[int, int] | None = None  # (earliest early stop, max_epochs), counted from ``epoch``
    segments: int = 0  # 0: not started, or trained before runs recorded their segments
    host: str | None = None  # the device (CPU model or GPU name) of the last segment

    @property
    def finished(self) -> bool:
        return self.state.startswith("finished")

    @property
    def seconds_left(self) -> tuple[float, float] | None:
        if self.epochs_left is None or self.seconds_per_epoch is None:
            return None
        return self.epochs_left[0] * self.seconds_per_epoch, self.epochs_left[1] * self.seconds_per_epoch


def epochs_left(epoch: int, bad_epochs: int, cfg: TrainConfig) -> tuple[int, int]:
    """Epochs still to train after ``epoch``: at least until early stopping could end the run (every epoch from
    now on without a new best; epochs before the warm-up's end do not count against patience), at most until
    ``max_epochs`` (``evae.train.loop.early_stopping``)."""
    first_counted = max(epoch + 1, cfg.warmup_epochs)
    earliest_stop = min(first_counted + cfg.patience - bad_epochs - 1, cfg.max_epochs)
    return earliest_stop - epoch, cfg.max_epochs - epoch


def run_progress(run_dir: str | Path, cfg: TrainConfig, key: str | None = None) -> Progress:
    """The progress of the run ``cfg`` in ``run_dir``, from its summary (finished) or checkpoint (unfinished)."""
    run_dir = Path(run_dir)
    key = key or str(run_dir)
    if (run_dir / SUMMARY).exists():
        summary = runs.read_summary(run_dir)
        if summary["stopped"] != "max_epochs" or summary["epochs_trained"] >= cfg.max_epochs:
            segments = summary.get("segments", [])
            return Progress(
                run=key, state=f"finished: {summary['stopped']}", epoch=summary["epochs_trained"],
                max_epochs=cfg.max_epochs, best_val=summary["best_val_loss"], best_epoch=summary["best_epoch"],
                seconds_per_epoch=summary["train_seconds"] / max(summary["epochs_trained"], 1), epochs_left=(0, 0),
                segments=len(segments), host=_machine(segments),
            )
    ckpt = runs.load_checkpoint(run_dir, cfg)  # verified against its checksum record and the run's trajectory
    if ckpt is None:
        return Progress(run=key, state="not started", epoch=0, max_epochs=cfg.max_epochs)
    state = ckpt["state"]
    recent = [row[runs.TIMING_COLUMNS.index("epoch_seconds")] for row in ckpt["timing"][-RECENT_EPOCHS:]]
    segments = state.get("segments", [])
    return Progress(
        run=key, state="unfinished", epoch=state["epoch"], max_epochs=cfg.max_epochs, best_val=state["best_val"],
        best_epoch=state["best_epoch"], patience_left=cfg.patience - state["bad_epochs"],
        seconds_per_epoch=statistics.median(recent) if recent else None,
        epochs_left=epochs_left(state["epoch"], state["bad_epochs"], cfg), segments=len(segments),
        host=_machine(segments),
    )


def _machine(segments: list[dict]) -> str | None:
    """The machine of the last segment: its device name (the CPU model on a CPU)."""
    return segments[-1].get("device_name") if segments else None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_progress(rows: list[Progress]) -> str:
    """A plain-text table of ``rows``, one line per run, and what the time left means."""
    header = ("run", "state", "epoch", "best val -ELBO (epoch)", "patience left", "s/epoch", "segments", "time left")
    lines = []
    for p in rows:
        left = p.seconds_left
        lines.append((
            p.run, p.state, f"{p.epoch}/{p.max_epochs}",
            "" if p.best_val is None else f"{p.best_val:.3f} ({p.best_epoch})",
            "" if p.patience_left is None else str(p.patience_left),
            "" if p.seconds_per_epoch is None else f"{p.seconds_per_epoch:.1f}",
            str(p.segments) if p.segments or p.epoch == 0 else "not recorded",
            "" if left is None else ("done" if p.finished else f"{_duration(left[0])} to {_duration(left[1])}"),
        ))
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    table = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *lines)]
    hosts = sorted({p.host for p in rows if p.host and not p.finished})
    table.append("time left: from the earliest early stop (no new best from now on) to max_epochs, at the median "
                 f"seconds of the last {RECENT_EPOCHS} epochs" + (f" (on {', '.join(hosts)})" if hosts else ""))
    return "\n".join(table)
