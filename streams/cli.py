"""`driftline` command line: one sub-command per entry point.

Each sub-command lives in the module that owns it, as `add_arguments(parser)` and
`run(args, settings) -> exit status`; this module only wires them together, builds the
settings once and turns expected failures into one clear line on stderr. Only the module
of the command being run is imported, and those modules import their heavy libraries
inside `run` (so `driftline --help` and every command's `--help` load none of them:
tests/cli/test_imports.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from schemas.errors import UsageError

# (command, module, help); nested commands use a space: "db migrate".
COMMANDS: list[tuple[str, str, str]] = [
    ("db migrate", "schemas.migrate", "apply the SQL migrations to PostgreSQL"),
    ("worker", "streams.worker", "run the streaming drift monitor (faust worker)"),
    ("check", "streams.batch_check", "the design's one-shot retraining decision on files"),
    ("backtest", "streams.backtest", "replay a file's rows through the streaming core"),
    ("replay", "streams.replay", "replay a time range of the Kafka topics through the streaming core"),
    ("retrainer", "retrain.retrainer_cli", "run the retrain consumer of retrain-requests"),
    ("retrain", "retrain.executor", "the design's retraining pipeline on files, step by step"),
    ("models", "retrain.models_cli", "list, show, promote, roll back or initialise stored models"),
    ("simulate", "streams.simulate", "a simulated inference service with drift at known events"),
]


def _named(command: str, argv: list[str]) -> bool:
    """Whether `argv` names `command` (its words in a row): only its module is imported."""
    words = command.split()
    return any(argv[i:i + len(words)] == words for i in range(len(argv)))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; `argv` given, only the commands it names get their options."""
    # `--config` is accepted before and after the command; SUPPRESS keeps a command's
    # parser from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file (also DRIFTLINE_CONFIG)")
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__.splitlines()[0], parents=[common])
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        *parents, leaf = name.split()
        subparsers = top
        for depth, parent in enumerate(parents):
            key = " ".join(parents[: depth + 1])
            if key not in groups:
                group = subparsers.add_parser(parent, help=f"{parent} commands")
                groups[key] = group.add_subparsers(dest=f"{key}_command", required=True)
            subparsers = groups[key]
        sub = subparsers.add_parser(leaf, help=help_text, description=help_text, parents=[common])
        if argv is None or _named(name, argv):
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run)
    return parser


# OpenBLAS's worker threads (one per core by default) cost far more CPU than they save
# on the detectors' vector products: on a loaded 2-core machine the serial-dependence
# estimate of one 20,000-row column took 50 ms of CPU instead of 0.2 ms. Numpy reads this
# when it loads (after `main` starts); a value set by the user is kept.
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1"}


def main(argv: list[str] | None = None) -> int:
    for name, value in BLAS_THREADS.items():
        os.environ.setdefault(name, value)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)  # --help ends here, before pydantic loads
    from pydantic import ValidationError

    from detectors.errors import DetectorError
    from schemas.settings import Settings

    try:
        settings = Settings.load(getattr(args, "config", None))
        return args.handler(args, settings)
    except (UsageError, DetectorError, FileNotFoundError, ValidationError) as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
