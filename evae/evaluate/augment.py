"""Generative data augmentation (docs/protocol.md section 5): an MLP classifier with and without exemplar-VAE images.

The classifier is the permutation-invariant MLP 784-H-H-10 (ReLU; PyTorch's default initialisation),
trained with SGD (momentum 0.9, batch 100) and cross-entropy with label smoothing 0.1 on the gray images.
The learning rate falls linearly from 0.1 in the first epoch to 1% of it (0.001) in the last.

With a trained exemplar model each step's loss is 0.4 x loss(real batch) + 0.6 x loss(augmented batch),
where the augmented batch holds one fresh image per real one: the encoder mean of that (gray) image plus
N(0, s^2 I) noise (s^2 the prior's learned variance unless ``noise_scale`` sets s), decoded to the
Bernoulli means, rounded to multiples of 1/255, with the real image's label.

Choices, following the authors' code (utils/classify_data.py of the Exemplar VAE repository) where it
tells: the classifier trains on the training split only (50,000 images for MNIST / Fashion-MNIST: the
exemplar model's own training set), for a fixed number of epochs with no early stopping; the reported
test and validation errors are those after the last epoch. Differences: float32 instead of float64,
and the learning rate reaches 1% in the last epoch (the authors' scheduler reaches it only after it).

``classify`` computes (tensors in, per-epoch errors out); ``train_classifier`` reads the data and the run
and writes the result with its provenance (``evae.runs``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evae import runs
from evae.data import load_dataset
from evae.evaluate.common import encoder_means, track
from evae.provenance import pick_device

log = logging.getLogger(__name__)

LR, MOMENTUM, BATCH, LABEL_SMOOTHING = 0.1, 0.9, 100, 0.1
REAL_WEIGHT, AUGMENTED_WEIGHT = 0.4, 0.6
FINAL_LR_FRACTION = 0.01


def mlp(hidden: int, n_in: int = 784, n_classes: int = 10) -> nn.Sequential:
    """The permutation-invariant classifier n_in-H-H-n_classes with ReLU."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
    )


def lr_at(epoch: int, epochs: int, lr: float = LR) -> float:
    """Learning rate of ``epoch`` (1-based): linear from ``lr`` in epoch 1 to 1% of it in epoch ``epochs``."""
    if epochs == 1:
        return lr
    return lr * (1 - (1 - FINAL_LR_FRACTION) * (epoch - 1) / (epochs - 1))


class ExemplarAugmenter:
    """Fresh augmented images of training images: decode(encoder mean + s * noise), rounded to the 1/255 grid."""

    def __init__(self, model, images: torch.Tensor, noise_scale: float, generator: torch.Generator):
        self.model, self.scale, self.generator = model, noise_scale, generator
        self.means = encoder_means(model, images)

    @torch.no_grad()
    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        means = self.means[index]
        noise = torch.randn(means.shape, generator=self.generator).to(means.device)
        return torch.round(self.model.decode(means + self.scale * noise) * 255) / 255


