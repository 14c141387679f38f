"""Command line: ``python -m evae <command>``. Every command is a thin call into the library."""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from evae.config import ConfigError, TrainConfig


def _config(args) -> TrainConfig:
    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return cfg.replace(**overrides) if overrides else cfg


def cmd_train(args) -> None:
    from evae.train.trainer import train

    summary = train(_config(args), args.out, progress=not args.no_progress)
    print(f"{args.out}: {summary['stopped']} after {summary['epochs_trained']} epochs; "
          f"best validation -ELBO {summary['best_val_loss']:.3f} nats at epoch {summary['best_epoch']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (resumes from --out if it holds a checkpoint)")
    p.add_argument("--config", help="YAML training config (keys of evae.config.TrainConfig)")
    p.add_argument("--out", required=True, help="run directory: checkpoints, metrics.csv, summary.json")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="log one line per epoch instead of a progress bar")
    p.set_defaults(func=cmd_train)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
