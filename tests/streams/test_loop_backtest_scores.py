"""`driftline backtest --retrain --score-column`: a classifier's scores reach the replay's
monitor, as live, so its accuracy is estimated before labels (CBPE), and a promoted
version's own probabilities take over from its promotion on, as the service would send
them. The trainings are real (the built-in trainer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from detectors import ReferenceProfile
from schemas.settings import Settings
from streams.loop_backtest import LabelledStream, LoopReplay, model_settings, run_policies, stream_times
from streams.report import Timeline

FEATURES = ["x0", "x1", "x2"]
CHANGE_AT = 1500  # the target's dependence on x0 flips: the served model gets worse
STREAM_ROWS = 6000


def rows(rng: np.random.Generator, n: int, flipped: bool) -> pd.DataFrame:
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    logit = (-2.5 if flipped else 2.5) * frame["x0"] + frame["x1"]
    frame["actual"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def scored(model: LogisticRegression, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(prediction=model.predict(frame[FEATURES]), score=model.predict_proba(frame[FEATURES])[:, 1])


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(3)
    training = rows(rng, 3000, False)
    served = LogisticRegression().fit(training[FEATURES], training["actual"])  # calibrated on the old concept
    reference = scored(served, rows(rng, 3000, False))
    frame = scored(served, pd.concat([rows(rng, CHANGE_AT, False), rows(rng, STREAM_ROWS - CHANGE_AT, True)],
                                     ignore_index=True))
    root = tmp_path_factory.mktemp("scores")
    reference.to_csv(root / "ref.csv", index=False)
    settings = Settings()
    args = type("Args", (), {"model": None, "reference": str(root / "ref.csv"), "prediction_column": "prediction",
                             "actual_column": "actual", "score_column": "score"})()
    model = model_settings(args, settings, "classification", FEATURES)
    stream = LabelledStream(frame[FEATURES], frame["actual"].to_numpy(dtype=object),
                            frame["prediction"].to_numpy(dtype=object), stream_times(frame, "t", needed=False),
                            "classification", reference_scores=frame["score"].to_numpy())
    profile = ReferenceProfile.from_frame(reference, feature_columns=FEATURES, prediction_column="prediction",
                                          actual_column="actual", score_column="score", config=settings.detectors)
    timeline = Timeline("driftline", "classification", x_label="row")
    loop = LoopReplay(stream, reference, profile, model, settings, root / "work")
    driftline = run_policies(loop, [], timeline)[0]
    return frame, driftline, timeline


def promoted_at(driftline) -> int:
    promoted = [r.row for r in driftline.retrains if r.outcome == "promoted"]
    assert promoted, [(r.row, r.outcome, r.reason) for r in driftline.retrains]
    return promoted[0]


def test_the_served_versions_scores_ride_with_its_predictions(replayed) -> None:
    frame, driftline, _ = replayed
    row = promoted_at(driftline)
    assert np.array_equal(driftline.scores[:row], frame["score"].to_numpy()[:row])  # version 1's, from the file
    after = driftline.scores[row:]
    assert np.isfinite(after).all() and not np.allclose(after, frame["score"].to_numpy()[row:])
    # the promoted version's probability of the class it predicts is at least a half
    predicted_one = driftline.served[row:].astype(int) == 1
    assert (after[predicted_one] >= 0.5).all() and (after[~predicted_one] <= 0.5).all()


def test_accuracy_is_estimated_before_and_after_the_promotion(replayed) -> None:
    frame, driftline, timeline = replayed
    row = promoted_at(driftline)
    rows_ = np.asarray(timeline.feature_x)
    estimated = np.asarray(timeline.estimated["accuracy"])
    right = driftline.served.astype(int) == frame["actual"].to_numpy()
    before = (rows_ > 500) & (rows_ < CHANGE_AT)
    assert np.isfinite(estimated[before]).all()
    assert abs(estimated[before].mean() - right[500:CHANGE_AT].mean()) < 0.05
    last = rows_ >= STREAM_ROWS - 500  # the promoted version's, after its own re-baselining
    assert last.any() and np.isfinite(estimated[last]).all()
    assert abs(estimated[last].mean() - right[-1000:].mean()) < 0.05
