"""A regression trainer whose first retrained model is a bad challenger, for bench.loop's
`bad_challenger` scenario: that model scores like the built-in trainer's on the
retrainer's holdout (the first `predict` call of each loaded copy) and serves
predictions shifted by `OFFSET` target standard deviations afterwards, as a model would
whose holdout flattered it. Every other training (version 1, later retrains) returns the
built-in trainer's model; COUNTER, a file, counts the trainings.

    python bench/bad_challenger.py DATA OUTPUT TARGET TASK COUNTER   (a model's train_command)
"""

from __future__ import annotations

import sys
from pathlib import Path

OFFSET = 3.0


class ServesWorse:
    def __init__(self, model, shift: float) -> None:
        self.model, self.shift, self.calls = model, shift, 0

    def predict(self, frame):
        self.calls += 1  # per loaded copy: the retrainer validates a fresh one with one call
        predicted = self.model.predict(frame)
        return predicted if self.calls == 1 else predicted + self.shift


BAD_TRAINING = 2  # the first retrain: training 1 is `driftline models init`'s version 1


def main(data: str, output: str, target: str, task: str, counter: str) -> None:
    import joblib

    from retrain import builtin_trainer
    from schemas.tables import read_table

    counted = Path(counter)
    training = (int(counted.read_text()) if counted.exists() else 0) + 1
    counted.write_text(f"{training}\n")
    frame = read_table(Path(data))
    model = builtin_trainer.train(frame, target, task=task, seed=0)
    if training == BAD_TRAINING:
        model = ServesWorse(model, OFFSET * float(frame[target].std()))
    joblib.dump(model, output)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the retrainer unpickles bench.bad_challenger
    from bench.bad_challenger import main as run

    run(*sys.argv[1:])
