"""A synthetic inference workload with drift at known points, for the demo and tests.

Six numeric features; the target is a smooth non-linear function of them, so a model
trained on one region of the feature space is wrong in another (covariate shift hurts),
and a change of the function itself is a change of concept.

    phase "stationary":        features as in the reference data, the reference concept
    phase "covariate":         x0 and x1 shifted by `shift` standard deviations (`shifted`:
                               other columns; x4, which the target ignores, makes a
                               harmless drift)
    phase "concept":           the features as in the reference, the target's function changed
    phase "covariate+concept": both
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Phase = Literal["stationary", "covariate", "concept", "covariate+concept"]
Task = Literal["regression", "classification"]
FEATURES = ("x0", "x1", "x2", "x3", "x4", "x5")


@dataclass(frozen=True)
class Workload:
    task: Task = "regression"
    shift: float = 1.5
    noise: float = 0.3
    seed: int = 0
    shifted: tuple[int, ...] = (0, 1)  # the columns a covariate shift moves

    def features(self, n: int, phase: Phase, rng: np.random.Generator) -> np.ndarray:
        x = rng.normal(0.0, 1.0, size=(n, len(FEATURES)))
        x[:, 5] = rng.exponential(1.0, size=n)
        if "covariate" in phase:
            x[:, list(self.shifted)] += self.shift
        return x

    def target(self, x: np.ndarray, phase: Phase, rng: np.random.Generator) -> np.ndarray:
        sign = -1.0 if "concept" in phase else 1.0
        signal = (
            2.0 * np.sin(x[:, 0])
            + sign * 1.5 * x[:, 1] * np.abs(x[:, 1]) / 2.0
            + x[:, 2]
            - 0.5 * x[:, 3] ** 2
            + 0.3 * x[:, 5]
        )
        y = signal + rng.normal(0.0, self.noise, size=len(x))
        if self.task == "classification":
            return (y > 0.0).astype(np.int64)
        return y

    def frame(self, n: int, phase: Phase = "stationary", seed: int | None = None) -> pd.DataFrame:
        """`n` rows of features and the target (`actual`), e.g. a model's training data."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        x = self.features(n, phase, rng)
        import pandas as pd

        frame = pd.DataFrame(x, columns=list(FEATURES))
        frame["actual"] = self.target(x, phase, rng)
        return frame