def fit(
    classifier: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    epochs: int,
    generator: torch.Generator,
    augmenter: ExemplarAugmenter | None = None,
    evaluate=None,
    progress: bool = True,
) -> list[dict]:
    """Train ``classifier`` in place; one history row per epoch (``evaluate(classifier)`` adds its keys)."""
    optimizer = torch.optim.SGD(classifier.parameters(), lr=LR, momentum=MOMENTUM)
    history = []
    for epoch in track(range(1, epochs + 1), epochs, "classifier epochs", progress):
        t0 = time.perf_counter()
        lr = lr_at(epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        classifier.train()
        order = torch.randperm(len(train_x), generator=generator).to(train_x.device)
        total, batches = 0.0, 0
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            labels = train_y[index]
            loss = F.cross_entropy(classifier(train_x[index]), labels, label_smoothing=LABEL_SMOOTHING)
            if augmenter is not None:  # the augmented images carry their exemplars' labels
                augmented = F.cross_entropy(classifier(augmenter(index)), labels, label_smoothing=LABEL_SMOOTHING)
                loss = REAL_WEIGHT * loss + AUGMENTED_WEIGHT * augmented
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        row = {"epoch": epoch, "lr": lr, "train_loss": total / batches}
        classifier.eval()
        if evaluate is not None:
            row.update(evaluate(classifier))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if not progress:
            values = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            log.info("epoch %d/%d: %s", epoch, epochs, values)
    return history


@torch.no_grad()
def error_rate(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    """Classification error (%)."""
    wrong = sum(
        int((classifier(x[i : i + batch]).argmax(1) != y[i : i + batch]).sum()) for i in range(0, len(x), batch)
    )
    return 100.0 * wrong / len(x)


def classify(train, val, test, classes: int, hidden: int, epochs: int, generator: torch.Generator,
             augmenter: ExemplarAugmenter | None = None, progress: bool = False) -> tuple[list[dict], str]:
    """Train the MLP on ``train`` = (images, labels), optionally augmented; validation and test error (%) after
    every epoch. The classifier is initialised from the global torch RNG. Returns the history and the
    classifier's architecture."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = train, val, test
    classifier = mlp(hidden, train_x.shape[1], classes).to(train_x.device)

    def evaluate(c):
        return {"val_error": error_rate(c, val_x, val_y), "test_error": error_rate(c, test_x, test_y)}

    history = fit(classifier, train_x, train_y, epochs, generator, augmenter, evaluate, progress)
    return history, f"MLP {train_x.shape[1]}-{hidden}-{hidden}-{classes} ReLU"


def train_classifier(
    dataset: str,
    out: str | Path,
    run_dir: str | Path | None = None,
    hidden: int = 1024,
    epochs: int = 100,
    seed: int = 0,
    noise_scale: float | None = None,
    max_train_images: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Train the MLP on ``dataset`` (augmented by the exemplar model in ``run_dir``, a run folder or its
    summary.json, if given) on ``device`` (None: the run's config's, ``auto`` without a run); writes ``out``."""
    started = time.perf_counter()
    if hidden < 1 or epochs < 1:
        raise ValueError(f"hidden and epochs must be >= 1, got hidden={hidden}, epochs={epochs}")
    if noise_scale is not None and noise_scale < 0:
        raise ValueError(f"noise_scale must be >= 0 or None (the prior's learned s), got {noise_scale}")
    run_cfg = runs.read_config(run_dir) if run_dir is not None else None
    if run_cfg is not None and run_cfg.dataset != dataset:
        raise ValueError(
            f"{run_dir} was trained on {run_cfg.dataset!r}, not on {dataset!r}: "
            "augment with a model of the same dataset"
        )
    data = load_dataset(dataset, **({"split_seed": run_cfg.split_seed} if run_cfg is not None else {}))
    torch.manual_seed(seed)  # classifier initialisation (and the lower latents an HVAE decoder draws)
    run = runs.load_run(run_dir, data=data, device=device) if run_dir is not None else None
    device = run.device if run is not None else pick_device(device or "auto")
    n = len(data.train) if max_train_images is None else min(max_train_images, len(data.train))
    tensor = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    train = tensor(data.train[:n]), tensor(data.train_labels[:n])

    augmenter, augmentation = None, None
    if run is not None:
        prior_scale = run.model.prior.component_scale()
        if prior_scale is None:
            raise ValueError(f"{run.dir} has a {type(run.model.prior).__name__}; augmentation needs an exemplar prior")
        scale = prior_scale if noise_scale is None else noise_scale
        augmentation = {"noise_scale": scale, "prior_scale": prior_scale, "weights": [REAL_WEIGHT, AUGMENTED_WEIGHT],
                        "rounding": "multiples of 1/255"}
        augmenter = ExemplarAugmenter(run.model, train[0], scale, torch.Generator().manual_seed(seed + 1))

    classes = int(max(data.train_labels.max(), data.val_labels.max(), data.test_labels.max())) + 1
    history, architecture = classify(
        train, (tensor(data.val), tensor(data.val_labels)), (tensor(data.test), tensor(data.test_labels)), classes,
        hidden, epochs, torch.Generator().manual_seed(seed), augmenter, progress,
    )
    result = {
        "metric": "classification error (%) after the last epoch",
        "test_error": history[-1]["test_error"],
        "val_error": history[-1]["val_error"],
        "augmentation": augmentation,
        "classifier": {
            "architecture": architecture, "hidden": hidden,
            "epochs": epochs, "batch": BATCH, "optimizer": f"SGD momentum {MOMENTUM}",
            "lr": f"{LR} linearly to {FINAL_LR_FRACTION:.0%} of it in the last epoch",
            "label_smoothing": LABEL_SMOOTHING,
            "precision": "float32",
        },
        "train_images": n,
        "max_train_images": max_train_images,
        "split": {"train": "train", "report": "test (and val) after the last epoch"},
        "seed": seed,
        "history": history,
        "dataset": dataset,
    }
    return runs.write_result(out, result, run, data, device, started)
