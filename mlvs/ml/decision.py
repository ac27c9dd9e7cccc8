"""Decisions by expected value: what contacting a customer is worth, and whom to contact.

The business section of `params/train.yaml` names the drivers of a retention campaign
(what a kept customer is worth, the share of churners an offer saves, the offer's cost,
and what a non-churner who accepts it costs in margin). Every value here is against
doing nothing, so leaving a customer alone is worth 0 whether they churn or not, and
contacting one is worth

    churner:      save_rate x customer_value - offer_cost
    non-churner:  -(offer_cost + non_churner_cost)

The decision threshold is the probability above which contacting pays most in total:
it is chosen on out-of-fold training predictions, never on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The confusion-matrix cells, as they may still be written out in the business section.
MATRIX_CELLS = ("true_positive", "false_positive", "false_negative", "true_negative")
# Written-out cells must agree with the drivers to this many currency units.
CELL_TOLERANCE = 1e-6


class ValueDrivers(Protocol):
    """The named drivers of a campaign's value (`BusinessParams`)."""

    customer_value: float | None
    customer_value_months: float | None
    save_rate: float
    offer_cost: float
    non_churner_cost: float
    budget_share: float


# The threshold of a model version that recorded none: every version before thresholds were
# chosen by value decided at 0.5, the fixed default of that time.
UNRECORDED_THRESHOLD = 0.5


def fixed_or_default_threshold(rule: float | str) -> float:
    """`decision_threshold` of the train params as a number: itself, or the default when chosen by value."""
    return float(rule) if not isinstance(rule, str) else UNRECORDED_THRESHOLD


def flat_matrix(drivers: ValueDrivers) -> dict[str, float]:
    """The value of each confusion-matrix cell when every customer is worth `customer_value`."""
    if drivers.customer_value is None:
        raise ValueError("the matrix varies with each customer's monthly charges")
    return {
        "true_positive": drivers.save_rate * drivers.customer_value - drivers.offer_cost,
        "false_positive": -(drivers.offer_cost + drivers.non_churner_cost),
        "false_negative": 0.0,
        "true_negative": 0.0,
    }


@dataclass(frozen=True)
class ContactValues:
    """What contacting each customer is worth if they churn, and if they do not."""

    if_churner: np.ndarray
    if_not: np.ndarray
    offer_cost: float

    def realised(self, y: Any) -> np.ndarray:
        """What contacting each customer earned, given whether they churned."""
        # deferred: numpy (~0.2 s) is imported only when this runs (params import this module)
        import numpy as np

        y = np.asarray(y, dtype=bool)
        return np.where(y, self.if_churner, self.if_not)


def contact_values(drivers: ValueDrivers, monthly_charges: Any) -> ContactValues:
    """Per-customer value of an offer; customer value scales with monthly charges if so configured."""
    # deferred: numpy (~0.2 s) is imported only when this runs (params import this module)
    import numpy as np

    charges = np.asarray(monthly_charges, dtype=float)
    if drivers.customer_value is not None:
        worth = np.full(charges.shape, float(drivers.customer_value))
    else:  # the params check that exactly one of the two is given
        worth = float(drivers.customer_value_months or 0.0) * charges
    return ContactValues(
        if_churner=drivers.save_rate * worth - drivers.offer_cost,
        if_not=np.full(charges.shape, -(drivers.offer_cost + drivers.non_churner_cost)),
        offer_cost=drivers.offer_cost,
    )


def net_value(y: Any, probability: Any, threshold: float, values: ContactValues) -> float:
    """Net value of contacting every customer whose churn probability is at least `threshold`."""
    # deferred: numpy (~0.2 s) is imported only when this runs (params import this module)
    import numpy as np

    contacted = np.asarray(probability, dtype=float) >= threshold
    return float(values.realised(y)[contacted].sum())


