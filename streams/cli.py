"""`driftline` command line: one sub-command per entry point.

Each sub-command lives in the module that owns it, as `add_arguments(parser)` and
`run(args, settings) -> exit status`; this module only wires them together, builds the
settings once and turns expected failures into one clear line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pydantic import ValidationError

from streams.settings import Settings

# (command, module, help); nested commands use a space: "db migrate".
COMMANDS: list[tuple[str, str, str]] = [
    ("db migrate", "schemas.migrate", "apply the SQL migrations to PostgreSQL"),
]


class UsageError(Exception):
    """An expected, user-facing failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML settings file (also DRIFTLINE_CONFIG)")
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
        sub = subparsers.add_parser(leaf, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(args.config)
        return args.handler(args, settings)
    except (UsageError, FileNotFoundError, ValidationError) as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
