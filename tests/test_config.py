"""TrainConfig: the paper's defaults, clear rejection of unknown keys and bad values, digests, files."""

from __future__ import annotations

import pytest
import yaml

from evae.config import ConfigError, TrainConfig


def test_defaults_are_the_paper_protocol():
    cfg = TrainConfig()
    assert (cfg.latent_dim, cfg.hidden, cfg.pseudo_inputs, cfg.exemplar_subset, cfg.exemplar_k) == (40, 300, 500, 0.5, 10)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size) == ("adamnormgrad", 5e-4, 100)
    assert (cfg.warmup_epochs, cfg.max_epochs, cfg.patience, cfg.binarize_seed) == (100, 2000, 50, 777)


def test_unknown_key_is_named_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learning_rate'\]; valid keys: .*'lr'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dataset", "cifar", r"dataset: 'cifar' is not one of \['mnist'"),
        ("architecture", "resnet", r"architecture: 'resnet' is not one of"),
        ("prior", "flow", r"prior: 'flow' is not one of"),
        ("exemplar_mode", "approx", r"exemplar_mode: 'approx' is not one of \['exact', 'knn'\]"),
        ("lr", 0, r"lr: must be in \(0, 1\), got 0"),
        ("lr", "fast", r"lr: expected float, got 'fast'"),
        ("exemplar_subset", 1.5, r"exemplar_subset: must be a fraction in \(0, 1\]"),
        ("exemplar_subset", 0, r"exemplar_subset: must be a fraction"),
        ("batch_size", 0, r"batch_size: must be >= 1, got 0"),
        ("batch_size", 2.5, r"batch_size: expected int, got 2.5"),
        ("batch_size", True, r"batch_size: expected int, got True"),
        ("patience", 0, r"patience: must be >= 1, got 0"),
        ("warmup_epochs", -1, r"warmup_epochs: must be >= 0"),
        ("max_train_images", 1, r"max_train_images: must be >= 2 or null"),
        ("max_val_images", 0, r"max_val_images: must be >= 1 or null"),
        ("seed", None, r"seed: must not be null"),
        ("dataset", 3, r"dataset: expected str, got 3"),
        ("dataset", "celeba", r"architecture 'vae' cannot model dataset 'celeba'"),
        ("architecture", "convvae64", r"architecture 'convvae64' cannot model dataset 'mnist'"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({key: value})


def test_yaml_spellings_are_coerced():
    cfg = TrainConfig.from_dict({"lr": "1e-4", "max_epochs": 10.0, "max_train_images": None, "exemplar_subset": 1})
    assert cfg.lr == 1e-4 and cfg.max_epochs == 10 and isinstance(cfg.max_epochs, int)
    assert cfg.max_train_images is None and cfg.exemplar_subset == 1.0


def test_digests():
    base = TrainConfig()
    assert base.digest() == TrainConfig().digest()
    assert base.replace(threads=2, device="cpu", eval_batch_size=10).digest() == base.digest()
    assert base.replace(seed=1).digest() != base.digest()
    assert base.replace(max_epochs=5).digest() != base.digest()
    assert base.replace(max_epochs=5).trajectory_digest() == base.trajectory_digest()
    assert base.replace(patience=5).trajectory_digest() != base.trajectory_digest()


def test_file_round_trip_and_errors(tmp_path):
    cfg = TrainConfig(dataset="mnist_subset", prior="vampprior", lr=1e-3)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert TrainConfig.from_file(path) == cfg
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        TrainConfig.from_file(path)
    path.write_text("prior: flow\n")
    with pytest.raises(ConfigError, match=r"c.yaml: prior: 'flow'"):
        TrainConfig.from_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "missing.yaml")
