"""Input drift of a batch against the training data, feature by feature (pure: numbers in, numbers out).

The tests and their thresholds follow the defaults of Evidently's data-drift preset
(`DataDriftPreset`, "stattest" auto-selection), so a reader who knows that tool reads these
figures the same way:

- a numeric feature with at most 1,000 reference rows: the two-sample Kolmogorov-Smirnov
  test, drifted when its p-value is below 0.05;
- a numeric feature with more reference rows: the Wasserstein distance normed by the
  reference's standard deviation, drifted above 0.1 (a p-value on thousands of rows
  flags differences too small to matter);
- a categorical feature (or a numeric one with at most five distinct values, as Evidently
  treats them) with at most 1,000 reference rows: Pearson's chi-squared test on the
  category counts, drifted when its p-value is below 0.05 (the test of homogeneity of
  the two samples, where Evidently tests the batch against the reference's shares);
- with more reference rows: the Jensen-Shannon distance of the category shares
  (base 2, between 0 and 1), drifted above 0.1;
- the dataset drifts when at least half of its features drift (`drift_share` 0.5).

Every feature also gets a population stability index (PSI) beside its test, on ten
quantile bins of the reference for numbers and on the categories for categories, with the
credit-scoring convention: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a
significant one. A category the reference never saw counts in the batch's shares; it is
also a schema finding of the monitor, not only a drift.

scipy is imported by the functions that test, not with the module (it is already a
dependency of scikit-learn).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Evidently's DataDriftPreset defaults.
SMALL_REFERENCE_ROWS = 1000
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
DRIFT_SHARE = 0.5
CATEGORICAL_MAX_DISTINCT = 5
# PSI: ten bins, and the share given to an empty bin so the logarithm stays finite.
PSI_BINS = 10
PSI_EMPTY_SHARE = 1e-4
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25


@dataclass(frozen=True)
class FeatureDrift:
    """How one feature of a batch compares with the training data."""

    feature: str
    kind: str  # "numeric" or "categorical"
    statistic: str  # "ks_p_value", "wasserstein_normed", "chi2_p_value" or "jensen_shannon"
    value: float
    threshold: float
    drifted: bool
    psi: float
    missing_share: float  # of the batch's rows, left out of the test

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "psi": self.psi,
            "missing_share": self.missing_share,
        }


@dataclass(frozen=True)
class DatasetDrift:
    """Every feature's drift, and whether the batch as a whole drifted."""

    features: tuple[FeatureDrift, ...]
    share_drifted: float
    drifted: bool

    def feature(self, name: str) -> FeatureDrift:
        """The drift of feature `name`."""
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "share_drifted": self.share_drifted,
            "drifted": self.drifted,
            "drift_share_threshold": DRIFT_SHARE,
            "features": {f.feature: f.as_dict() for f in self.features},
        }


def _present(values: Sequence[Any]) -> list[Any]:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def is_categorical(values: Sequence[Any]) -> bool:
    """Whether a column is compared as categories: text, or numbers with at most five values."""
    present = _present(values)
    if any(isinstance(v, str) for v in present):
        return True
    return len(set(present)) <= CATEGORICAL_MAX_DISTINCT


def _shares(values: Sequence[Any], categories: Sequence[Any]) -> list[float]:
    counts = dict.fromkeys(categories, 0)
    for v in values:
        counts[v] += 1
    total = max(len(values), 1)
    return [counts[c] / total for c in categories]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of two share vectors over the same bins."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, PSI_EMPTY_SHARE), max(a, PSI_EMPTY_SHARE)
        total += (a - e) * math.log(a / e)
    return total


