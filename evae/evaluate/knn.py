"""k-nearest-neighbour classification on encoder means (docs/protocol.md section 5), and in pixel space.

Every gray image is represented by the mean of q(top latent | x) (z2 for the two-level models; never a
sample). Search is exact Euclidean (faiss ``IndexFlatL2``). Protocol:

* k is chosen on validation: references = the training split, queries = the validation split; the k
  with the lowest validation error wins (ties: the smaller k);
* test error with references = training + validation splits (all 60,000 MNIST / Fashion-MNIST training
  images, as docs/protocol.md says), for the chosen k and for every k;
* majority vote over the k nearest; a tie between classes goes to the tied class whose nearest member
  ranks first (the nearest neighbour among the tied classes decides);
* the classes are the dataset's labels, which the result names (``labels``, from the dataset's provenance:
  digit or clothing classes for MNIST and Fashion-MNIST, the 1,623 characters for ``omniglot_raw28``,
  whose raw files carry no alphabet labels).
"""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
import torch

from evae import runs
from evae.evaluate.common import encoder_means

DEFAULT_KS = (1, 3, 5, 7, 9, 11, 13, 15)
TIE_RULE = "majority vote; a tie between classes goes to the tied class whose nearest member ranks first"


def majority_vote(neighbour_labels: np.ndarray, k: int) -> np.ndarray:
    """Class of each row from its first ``k`` neighbour labels (nearest first), ties as in ``TIE_RULE``."""
    labels = neighbour_labels[:, :k]
    votes = (labels[:, :, None] == labels[:, None, :]).sum(2)  # votes[q, i]: how often labels[q, i] occurs
    score = votes * (k + 1) - np.arange(k)  # more votes first, then the earlier (nearer) first occurrence
    return labels[np.arange(len(labels)), score.argmax(1)]


def nearest_labels(references: np.ndarray, ref_labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Labels of the ``k`` exact nearest references (Euclidean) of every query, nearest first: [Q, k]."""
    if k > len(references):
        raise ValueError(f"k = {k} exceeds the number of references ({len(references)})")
    index = faiss.IndexFlatL2(references.shape[1])
    index.add(np.ascontiguousarray(references, dtype=np.float32))
    _, nbrs = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ref_labels[nbrs]


def knn_errors(references, ref_labels, queries, query_labels, ks) -> dict[int, float]:
    """Classification error (%) of the queries for every k in ``ks``."""
    labels = nearest_labels(references, ref_labels, queries, max(ks))
    return {k: 100.0 * float(np.mean(majority_vote(labels, k) != query_labels)) for k in ks}


def probe(train, train_labels, val, val_labels, test, test_labels, ks=DEFAULT_KS) -> dict:
    """Choose k on validation (references: train), then test with references train + validation."""
    ks = _check_ks(ks)
    val_errors = knn_errors(train, train_labels, val, val_labels, ks)
    best = min(ks, key=lambda k: (val_errors[k], k))
    test_errors = knn_errors(
        np.concatenate([train, val]), np.concatenate([train_labels, val_labels]), test, test_labels, ks
    )
    return {
        "k": best,
        "test_error": test_errors[best],
        "val_error": val_errors[best],
        "test_error_by_k": {str(k): e for k, e in test_errors.items()},
        "val_error_by_k": {str(k): e for k, e in val_errors.items()},
        "dim": int(train.shape[1]),
    }


def knn_probe(run_dir: str | Path, out: str | Path, ks=DEFAULT_KS, pixel_baseline: bool = True,
              device: str | None = None) -> dict:
    """kNN test error (%) on the encoder means of the run (folder or summary.json), and on raw pixels; writes ``out``.
    The means are computed on ``device`` (None: the run's config's); the search runs on the CPU."""
    started = time.perf_counter()
    ks = _check_ks(ks)
    run = runs.load_run(run_dir, device=device)
    data = run.data
    splits = {name: getattr(data, name) for name in ("train", "val", "test")}
    labels = (data.train_labels, data.val_labels, data.test_labels)
    feats = [encoder_means(run.model, torch.from_numpy(x).to(run.device)).cpu().numpy() for x in splits.values()]
    latent = probe(feats[0], labels[0], feats[1], labels[1], feats[2], labels[2], ks)
    pixel = probe(*[a for pair in zip(splits.values(), labels) for a in pair], ks) if pixel_baseline else None
    result = {
        "metric": "kNN classification error (%)",
        "labels": data.provenance.get("labels"),
        "classes": len(np.unique(np.concatenate(labels))),
        "latent": latent,
        "pixel": pixel,
        "ks": list(ks),
        "features": "mean of q(top latent | x) of the gray images (z2 for two-level models)",
        "search": "exact Euclidean, faiss IndexFlatL2",
        "vote": TIE_RULE,
        "k_selection": "lowest validation error with the training split as references (ties: smaller k)",
        "references": {"validation": "train", "test": "train + val"},
        "split": {"select": "val", "report": "test"},
        "seed": None,  # nothing random: encoder means and exact search
    }
    return runs.write_result(out, result, run, data, run.device, started)


def _check_ks(ks) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {ks}")
    return ks
