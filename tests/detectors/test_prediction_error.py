"""The one error definition against scikit-learn's metrics, on any labels or numbers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from sklearn.metrics import accuracy_score, mean_absolute_error

from detectors.prediction_error import prediction_errors

classes = st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 3))
numbers = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(classes, classes), min_size=1, max_size=50))
def test_mean_mismatch_is_one_minus_sklearn_accuracy(pairs) -> None:
    predictions, actuals = zip(*pairs)
    as_text = [str(float(v)) if isinstance(v, int) else v for v in predictions], \
        [str(float(v)) if isinstance(v, int) else v for v in actuals]
    errors = prediction_errors("classification", list(predictions), list(actuals))
    assert np.isclose(errors.mean(), 1 - accuracy_score(*as_text))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(numbers, numbers), min_size=1, max_size=50))
def test_mean_absolute_error_is_sklearn_mae(pairs) -> None:
    predictions, actuals = map(np.array, zip(*pairs))
    errors = prediction_errors("regression", predictions, actuals)
    assert np.isclose(errors.mean(), mean_absolute_error(actuals, predictions))


def test_a_missing_side_has_no_error() -> None:
    errors = prediction_errors("regression", [1.0, np.nan, None], [np.nan, 2.0, 3.0])
    assert np.isnan(errors).all()
    assert np.isnan(prediction_errors("classification", ["a", "b"], [None, np.nan])).all()
