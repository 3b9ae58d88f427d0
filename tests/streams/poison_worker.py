"""`driftline worker` whose detectors raise on a marker value: how the monitor survives an
exception inside the detectors (tests only; run as `python -m tests.streams.poison_worker`)."""

from __future__ import annotations

import sys

import numpy as np

from detectors import ModelMonitor
from streams.cli import main

POISON = 12345.0  # a feature value the patched detectors refuse
_update_features = ModelMonitor.update_features


def _poisoned(self, numeric, *args, **kwargs):
    if np.any(numeric == POISON):
        raise RuntimeError("poisoned batch (test)")
    return _update_features(self, numeric, *args, **kwargs)


if __name__ == "__main__":
    # Only here: pytest's --doctest-modules imports this module into the test process,
    # where a patch at import time would leave every detector test a patched class.
    ModelMonitor.update_features = _poisoned
    sys.exit(main())
