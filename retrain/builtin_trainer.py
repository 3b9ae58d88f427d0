"""The built-in trainer, so that retraining works out of the box: scikit-learn gradient
boosting behind imputation (numeric) and one-hot encoding (categorical columns)."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder


def train(frame: pd.DataFrame, target: str, *, task: str, seed: int) -> Pipeline:
    """Fits on every column of `frame` but `target`; returns the fitted pipeline."""
    features = frame.drop(columns=[target])
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    preprocess = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ]
    )
    estimator = (
        HistGradientBoostingClassifier(random_state=seed)
        if task == "classification"
        else HistGradientBoostingRegressor(random_state=seed)
    )
    model = Pipeline([("preprocess", preprocess), ("estimator", estimator)])
    return model.fit(features, frame[target])
