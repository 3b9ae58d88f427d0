"""Generates `schemas/json/<name>.v<version>.json` from the models in `schemas.messages`.

    python -m schemas.jsonschema           write the files
    python -m schemas.jsonschema --check   exit 1 if a file differs from its model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from schemas.messages import MESSAGE_TYPES, SCHEMA_VERSION

JSON_DIR = Path(__file__).resolve().parent / "json"


def rendered() -> dict[Path, str]:
    files = {}
    for name, model in MESSAGE_TYPES.items():
        schema = msgspec.json.schema(model)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://driftline.dev/schemas/{name}.v{SCHEMA_VERSION}.json"
        schema["title"] = model.__name__
        files[JSON_DIR / f"{name}.v{SCHEMA_VERSION}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date: " + ", ".join(stale) + " (run python -m schemas.jsonschema)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
