"""One GPU per job on a machine with several.

Run locally, Snakemake starts up to ``--resources gpu=N`` model jobs at once (N: by default the GPUs torch
sees, workflow/Snakefile), each a process of its own. Left to torch, every one of them would compute on
the first visible GPU. So a job whose device is ``auto`` or ``cuda`` (no index), on a machine where torch
sees several GPUs, claims one for as long as its process lives (``claimed_gpu``, called by
``evae.provenance.pick_device``): it holds an exclusive ``fcntl.flock`` on a lock file of that GPU. The
kernel releases the lock when the process ends, however it ends (SIGKILL included), so no lock outlives its
job and there is nothing to clean up. ``cuda:N`` is taken as given, with no lock; with one visible GPU (a
SLURM job given ``--gpus=1`` too) there is nothing to choose.

The lock files are ``<temporary directory>/evae-gpus-uid<uid>/<gpu>.<slot>.lock``, shared by every process
of the user on the machine (Snakemake gives all its jobs the same temporary directory). ``<gpu>`` names the
card the same way in every process, whatever its CUDA_VISIBLE_DEVICES: its UUID. Slot k of a GPU is its
(k+1)-th job. A job takes slot 0 of the first GPU that has it free. When every GPU already has a job of
ours (more jobs than GPUs: ``--resources gpu=8`` on four GPUs, or a ``python -m evae`` command beside a
pipeline that fills them), it does not wait, which could mean days behind a training: it shares, taking
slot 1 of the first GPU where that is free, and so on (every GPU's second job before any GPU's third), and
says so with a warning in its log.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LOCK_DIR = Path(tempfile.gettempdir()) / f"evae-gpus-uid{os.getuid()}"
_claimed: int | None = None  # the device index this process claimed (claimed once, held until it exits)


def claim(gpus: list[str], lock_dir: Path) -> tuple[int, int]:
    """Claim one of ``gpus`` (names of the visible GPUs, in device order) for the rest of this process.

    Returns its index in ``gpus`` and the slot taken: k when every GPU had at least k jobs of ours (0: some
    GPU had none). The lock's file descriptor stays open, so the lock is held, until the process exits.
    """
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for slot in itertools.count():
        for index, gpu in enumerate(gpus):
            fd = os.open(lock_dir / f"{gpu}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another live process holds it
                os.close(fd)
                continue
            return index, slot


def gpu_names() -> list[str]:
    """The visible GPUs, in device order, named as every process names them: by UUID; where torch gives none,
    by their entry in CUDA_VISIBLE_DEVICES (their index when it is unset)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    names = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        name = str(uuid) if uuid is not None else visible[i] if i < len(visible) and visible[i] else str(i)
        names.append(re.sub(r"[^\w.-]", "_", name))  # a file name (MIG entries hold slashes)
    return names


def claimed_gpu() -> int:
    """The CUDA device index a job given ``auto`` or ``cuda`` computes on: torch's current device when it sees
    one GPU; with several, the one this process claimed (claimed at the first call, made torch's current
    device, and logged)."""
    global _claimed
    if torch.cuda.device_count() < 2:
        return torch.cuda.current_device()
    if _claimed is None:
        names = gpu_names()
        index, slot = claim(names, LOCK_DIR)
        torch.cuda.set_device(index)
        _claimed = index
        if slot == 0:
            log.info("claimed cuda:%d (GPU %s), one of %d visible GPUs, for this job", index, names[index], len(names))
        else:
            log.warning("every one of the %d visible GPUs already has a job of this user: this one shares cuda:%d "
                        "(GPU %s) with at least %d other(s), and they slow each other down (more jobs than GPUs: "
                        "--resources gpu=N above the number of GPUs?)", len(names), index, names[index], slot)
    return _claimed
