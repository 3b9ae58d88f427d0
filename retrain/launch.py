"""The training's first process: `python -m retrain.launch --nice N --output FILE -- ARGV...`.

Started by the retrainer (`retrain.training_process`) in a session of its own, with the
BLAS/OpenMP thread counts of the settings in its environment. It lowers its own
scheduling priority (which the trainer inherits, threads included), runs ARGV (the
trainer: `retrain.train_job` or the model's `train_command`, never through a shell),
and once the trainer succeeded writes the SHA-256 of FILE beside it (FILE.sha256): the
retrainer stores and later unpickles only an artifact with that content. It stops the
trainer and exits when the retrainer dies. Imports only the standard library, so that it
starts fast.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

PARENT_CHECK_SECONDS = 1.0  # how soon an orphaned training notices and stops
DIGEST_SUFFIX = ".sha256"
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_path(output: Path) -> Path:
    return output.with_name(output.name + DIGEST_SUFFIX)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nice", type=int, default=0, help="added to the scheduling niceness")
    parser.add_argument("--output", type=Path, required=True, help="the artifact the trainer writes")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the trainer's arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no trainer command after --")
    if args.nice:
        os.nice(args.nice)
    parent = os.getppid()
    trainer = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    while True:
        try:
            returncode = trainer.wait(PARENT_CHECK_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # the retrainer died: so does its training
                trainer.kill()
                trainer.wait()
                return 3
    if returncode == 0 and args.output.is_file():
        digest_path(args.output).write_text(sha256_of(args.output) + "\n")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
