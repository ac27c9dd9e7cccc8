"""What one monitored batch says, and the alerts its rules raise (pure: figures in, alerts out).

A batch gives observations: each is a metric about a subject (a feature, the predictions,
a performance figure) with its value. Rules (`params/monitoring.yaml`) compare one metric
with a threshold; a rule breached on `batches` consecutive batches raises an alert for that
subject. An open alert is not raised again while its rule stays breached; it is resolved
by the first batch on which the rule passes again. The state that carries this from batch
to batch is a plain document (`AlertState.to_dict`), kept by the caller.

Metrics:
- `share_drifted` (subject `dataset`): the share of features whose drift test fired;
- `feature_psi` (a feature): the feature's population stability index;
- `feature_drifted` (a feature): 1 when its drift test fired, else 0;
- `missing_share` (a feature): the share of the batch's rows without a value;
- `schema_violations` (`schema`): how many ways the batch breaks the declared schema;
- `prediction_psi` (`churn_probability`): PSI of the predicted probabilities against
  the test set's at training time;
- `predicted_churn_rate` (`churn_probability`): the share predicted to churn;
- with labels, each a drop from the training-time figure on the test set (positive is
  worse): `roc_auc_drop` (`roc_auc`), `recall_drop` (`recall`) and
  `net_value_per_customer_drop` (`net_value_per_customer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlvs.ml.drift import DatasetDrift

Metric = Literal[
    "share_drifted",
    "feature_psi",
    "feature_drifted",
    "missing_share",
    "schema_violations",
    "prediction_psi",
    "predicted_churn_rate",
    "roc_auc_drop",
    "recall_drop",
    "net_value_per_customer_drop",
]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
# The metrics only labels can give.
PERFORMANCE_METRICS = ("roc_auc_drop", "recall_drop", "net_value_per_customer_drop")


class Rule(BaseModel):
    """One alert rule: a metric, its threshold, how many batches in a row, how bad."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    metric: Metric
    above: float | None = None  # breached when the value is greater
    below: float | None = None  # breached when the value is smaller
    batches: int = Field(default=1, ge=1, le=100)
    severity: Literal["info", "warning", "critical"] = "warning"

    @model_validator(mode="after")
    def _one_threshold(self) -> Rule:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"rule {self.name!r}: give exactly one of 'above' and 'below'")
        return self

    @property
    def threshold(self) -> float:
        return float(self.above if self.above is not None else self.below)  # type: ignore[arg-type]

    def breached(self, value: float) -> bool:
        """Whether `value` breaks this rule."""
        if self.above is not None:
            return value > self.above
        return value < self.threshold


class DeployGuard(BaseModel):
    """What a freshly deployed champion must not do: lose to the version it replaced on the same batch."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    auto_rollback: bool  # roll back by itself, or only recommend the command
    within_batches: int = Field(ge=1, le=1000)  # a deploy is fresh for this many monitored batches
    metric: Literal["net_value_per_customer", "roc_auc"]
    margin: float = Field(ge=0.0)  # worse by more than this, on the metric's own scale


def deploy_is_worse(guard: DeployGuard, champion: float, previous: float) -> bool:
    """Whether the champion's figure on a batch is worse than its predecessor's by more than the margin."""
    return previous - champion > guard.margin


@dataclass(frozen=True)
class Observation:
    """One figure of a batch: a metric about a subject."""

    metric: str
    subject: str
    value: float


def campaign_roi(net: float, contacted: int, offer_cost: float) -> float:
    """Return on the offers: net value over what the offers cost (0 when none was made)."""
    spend = contacted * offer_cost
    return net / spend if spend else 0.0


@dataclass(frozen=True)
class Performance:
    """Realised performance on a batch whose labels arrived, beside the training-time figures."""

    roc_auc: float
    recall: float
    net_value_per_customer: float
    reference_roc_auc: float
    reference_recall: float
    reference_net_value_per_customer: float
    # Net value over the offers' cost at the decision threshold (0 when nobody is contacted).
    roi: float = 0.0
    reference_roi: float = 0.0


def observations(
    drift: DatasetDrift,
    schema_violations: int,
    prediction_psi: float,
    predicted_churn_rate: float,
    performance: Performance | None = None,
) -> list[Observation]:
    """Every metric a rule can watch, from one batch's figures."""
    found = [
        Observation("share_drifted", "dataset", drift.share_drifted),
        Observation("schema_violations", "schema", float(schema_violations)),
        Observation("prediction_psi", "churn_probability", prediction_psi),
        Observation("predicted_churn_rate", "churn_probability", predicted_churn_rate),
    ]
    for f in drift.features:
        found.append(Observation("feature_psi", f.feature, f.psi))
        found.append(Observation("feature_drifted", f.feature, float(f.drifted)))
        found.append(Observation("missing_share", f.feature, f.missing_share))
    if performance is not None:
        p = performance
        found += [
            Observation("roc_auc_drop", "roc_auc", p.reference_roc_auc - p.roc_auc),
            Observation("recall_drop", "recall", p.reference_recall - p.recall),
            Observation(
                "net_value_per_customer_drop",
                "net_value_per_customer",
                p.reference_net_value_per_customer - p.net_value_per_customer,
            ),
        ]
    return found


