"""kNN probe: the vote and its tie-break, exact search, choice of k on validation, references for test."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from evae.evaluate.knn import knn_errors, majority_vote, nearest_labels, probe


def reference_vote(row, k):
    """Written out: most votes; among tied classes, the one seen first (nearest)."""
    counts = Counter(row[:k])
    top = max(counts.values())
    return next(label for label in row[:k] if counts[label] == top)


def test_majority_vote_on_hand_made_rows():
    rows = np.array([[1, 2, 2, 1, 3], [3, 1, 1, 3, 2], [5, 6, 7, 6, 5], [4, 4, 9, 9, 9]])
    assert majority_vote(rows, 1).tolist() == [1, 3, 5, 4]
    assert majority_vote(rows, 3).tolist() == [2, 1, 5, 4]  # row 2: three-way tie -> nearest (5)
    assert majority_vote(rows, 4).tolist() == [1, 3, 6, 4]  # rows 0, 1, 3: two-way ties -> the nearer class
    assert majority_vote(rows, 5).tolist() == [1, 3, 5, 9]  # row 2: 5 and 6 tie, 5 is nearer


def test_majority_vote_matches_a_written_out_vote_on_random_rows():
    rows = np.random.default_rng(0).integers(0, 4, size=(500, 15))  # few classes: many ties
    for k in (1, 2, 3, 6, 15):
        assert majority_vote(rows, k).tolist() == [reference_vote(r, k) for r in rows]


def test_search_is_exact_nearest_first():
    rng = np.random.default_rng(1)
    refs, queries = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(40, 5)).astype(np.float32)
    labels = np.arange(300)  # label = index, so the labels reveal the neighbours
    got = nearest_labels(refs, labels, queries, 7)
    dist = ((queries[:, None, :].astype(np.float64) - refs[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(got, np.argsort(dist, axis=1)[:, :7])


def clusters(n_per, centres, rng, spread=0.1):
    x = np.concatenate([c + spread * rng.normal(size=(n_per, len(c))) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(len(centres)), n_per)


def test_separable_latents_have_zero_error():
    rng = np.random.default_rng(2)
    centres = [np.full(8, 10.0 * i) for i in range(4)]
    (xtr, ytr), (xv, yv), (xte, yte) = (clusters(n, centres, rng) for n in (50, 10, 20))
    result = probe(xtr, ytr, xv, yv, xte, yte, ks=(1, 3, 5, 7))
    assert result["test_error"] == 0.0 and set(result["test_error_by_k"].values()) == {0.0}
    assert result["k"] == 1  # all tied on validation: the smallest k


def planted():
    """1-D points 100 apart. Each validation point's nearest training point carries a wrong label, the next
    four the right one; each test point sits next to its validation point (a correct reference for test)."""
    val_x = np.arange(6, dtype=np.float32)[:, None] * 100
    val_y = np.arange(6) % 2
    offsets = np.array([0.1, 1.0, 1.1, 1.2, 1.3], dtype=np.float32)
    train_x = (val_x + offsets).reshape(-1, 1)
    train_y = np.stack([1 - val_y] + [val_y] * 4, axis=1).reshape(-1)
    test_x, test_y = val_x - 0.05, val_y
    return train_x, train_y, val_x, val_y, test_x, test_y


def test_k_is_chosen_on_validation():
    result = probe(*planted(), ks=(1, 3, 5))
    assert result["val_error_by_k"] == {"1": 100.0, "3": 0.0, "5": 0.0}
    assert result["k"] == 3  # 3 and 5 tie: the smaller


def test_test_references_include_the_validation_split():
    train_x, train_y, val_x, val_y, test_x, test_y = planted()
    result = probe(train_x, train_y, val_x, val_y, test_x, test_y, ks=(1,))
    assert result["val_error_by_k"]["1"] == 100.0
    assert result["test_error_by_k"]["1"] == 0.0  # the nearest reference of each test point is its validation point
    # with training references only, the same test points would all be wrong
    assert knn_errors(train_x, train_y, test_x, test_y, (1,))[1] == 100.0


def test_bad_k_is_rejected():
    train_x, train_y, val_x, val_y, test_x, test_y = planted()
    with pytest.raises(ValueError, match="positive"):
        probe(train_x, train_y, val_x, val_y, test_x, test_y, ks=(0, 1))
    with pytest.raises(ValueError, match="exceeds"):
        nearest_labels(train_x[:3], train_y[:3], test_x, 5)


def test_a_two_level_model_is_probed_on_its_top_latent_means_with_the_labels_named(tmp_path):
    """kNN on the HVAE: its features are the means of q(z2 | x), written out here through the encoder's layers."""
    import torch

    from evae import runs
    from evae.config import TrainConfig
    from evae.evaluate.knn import knn_probe
    from evae.train.trainer import train

    cfg = TrainConfig(dataset="mnist_subset", architecture="hvae", prior="vampprior", pseudo_inputs=5, latent_dim=6,
                      hidden=16, max_train_images=200, max_val_images=100, max_epochs=1, warmup_epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    result = knn_probe(tmp_path / "run", tmp_path / "knn.json", ks=(1, 3, 5), pixel_baseline=False)
    run = runs.load_run(tmp_path / "run")
    with torch.no_grad():
        z2 = [run.model.q_z2(run.model.q_z2_net(torch.from_numpy(x)))[0].numpy()
              for x in (run.data.train, run.data.val, run.data.test)]
    labels = (run.data.train_labels, run.data.val_labels, run.data.test_labels)
    expected = probe(z2[0], labels[0], z2[1], labels[1], z2[2], labels[2], ks=(1, 3, 5))
    assert result["latent"] == expected and result["latent"]["dim"] == 6  # z2, not z1 or both
    assert (result["labels"], result["classes"]) == ("digit class (0..9)", 10)
