"""The promotion gate: does a candidate model beat the champion by more than the noise?

One implementation for both decisions that move `champion`: the train stage's
champion/challenger choice and `mlvs deploy`. Both models are scored on the same
held-out rows (the gate checks the hash of the data each was scored on and refuses
to compare otherwise), on ROC-AUC and on net value, with a paired bootstrap: the
same resampled rows score both models, so what the two share (an easy or a hard
sample) cancels out of their difference. The candidate passes when, on each metric,
its observed gain reaches both the absolute and the relative margin and the lower
end of the bootstrap's percentile interval of the gain is above zero.

Pure: values in, a decision out; the caller finds the data, models and margins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlvs.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

    from mlvs.ml.decision import ContactValues

METHOD = "paired bootstrap, percentile interval"
ROC_AUC = "roc_auc"
NET_VALUE = "net_value"

# The value of each customer's outcome under a model's decisions: (probabilities, threshold) -> one
# value per row. Net value is their sum, so a resample's net value is a weighted sum of them.
CustomerValues = Callable[[Any, float], "np.ndarray"]


class DataMismatchError(BadInputError):
    """Raised when two models were not scored on the same held-out data."""


@dataclass(frozen=True)
class Scored:
    """One model's churn probabilities on held-out rows, and what identifies it and them."""

    label: str  # "version 3", "the new model"
    probabilities: Any
    data_sha256: str  # of the rows the probabilities were computed on
    threshold: float  # the model's own decision threshold


@dataclass(frozen=True)
class Margins:
    """What a candidate must gain over the champion, per metric, absolute and relative."""

    roc_auc_gain: float = 0.0
    roc_auc_gain_relative: float = 0.0
    net_value_gain: float = 0.0
    net_value_gain_relative: float = 0.0
    resamples: int = 1000
    confidence: float = 0.95

    @classmethod
    def from_params(cls, registry: Any) -> Margins:
        """The margins of the `registry` section of `params/train.yaml`."""
        return cls(
            roc_auc_gain=registry.min_roc_auc_gain,
            roc_auc_gain_relative=registry.min_roc_auc_gain_relative,
            net_value_gain=registry.min_net_value_gain,
            net_value_gain_relative=registry.min_net_value_gain_relative,
            resamples=registry.bootstrap_resamples,
            confidence=registry.bootstrap_confidence,
        )

    def required(self, metric: str, champion: float) -> float:
        """The gain `metric` must reach: the larger of the absolute and the relative margin."""
        absolute, relative = (
            (self.roc_auc_gain, self.roc_auc_gain_relative)
            if metric == ROC_AUC
            else (self.net_value_gain, self.net_value_gain_relative)
        )
        return max(absolute, relative * abs(champion))


@dataclass(frozen=True)
class Comparison:
    """One metric of both models: the observed gain, what it needed, and its bootstrap interval."""

    metric: str
    champion: float
    candidate: float
    gain: float
    required_gain: float
    interval_low: float
    interval_high: float
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with every figure that made it."""

    promote: bool
    candidate: str
    champion: str | None
    reason: str
    comparisons: list[Comparison] = field(default_factory=list)
    method: str = METHOD
    resamples: int = 0
    confidence: float = 0.0
    seed: int = 0
    rows: int = 0
    data_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)

    def figures(self) -> dict[str, float]:
        """Flat metrics (`gate_<metric>_<figure>`), as an MLflow run logs them."""
        out: dict[str, float] = {"gate_promote": float(self.promote)}
        for c in self.comparisons:
            for name in ("champion", "candidate", "gain", "required_gain"):
                out[f"gate_{c.metric}_{name}"] = float(getattr(c, name))
            out[f"gate_{c.metric}_interval_low"] = c.interval_low
            out[f"gate_{c.metric}_interval_high"] = c.interval_high
        return out


def first_champion(candidate: str) -> GateDecision:
    """The decision when there is no champion yet: the candidate takes the place."""
    return GateDecision(True, candidate, None, "there is no champion yet")


def _resample_counts(rows: int, resamples: int, seed: int) -> np.ndarray:
    """How often each row is drawn in each resample (resamples x rows), seeded."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.multinomial(rows, np.full(rows, 1.0 / rows), size=resamples).astype(np.float64)


