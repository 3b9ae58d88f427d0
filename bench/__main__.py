"""`make bench`: runs every benchmark module in `bench/` in turn."""

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.endswith("_bench"))
    for name in names:
        print(f"== bench.{name}", flush=True)
        importlib.import_module(f"bench.{name}").main(sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
