"""The training process: `python -m retrain.train_job ...`, started by the retrainer.

It reads the prepared training data, calls the configured trainer (or the built-in
one) and writes the fitted model with joblib. It runs apart from the consumer so that a
crash, a hang or a memory blow-up in a trainer is a failed retrain, never a dead
consumer; and it exits on its own when the process that started it dies. It runs under
`retrain.launch` (priority, thread limits, the artifact's digest).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
from pathlib import Path

import joblib

from retrain import builtin_trainer
from schemas.tables import read_table

PARENT_CHECK_SECONDS = 1.0  # how soon an orphaned training notices and stops


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(3)


def load_trainer(spec: str):
    module_name, _, function_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", choices=("regression", "classification"), required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--trainer", help="module:function; the built-in trainer when absent")
    args = parser.parse_args(argv)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()

    frame = read_table(args.data)
    if args.trainer:
        model = load_trainer(args.trainer)(frame, args.target)
    else:
        model = builtin_trainer.train(frame, args.target, task=args.task, seed=args.seed)
    if not callable(getattr(model, "predict", None)):
        print(f"trainer returned {type(model).__name__}, which has no predict()", file=sys.stderr)
        return 2
    joblib.dump(model, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