@dataclass(frozen=True)
class Alert:
    """An alert: which rule, about what, the value that broke it, and whether it is still open."""

    rule: str
    severity: str
    metric: str
    subject: str
    value: float
    threshold: float
    raised_batch: int
    raised_at: str
    status: str = "open"  # "open" or "resolved"
    resolved_batch: int | None = None
    resolved_at: str | None = None

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "metric": self.metric,
            "subject": self.subject,
            "value": self.value,
            "threshold": self.threshold,
            "raised_batch": self.raised_batch,
            "raised_at": self.raised_at,
            "status": self.status,
            "resolved_batch": self.resolved_batch,
            "resolved_at": self.resolved_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class AlertState:
    """The alerts raised so far and each rule's current run of breached batches, per subject."""

    alerts: list[Alert] = field(default_factory=list)
    streaks: dict[str, int] = field(default_factory=dict)  # "rule:subject" -> batches in a row
    batches_seen: list[int] = field(default_factory=list)

    def open(self) -> dict[str, Alert]:
        """The open alerts, by `rule:subject`."""
        return {a.key: a for a in self.alerts if a.status == "open"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerts": [a.to_dict() for a in self.alerts],
            "streaks": dict(sorted(self.streaks.items())),
            "batches_seen": list(self.batches_seen),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        return cls(
            [Alert.from_dict(a) for a in data.get("alerts", [])],
            {str(k): int(v) for k, v in data.get("streaks", {}).items()},
            [int(b) for b in data.get("batches_seen", [])],
        )


@dataclass(frozen=True)
class Step:
    """What one batch changed: alerts raised and resolved, and the ones still open."""

    raised: list[Alert]
    resolved: list[Alert]
    still_open: list[Alert]


def step(
    state: AlertState, batch: int, found: list[Observation], rules: list[Rule], now: str
) -> Step:
    """Apply `rules` to batch `batch`'s observations, updating `state` in place."""
    opened = state.open()
    raised: list[Alert] = []
    resolved: list[Alert] = []
    for rule in rules:
        for o in (o for o in found if o.metric == rule.metric):
            key = f"{rule.name}:{o.subject}"
            if rule.breached(o.value):
                state.streaks[key] = state.streaks.get(key, 0) + 1
                if key not in opened and state.streaks[key] >= rule.batches:
                    alert = Alert(
                        rule.name,
                        rule.severity,
                        rule.metric,
                        o.subject,
                        o.value,
                        rule.threshold,
                        batch,
                        now,
                    )
                    state.alerts.append(alert)
                    raised.append(alert)
            else:
                state.streaks.pop(key, None)
                if key in opened:
                    done = replace(
                        opened[key], status="resolved", resolved_batch=batch, resolved_at=now
                    )
                    state.alerts[state.alerts.index(opened[key])] = done
                    resolved.append(done)
    if batch not in state.batches_seen:
        state.batches_seen.append(batch)
    return Step(raised, resolved, list(state.open().values()))
