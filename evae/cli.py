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


def cmd_record_checksums(args) -> None:
    from evae.checksums import RECORD, record_tree

    for folder, done in record_tree(args.dirs):
        print(f"{folder / RECORD}: {len(done['recorded'])} recorded after the fact"
              + (f" ({', '.join(done['recorded'])})" if done["recorded"] else "")
              + f", {len(done['verified'])} already recorded and verified")


def cmd_train(args) -> None:
    from evae.train.trainer import train

    summary = train(_config(args), args.out, progress=not args.no_progress)
    print(f"{args.out}: {summary['stopped']} after {summary['epochs_trained']} epochs; "
          f"best validation -ELBO {summary['best_val_loss']:.3f} nats at epoch {summary['best_epoch']}")


def cmd_nll(args) -> None:
    from evae.evaluate.nll import evaluate_nll

    r = evaluate_nll(args.run, args.out, samples=args.samples, chunk=args.chunk, exemplar_bound=args.bound,
                     max_images=args.max_images, seed=args.seed, progress=not args.no_progress, device=args.device)
    print(f"{args.out}: test NLL {r['nll']:.3f} +- {r['nll_stderr']:.3f} nats (S={r['samples']}, {r['images']} images, "
          f"{r['images_per_second']:.2f} images/s)")


def cmd_knn(args) -> None:
    from evae.evaluate.knn import knn_probe

    r = knn_probe(args.run, args.out, ks=args.ks, pixel_baseline=not args.no_pixel, device=args.device)
    latent = r["latent"]
    print(f"{args.out}: latent kNN test error {latent['test_error']:.2f}% (k={latent['k']} chosen on validation)")


def cmd_augment(args) -> None:
    from evae.evaluate.augment import train_classifier

    r = train_classifier(
        args.dataset, args.out, run_dir=args.run, hidden=args.hidden, epochs=args.epochs, seed=args.seed,
        noise_scale=args.noise_scale, max_train_images=args.max_train_images, progress=not args.no_progress,
        device=args.device,
    )
    print(f"{args.out}: test error {r['test_error']:.2f}% (validation {r['val_error']:.2f}%)")


def cmd_status(args) -> None:
    from evae.runs import CHECKPOINT
    from evae.status import format_progress, run_progress
    from evae.study import Study, load_config

    study = Study(load_config(args.base, *args.configfile))
    progress = [run_progress(study.run_dir(run), study.train_config(run.dataset, run.architecture, run.prior, run.seed),
                             key=run.key) for run in study.runs]
    if args.resumable:
        print("\n".join(f"{study.run_dir(run)}/{CHECKPOINT}" for run, p in zip(study.runs, progress)
                        if p.state == "unfinished"))
        return
    print(f"{study.profile} study ({study.label}), {study.root}/runs:")
    print(format_progress(progress))
    if args.plot:
        from evae.report.figures import training_curves
        from evae.study import figure_label

        started = [study.run_dir(run) for run, p in zip(study.runs, progress) if p.epoch > 0]
        if not started:
            raise SystemExit("--plot: no run of the study has trained an epoch yet")
        label = figure_label(study.profile, in_progress=any(p.state == "unfinished" for p in progress))
        training_curves(started, args.plot, budget=label)
        print(f"{args.plot}: the validation curves of the {len(started)} runs started so far")


def _compute_options(p) -> None:
    """Where an evaluation computes: threads and device."""
    p.add_argument("--threads", type=int, default=1, help="torch and faiss threads (default 1)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the run's config's; auto "
                   "without a run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (resumes from --out if it holds a checkpoint)")
    p.add_argument("--config", help="YAML training config (keys of evae.config.TrainConfig)")
    p.add_argument("--out", required=True, help="run directory: checkpoints, metrics.csv, summary.json")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="log one line per epoch instead of a progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("nll", help="importance-weighted test NLL of a trained run")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--out", required=True, help="JSON result (per-image values go beside it)")
    p.add_argument("--samples", type=int, default=5000, help="importance samples per test image (default 5000)")
    p.add_argument("--bound", type=float, default=None,
                   help="exemplar prior: skip exemplars certified to change log p(z) by at most this many nats "
                   "(default: exact)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N test images (smoke runs)")
    p.add_argument("--chunk", type=int, default=None, help="samples decoded per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="periodic log lines instead of a progress bar")
    _compute_options(p)
    p.set_defaults(func=cmd_nll)

    p = sub.add_parser("knn", help="kNN classification error on encoder means (and pixels)")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 7, 9, 11, 13, 15], help="values of k")
    p.add_argument("--no-pixel", action="store_true", help="skip the pixel-space baseline")
    _compute_options(p)
    p.set_defaults(func=cmd_knn)

    p = sub.add_parser("augment", help="MLP classifier, with exemplar-VAE augmentation when --run is given")
    p.add_argument("--dataset", required=True)
    p.add_argument("--run", default=None, help="trained exemplar-prior run generating the augmented images")
    p.add_argument("--hidden", type=int, default=1024, help="hidden units H of the 784-H-H-10 MLP")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-scale", type=float, default=None, help="latent noise std (default: the prior's learned s)")
    p.add_argument("--max-train-images", type=int, default=None, help="only the first N training images")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    _compute_options(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("status", help="how far each training run of a study has come (reads, never writes)")
    p.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                   help="the study's config files, merged over --base as Snakemake does (e.g. config/mnist_full.yaml)")
    p.add_argument("--base", default="config/config.yaml", help="the base config (default: config/config.yaml)")
    p.add_argument("--resumable", action="store_true",
                   help="print only the checkpoint.pt of each unfinished run, one a line (to commit with git add -f)")
    p.add_argument("--plot", metavar="PNG", help="also draw the validation curves of every run started so far")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "record-checksums",
        help="one-off: record the checksums of files written before checksum records existed",
        description="Record, in each folder at or below DIR that holds files, the SHA-256 of its files as they are "
        "now, marked as recorded after the fact (checksums.json). Files already recorded are verified, not "
        "re-recorded; a damaged one stops the command (exit 2). Run it once on folders written before checksum "
        "records existed, after checking that their files are sound: it vouches only that nothing changes later.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, evaluation folders, or folders above them")
    p.set_defaults(func=cmd_record_checksums)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "threads", None) is not None:
        from evae.provenance import set_threads

        set_threads(args.threads)
    from evae.checksums import DamagedFileError
    from evae.train.loop import TrainingDivergedError

    try:
        args.func(args)
    except (DamagedFileError, FileNotFoundError, ValueError) as err:  # bad input (ConfigError is a ValueError)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