def weighted_roc_auc(y_true: Any, scores: Any, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of `scores` once per row of `weights` (rows drawn that many times); ties count half.

    The Mann-Whitney form: the share of (churner, non-churner) pairs that the scores
    order correctly, each pair weighted by how often both rows were drawn. One sort,
    then sums per distinct score, so a thousand resamples cost one pass each.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    s, y, w = s[order], y[order], np.atleast_2d(weights)[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    positives = np.add.reduceat(w * y, starts, axis=1)
    negatives = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    ordered = (positives * (below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, ordered / np.where(pairs > 0, pairs, 1.0), np.nan)


def _compare(
    metric: str,
    champion: float,
    candidate: float,
    differences: np.ndarray,
    margins: Margins,
) -> Comparison:
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    tail = (1.0 - margins.confidence) / 2.0
    finite = differences[np.isfinite(differences)]
    low, high = (
        (float(np.quantile(finite, tail)), float(np.quantile(finite, 1.0 - tail)))
        if finite.size
        else (float("nan"), float("nan"))
    )
    gain = candidate - champion
    required = margins.required(metric, champion)
    level = f"{margins.confidence:.0%}"
    if gain < required:
        passed, reason = False, f"{metric} gain {gain:+.4g} is below the required {required:.4g}"
    elif not low > 0.0:
        passed, reason = (
            False,
            f"{metric} gain {gain:+.4g} is inside the noise ({level} interval {low:+.4g} to {high:+.4g})",
        )
    else:
        passed, reason = (
            True,
            f"{metric} gain {gain:+.4g} (needed {required:.4g}; {level} interval {low:+.4g} to {high:+.4g})",
        )
    return Comparison(metric, champion, candidate, gain, required, low, high, passed, reason)


def compare(
    y_true: Any,
    candidate: Scored,
    champion: Scored,
    customer_values: CustomerValues,
    margins: Margins,
    seed: int,
) -> GateDecision:
    """The gate: the candidate passes only if it beats the champion on every metric beyond the noise.

    Refuses (DataMismatchError) two models scored on different data, or probabilities
    that do not match the labels in number.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    if candidate.data_sha256 != champion.data_sha256:
        raise DataMismatchError(
            f"{candidate.label} was scored on data {candidate.data_sha256[:12]}… and {champion.label} on "
            f"{champion.data_sha256[:12]}…; the gate compares two models only on the same held-out rows: "
            "score both on one test set"
        )
    y = np.asarray(y_true)
    sizes = {len(y), len(candidate.probabilities), len(champion.probabilities)}
    if len(sizes) != 1 or len(y) == 0:
        raise DataMismatchError(
            f"{len(y)} labels, {len(candidate.probabilities)} probabilities of {candidate.label} and "
            f"{len(champion.probabilities)} of {champion.label}: the gate needs one probability per "
            "labelled row from each model"
        )
    weights = _resample_counts(len(y), margins.resamples, seed)
    observed = np.ones((1, len(y)))
    auc = {
        who: (
            float(weighted_roc_auc(y, scored.probabilities, observed)[0]),
            weighted_roc_auc(y, scored.probabilities, weights),
        )
        for who, scored in (("candidate", candidate), ("champion", champion))
    }
    values = {
        who: np.asarray(customer_values(scored.probabilities, scored.threshold), dtype=np.float64)
        for who, scored in (("candidate", candidate), ("champion", champion))
    }
    comparisons = [
        _compare(
            ROC_AUC,
            auc["champion"][0],
            auc["candidate"][0],
            auc["candidate"][1] - auc["champion"][1],
            margins,
        ),
        _compare(
            NET_VALUE,
            float(values["champion"].sum()),
            float(values["candidate"].sum()),
            weights @ (values["candidate"] - values["champion"]),
            margins,
        ),
    ]
    promote = all(c.passed for c in comparisons)
    failed = [c.reason for c in comparisons if not c.passed]
    reason = (
        f"{candidate.label} beats {champion.label}: " + "; ".join(c.reason for c in comparisons)
        if promote
        else f"{candidate.label} does not beat {champion.label}: " + "; ".join(failed)
    )
    return GateDecision(
        promote=promote,
        candidate=candidate.label,
        champion=champion.label,
        reason=reason,
        comparisons=comparisons,
        resamples=margins.resamples,
        confidence=margins.confidence,
        seed=seed,
        rows=len(y),
        data_sha256=candidate.data_sha256,
    )


def campaign_customer_values(y_true: Any, contact: ContactValues) -> CustomerValues:
    """Per-customer values of a campaign at a threshold: what contacting each one earned, 0 if left alone.

    `contact` comes from the business drivers (`decision.contact_values`), so their sum
    is `decision.net_value` of the same campaign.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    realised = contact.realised(y_true)

    def values(probabilities: Any, threshold: float) -> np.ndarray:
        contacted = np.asarray(probabilities, dtype=float) >= threshold
        return np.where(contacted, realised, 0.0).astype(np.float64)

    return values


def rows_sha256(features: Any, labels: Any) -> str:
    """SHA-256 of held-out rows (features and labels, in order): what "the same data" means to the gate."""
    # deferred: pandas (~1 s) is imported only when this runs
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(features, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(pd.Series(labels), index=False).to_numpy().tobytes())
    digest.update(",".join(map(str, features.columns)).encode())
    return digest.hexdigest()
