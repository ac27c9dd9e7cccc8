"""Feature engineering and scaling as one scikit-learn pipeline.

The pipeline is the first step of every saved model, so a model file carries
its own preprocessing and takes raw customer rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mlvs.ml.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES

if TYPE_CHECKING:
    import pandas as pd  # imported where a frame is made: see mlvs.ml.data

ENGINEERED_FEATURES = ("charges_per_tenure_month", "is_new_customer", "calls_per_tenure_year")


def add_engineered_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Ratios a churn model cannot easily learn from the raw columns alone."""
    out = frame.copy()
    tenure = out["tenure_months"].astype(float)
    out["charges_per_tenure_month"] = out["total_charges"].astype(float) / (tenure + 1.0)
    out["is_new_customer"] = (tenure < 6).astype(float)
    out["calls_per_tenure_year"] = out["support_calls"].astype(float) / (tenure / 12.0 + 1.0)
    return out


def build_preprocessor() -> Any:
    """Engineer, then scale numeric and one-hot encode categorical features."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    encode = ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(NUMERIC_FEATURES) + list(ENGINEERED_FEATURES)),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                list(CATEGORICAL_FEATURES),
            ),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [("engineer", FunctionTransformer(add_engineered_features)), ("encode", encode)]
    )


def build_model(classifier: Any) -> Any:
    """The full model: preprocessing followed by `classifier`."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("preprocess", build_preprocessor()), ("classifier", classifier)])


def transformed_feature_names(model: Any) -> list[str]:
    """Names of the columns the classifier of a fitted model sees."""
    preprocess = (
        model.named_steps["preprocess"]
        if "preprocess" in getattr(model, "named_steps", {})
        else model
    )
    return [str(name) for name in preprocess.named_steps["encode"].get_feature_names_out()]


def feature_importances(model: Any) -> pd.Series:
    """Importance of each transformed feature, largest first (|coefficient| for linear models)."""
    import pandas as pd

    classifier = model.named_steps["classifier"]
    if hasattr(classifier, "feature_importances_"):
        values = np.asarray(classifier.feature_importances_, dtype=float)
    else:
        values = np.abs(np.asarray(classifier.coef_, dtype=float)).ravel()
    return pd.Series(values, index=transformed_feature_names(model)).sort_values(ascending=False)
