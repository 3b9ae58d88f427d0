"""`make demo`: a reference and a stream with a known drift, through `check` and `backtest`.

The closed-loop demo (worker, retrainer, simulated inference service) replaces this
once the streaming monitor and the retrain consumer are in.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from streams.cli import main as driftline
from streams.workload import Workload

DRIFT_AT = 4000


def main() -> int:
    workload = Workload(seed=7)
    with tempfile.TemporaryDirectory(prefix="driftline-demo-") as folder:
        root = Path(folder)
        workload.frame(5000).to_csv(root / "reference.csv", index=False)
        stream = pd.concat(
            [workload.frame(DRIFT_AT, "stationary", seed=1), workload.frame(4000, "covariate", seed=2)],
            ignore_index=True,
        )
        stream.to_csv(root / "stream.csv", index=False)
        stream.iloc[DRIFT_AT:].drop(columns="actual").to_csv(root / "recent.csv", index=False)
        print(f"A reference of 5000 rows; a stream of {len(stream)} rows whose x0 and x1 shift "
              f"by {workload.shift} sd at row {DRIFT_AT}.\n")
        print("$ driftline check --reference-data reference.csv --recent-data recent.csv")
        status = driftline(["check", "--reference-data", str(root / "reference.csv"),
                            "--recent-data", str(root / "recent.csv")])
        print("\n$ driftline backtest --reference reference.csv --stream stream.csv --output triggers.jsonl")
        status |= driftline(["backtest", "--reference", str(root / "reference.csv"),
                             "--stream", str(root / "stream.csv"),
                             "--output", str(root / "triggers.jsonl")])
    return status


if __name__ == "__main__":
    sys.exit(main())