@dataclass(frozen=True)
class Cuts:
    """Every distinct campaign a threshold can make, most likely churners first."""

    # thresholds[k] contacts exactly the customers of the first `contacted[k]` in that order
    thresholds: np.ndarray
    contacted: np.ndarray
    net_value: np.ndarray


def cuts(y: Any, probability: Any, values: ContactValues) -> Cuts:
    """Net value of every threshold at once: contact nobody, then each distinct probability in turn."""
    # deferred: numpy (~0.2 s) is imported only when this runs (params import this module)
    import numpy as np

    p = np.asarray(probability, dtype=float)
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    earned = np.concatenate([[0.0], np.cumsum(values.realised(y)[order])])
    # A cut falls only between distinct probabilities: tied customers go together.
    last_of_tie = np.flatnonzero(np.concatenate([p_sorted[1:] != p_sorted[:-1], [True]]))
    distinct = p_sorted[last_of_tie]
    # Each threshold lies halfway to the next lower probability, so that it does not hinge
    # on one customer's exact score (and never falls onto that lower one).
    upper = np.concatenate([[1.0], distinct])
    lower = np.concatenate([distinct, [0.0]])
    halfway = lower + (upper - lower) / 2
    thresholds = np.where(halfway > lower, halfway, upper)
    contacted = np.concatenate([[0], last_of_tie + 1])
    # No threshold up to 1 leaves out a customer scored 1.0: then "contact nobody" is no cut.
    keep = slice(1, None) if distinct[0] >= 1.0 else slice(None)
    return Cuts(
        thresholds=thresholds[keep], contacted=contacted[keep], net_value=earned[contacted][keep]
    )


def choose_threshold(y: Any, probability: Any, values: ContactValues) -> float:
    """The threshold of highest net value on `probability` (out-of-fold predictions, not the test set).

    Of equally good thresholds the highest wins: the same value from fewer offers.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs (params import this module)
    import numpy as np

    table = cuts(y, probability, values)
    return float(table.thresholds[int(np.argmax(table.net_value))])


def profit_curve(y: Any, probability: Any, values: ContactValues) -> pd.DataFrame:
    """Net value against the share of customers contacted, one row per distinct threshold."""
    # deferred: numpy (~0.2 s) and pandas (~1 s) are imported only when this runs
    import numpy as np
    import pandas as pd

    table = cuts(y, probability, values)
    p_sorted = np.sort(np.asarray(probability, dtype=float))[::-1]
    # The lowest probability a cut contacts: a campaign "p >= t" is the last cut with it >= t.
    lowest = np.where(table.contacted > 0, p_sorted[np.maximum(table.contacted - 1, 0)], np.inf)
    return pd.DataFrame(
        {
            "threshold": table.thresholds,
            "lowest_contacted": lowest,
            "share_contacted": table.contacted / len(p_sorted),
            "net_value": table.net_value,
        }
    )


def campaign(
    y: Any, probability: Any, threshold: float, values: ContactValues, budget_share: float
) -> dict[str, float]:
    """Net value at `threshold` with its baselines, and the ROI of a fixed-budget campaign.

    The fixed budget contacts the `budget_share` of customers most likely to churn;
    its ROI is net value over the offers' cost. ROI is not the headline: it rises as
    fewer, likelier customers are contacted, so tuning on it shrinks the campaign.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs (params import this module)
    import numpy as np

    p = np.asarray(probability, dtype=float)
    realised = values.realised(y)
    contacted = p >= threshold
    budget = round(budget_share * len(p))
    top = np.argsort(-p, kind="stable")[:budget]
    budget_net = float(realised[top].sum())
    spend = budget * values.offer_cost
    return {
        "decision_threshold": float(threshold),
        "net_value": float(realised[contacted].sum()),
        "contacted": float(contacted.sum()),
        "net_value_contact_everyone": float(realised.sum()),
        "net_value_contact_nobody": 0.0,
        "budget_contacted": float(budget),
        "budget_net_value": budget_net,
        "budget_roi": budget_net / spend if spend else 0.0,
    }