def numeric_psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """PSI on ten quantile bins of the reference (fewer when values repeat)."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    ref_bins = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1)
    cur_bins = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1)
    return psi((ref_bins / max(ref.size, 1)).tolist(), (cur_bins / max(cur.size, 1)).tolist())


def categorical_psi(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """PSI over the categories of either side (one unseen in the reference counts too)."""
    categories = sorted(set(reference) | set(current), key=str)
    return psi(_shares(reference, categories), _shares(current, categories))


def jensen_shannon(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """The Jensen-Shannon distance (base 2, 0 to 1) between the category shares."""
    # deferred: scipy (~0.3 s) is imported only when this runs
    from scipy.spatial.distance import jensenshannon

    categories = sorted(set(reference) | set(current), key=str)
    distance = jensenshannon(_shares(reference, categories), _shares(current, categories), base=2)
    return float(0.0 if math.isnan(distance) else distance)


def chi2_p_value(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """Pearson's chi-squared test of homogeneity on the two samples' category counts.

    A two-by-k table, not the batch's counts against the reference's shares taken as
    exact: the reference is a sample too, and treating its shares as known flags a
    batch of the training distribution far more often than one time in twenty.
    """
    # deferred: scipy (~0.3 s) is imported only when this runs
    from scipy.stats import chi2_contingency

    categories = sorted(set(reference) | set(current), key=str)
    if len(categories) < 2:
        return 1.0
    counts = dict.fromkeys(categories, 0)
    table = []
    for sample in (reference, current):
        row = dict(counts)
        for v in sample:
            row[v] += 1
        table.append([row[c] for c in categories])
    return float(chi2_contingency(table, correction=False).pvalue)


def ks_p_value(reference: Sequence[float], current: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov test's p-value."""
    # deferred: scipy (~0.3 s) is imported only when this runs
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, current).pvalue)


def wasserstein_normed(reference: Sequence[float], current: Sequence[float]) -> float:
    """The Wasserstein distance in units of the reference's standard deviation."""
    # deferred: numpy (~0.2 s) and scipy (~0.3 s) are imported only when this runs
    import numpy as np
    from scipy.stats import wasserstein_distance

    spread = float(np.std(np.asarray(reference, dtype=float)))
    distance = float(wasserstein_distance(reference, current))
    return distance / spread if spread > 0 else (0.0 if distance == 0 else math.inf)


# The statistic Evidently's preset picks, by the feature's kind and whether the reference is small.
STATISTICS = {
    ("numeric", True): "ks_p_value",
    ("numeric", False): "wasserstein_normed",
    ("categorical", True): "chi2_p_value",
    ("categorical", False): "jensen_shannon",
}


def _score(statistic: str, ref: list[Any], cur: list[Any]) -> float:
    if statistic == "ks_p_value":
        return ks_p_value(ref, cur)
    if statistic == "wasserstein_normed":
        return wasserstein_normed(ref, cur)
    if statistic == "chi2_p_value":
        return chi2_p_value(ref, cur)
    return jensen_shannon(ref, cur)


def feature_drift(name: str, reference: Sequence[Any], current: Sequence[Any]) -> FeatureDrift:
    """The drift of one feature, by the test its type and the reference's size call for.

    Missing values of the batch are left out of the test and reported as a share; a
    batch with none present drifts by definition.
    """
    present = _present(current)
    missing = 1.0 - len(present) / len(current) if len(current) else 0.0
    ref = _present(reference)
    small = len(ref) <= SMALL_REFERENCE_ROWS
    kind = "categorical" if is_categorical(ref) else "numeric"
    threshold = P_VALUE_THRESHOLD if small else DISTANCE_THRESHOLD
    statistic = STATISTICS[kind, small]
    if present:
        value = _score(statistic, ref, present)
        index = (
            categorical_psi(ref, present) if kind == "categorical" else numeric_psi(ref, present)
        )
    else:
        value, index = (0.0 if small else math.inf), math.inf
    drifted = value < threshold if small else value > threshold
    return FeatureDrift(name, kind, statistic, value, threshold, drifted, index, missing)


def dataset_drift(
    reference: dict[str, Sequence[Any]], current: dict[str, Sequence[Any]]
) -> DatasetDrift:
    """Every feature of `reference` compared with the same column of `current`.

    Both are columns by name (for example `frame[features].to_dict("list")`); a column
    missing from `current` is a schema error the caller reports before asking this.
    """
    features = tuple(feature_drift(name, reference[name], current[name]) for name in reference)
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return DatasetDrift(features, share, share >= DRIFT_SHARE)
