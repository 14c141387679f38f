"""What training computes, free of files: the KL warm-up, one epoch (a pass over the training set, the
exemplar refresh, the validation ELBO) and the early-stopping rule. ``evae.train.trainer`` strings
these into a resumable run; the benchmarks time them alone."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from evae.data import dynamic_binarize
from evae.models import LatentVariableModel


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


def beta_at(epoch: int, warmup: int) -> float:
    """KL weight of epoch ``epoch`` (1-based): linear warm-up to 1 over ``warmup`` epochs."""
    return 1.0 if warmup == 0 else min(1.0, epoch / warmup)


def refresh_prior(model: LatentVariableModel) -> None:
    """The prior's refresh (``prior.refresh(model.encode)``) with the model in eval mode, its mode restored after:
    BatchNorm layers encode with their running statistics and leave them untouched."""
    training = model.training
    model.eval()
    model.prior.refresh(model.encode)
    model.train(training)


def run_epoch(model, optimizer, train_x, val_x, batch_size, eval_batch_size, beta, shuffle, epoch, binary=True,
              progress=False) -> tuple[dict, dict]:
    """One epoch: the training steps, the prior's refresh (new means for validation and for the next epoch's
    retrieval) and the validation ELBO. Returns the metrics row (without ``epoch``) and the seconds it took."""
    t0 = time.perf_counter()
    train_stats = train_epoch(model, optimizer, train_x, batch_size, beta, shuffle, epoch, progress=progress,
                              binary=binary)
    t1 = time.perf_counter()
    model.eval()
    model.prior.refresh(model.encode)
    val_stats = evaluate_elbo(model, val_x, eval_batch_size)
    model.train()
    t2 = time.perf_counter()
    row = {
        "beta": beta, **{f"train_{k}": v for k, v in train_stats.items()}, **{f"val_{k}": v for k, v in val_stats.items()},
        "prior_variance": model.prior.describe().get("variance", float("nan")),
    }
    return row, {"steps_seconds": t1 - t0, "eval_seconds": t2 - t1, "epoch_seconds": t2 - t0}


def early_stopping(state: dict, val_loss: float, epoch: int, warmup: int, patience: int) -> tuple[bool, bool]:
    """Update ``state`` (best_val, best_epoch, bad_epochs) with an epoch's validation loss; return (new best, stop).

    Any epoch may set a new best; an epoch counts against ``patience`` only once beta = 1 (epoch >= ``warmup``).
    """
    improved = val_loss < state["best_val"]
    if improved:
        state.update(best_val=val_loss, best_epoch=epoch, bad_epochs=0)
    elif epoch >= warmup:
        state["bad_epochs"] += 1
    return improved, state["bad_epochs"] >= patience


def train_epoch(
    model, optimizer, train_x, batch_size, beta, shuffle, epoch, max_steps: int | None = None, progress: bool = False,
    binary: bool = True, check_every_step: bool | None = None,
) -> dict:
    """One pass over the shuffled training set (or its first ``max_steps`` minibatches, for benchmarks);
    mean (over batches) loss, -rec and KL of the beta-ELBO. Binary datasets are re-binarised every
    minibatch; others (CelebA levels) are passed as stored.

    A non-finite loss raises ``TrainingDivergedError``. On the CPU it is checked before its step is taken;
    on a GPU, where that check would wait for every step to finish, the first non-finite batch is noted on
    the device and the error raised at the end of the epoch (the steps after it are wasted, and nothing of
    the epoch is saved: the last good checkpoint stays). ``check_every_step`` overrides the choice.
    """
    model.train()
    device = train_x.device
    check_every_step = device.type == "cpu" if check_every_step is None else check_every_step
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss, -rec, kl; no per-batch sync
    first_bad = None if check_every_step else torch.tensor(-1, device=device)  # first non-finite batch
    order = torch.randperm(len(train_x), generator=shuffle).to(device)
    if max_steps is not None:
        order = order[: max_steps * batch_size]
    n_batches = 0
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=f"epoch {epoch}", unit="step", leave=False, disable=not progress, dynamic_ncols=True):
        index = order[start : start + batch_size]
        x = dynamic_binarize(train_x[index], shuffle) if binary else train_x[index].float()
        loss, parts = model.loss(x, index=index, beta=beta)
        if first_bad is None:
            if not torch.isfinite(loss):
                raise _diverged(f"loss became {loss.item()}", epoch, n_batches)
        else:
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), n_batches, first_bad)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals += torch.stack([loss.detach(), -parts["rec"], parts["kl"]]).double()
        n_batches += 1
    if first_bad is not None and int(first_bad) >= 0:
        raise _diverged("loss became non-finite", epoch, int(first_bad))
    loss, rec, kl = (totals / n_batches).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


def _diverged(what: str, epoch: int, batch: int) -> TrainingDivergedError:
    return TrainingDivergedError(f"{what} at epoch {epoch}, batch {batch}: the run is stopped; the last good checkpoint "
                                 "is kept (lower lr, or check the data)")


@torch.no_grad()
def evaluate_elbo(model: LatentVariableModel, x_binary: torch.Tensor, batch_size: int) -> dict:
    """Negative ELBO (beta = 1), its reconstruction and KL terms, averaged over binary images."""
    sums = torch.zeros(2, dtype=torch.float64, device=x_binary.device)  # -rec, kl
    for start in range(0, len(x_binary), batch_size):
        t = model.elbo_terms(x_binary[start : start + batch_size].float())
        sums += torch.stack([-t["rec"].double().sum(), t["kl"].double().sum()])
    rec, kl = (sums / len(x_binary)).tolist()
    return {"loss": rec + kl, "rec": rec, "kl": kl}
