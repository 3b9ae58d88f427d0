"""The training's first process: `python -m retrain.launch --nice N --output FILE -- ARGV...`.

Started by the retrainer (`retrain.training_process`) in a session of its own, with the
BLAS/OpenMP thread counts of the settings in its environment. It lowers its own
scheduling priority (which the trainer inherits, threads included), runs ARGV (the
trainer: `retrain.train_job` or the model's `train_command`, never through a shell),
and once the trainer succeeded writes the SHA-256 of FILE beside it (FILE.sha256): the
retrainer stores and later unpickles only an artifact with that content.

It dies with the retrainer (`--parent`, the retrainer's pid): on Linux the kernel sends it
SIGUSR1 when the retrainer dies (`PR_SET_PDEATHSIG`, even after a `kill -9`), elsewhere it
notices within `PARENT_CHECK_SECONDS`; either way it kills its whole process group (the
trainer and whatever the trainer started) with SIGKILL. The trainer gets SIGKILL from
the kernel if this launcher itself is killed. Imports only the standard library, so that
it starts fast.
"""

from __future__ import annotations

import argparse
import hashlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

PARENT_CHECK_SECONDS = 1.0  # how soon an orphaned training notices and stops
DIGEST_SUFFIX = ".sha256"
CHUNK = 1 << 20
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_path(output: Path) -> Path:
    return output.with_name(output.name + DIGEST_SUFFIX)


def die_with_parent(signal_number: int) -> None:
    """Asks the kernel for `signal_number` when the parent dies (Linux; a no-op elsewhere).
    The kernel also sends it when the parent *thread* that forked this process ends,
    the process living on: `parent_gone` tells the two apart."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def parent_gone(parent: int) -> bool:
    """A child of a dead process is handed to a reaper; of an ended thread, to a thread
    of the same process (same pid)."""
    return os.getppid() != parent


def kill_own_group(*_: object) -> None:
    """The launcher leads its own process group (started in a session of its own)."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=0, help="added to the scheduling niceness")
    parser.add_argument("--output", type=Path, required=True, help="the artifact the trainer writes")
    parser.add_argument("--parent", type=int, help="the retrainer's pid: this training dies with it")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the trainer's arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no trainer command after --")
    if args.nice:
        os.nice(args.nice)
    parent = os.getppid() if args.parent is None else args.parent
    signal.signal(signal.SIGUSR1, lambda *_: parent_gone(parent) and kill_own_group())
    die_with_parent(signal.SIGUSR1)
    if parent_gone(parent):  # the retrainer died before the kernel could be asked
        kill_own_group()
    trainer = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=lambda: die_with_parent(signal.SIGKILL))
    while True:
        try:
            returncode = trainer.wait(PARENT_CHECK_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if parent_gone(parent):  # the retrainer died: so does its training
                kill_own_group()
    if returncode == 0 and args.output.is_file():
        digest_path(args.output).write_text(sha256_of(args.output) + "\n")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
