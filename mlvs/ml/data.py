"""Synthetic customer data, its declared schema, and the train/test split.

Generation is seeded: the same parameters give the same bytes on disk.

pandas is imported by the functions that make or read a frame, not with the
module: `mlvs verify` imports this module to fingerprint its code, and a verify
whose checks all passed before on the same bytes never needs pandas (a second).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlvs._io import atomic_write_bytes
from mlvs.errors import BadInputError, SchemaViolationError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TARGET = "churn"


CONTRACTS = ("Month-to-month", "One year", "Two year")


PAYMENT_METHODS = ("Electronic check", "Mailed check", "Bank transfer", "Credit card")


INTERNET_SERVICES = ("DSL", "Fiber optic", "No internet")


@dataclass(frozen=True)
class Column:
    """One column of the declared schema."""

    name: str
    kind: str  # "int", "float", "category" or "id"
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] = ()


SCHEMA: tuple[Column, ...] = (
    Column("customer_id", "id"),
    Column("tenure_months", "int", 0, 72),
    Column("contract", "category", allowed=CONTRACTS),
    Column("monthly_charges", "float", 10.0, 200.0),
    Column("total_charges", "float", 0.0, 20_000.0),
    Column("support_calls", "int", 0, 30),
    Column("payment_method", "category", allowed=PAYMENT_METHODS),
    Column("internet_service", "category", allowed=INTERNET_SERVICES),
    Column("paperless_billing", "int", 0, 1),
    Column("senior_citizen", "int", 0, 1),
    Column(TARGET, "int", 0, 1),
)


FEATURES = tuple(c.name for c in SCHEMA if c.name not in ("customer_id", TARGET))


NUMERIC_FEATURES = tuple(
    c.name for c in SCHEMA if c.kind in ("int", "float") and c.name in FEATURES
)


CATEGORICAL_FEATURES = tuple(c.name for c in SCHEMA if c.kind == "category")


# Churn rates the generator is tuned to reproduce at its default parameters (churn_rate
# 0.26, signal_strength 1, label_noise 0.03), counted on IBM's public Telco customer-churn
# sample: 7,043 customers of a fictional Californian telecom, "WA_Fn-UseC_-Telco-Customer-
# Churn.csv" (https://www.kaggle.com/datasets/blastchar/telco-customer-churn). There, 26.5%
# churned overall; tenure has a median of 29 months (mean 32.4) with the most customers at
# 1 month and at the 72-month cap; customers without internet service pay 18.25 to 26.90 a
# month. Bank transfer and credit card are "(automatic)" in the sample.
TELCO_CHURN_RATES: dict[str, dict[str, float]] = {
    "contract": {"Month-to-month": 0.427, "One year": 0.113, "Two year": 0.028},
    "payment_method": {
        "Electronic check": 0.453,
        "Mailed check": 0.191,
        "Bank transfer": 0.167,
        "Credit card": 0.152,
    },
    "internet_service": {"DSL": 0.190, "Fiber optic": 0.419, "No internet": 0.074},
}
TELCO_OVERALL_CHURN_RATE = 0.265
TELCO_MEDIAN_TENURE_MONTHS = 29.0

# Shares of each contract, and of each internet service and payment method within a
# contract (rows in the order of CONTRACTS), close to the sample's cross-tabulations:
# long contracts go with automatic payments and less fibre.
_CONTRACT_SHARES = (0.55, 0.21, 0.24)
_INTERNET_SHARES = ((0.32, 0.55, 0.13), (0.39, 0.37, 0.24), (0.37, 0.25, 0.38))
_PAYMENT_SHARES = ((0.48, 0.23, 0.15, 0.14), (0.24, 0.21, 0.26, 0.29), (0.10, 0.24, 0.33, 0.33))
# Today's monthly price by internet service: low + span x Beta(a, b), bounded by construction
# so no value piles up at a clip (DSL, fibre, none; the sample's ranges).
_PRICE_BANDS = ((24.0, 70.0, 2.2, 2.4), (67.5, 51.0, 2.0, 2.1), (18.25, 8.5, 1.3, 3.5))
_PAPERLESS_SHARE = (0.55, 0.75, 0.29)
_SENIOR_SHARE = 0.16
# Prices rise on each anniversary by a rate drawn per customer, up to this much a year.
_MAX_ANNUAL_PRICE_RISE = 0.08
# The books go back six years: longer-standing customers are recorded at 72 months.
_MAX_TENURE = 72

# Log-odds of churn per unit of each driver, at signal_strength 1 (the intercept is solved
# for the churn rate). Contract, internet service and payment method were fitted so that
# the rates by level land on TELCO_CHURN_RATES; the others are set by hand.
_EFFECTS = {
    "log_tenure": -0.55,
    "tenure": -0.015,
    "one_year": -0.77,
    "two_year": -3.5,
    "fiber": 0.57,
    "no_internet": -0.92,
    "electronic_check": 1.25,
    "mailed_check": -0.21,
    "support_calls": 0.25,
    "monthly_charges": 0.01,
    "senior": 0.3,
    "paperless": 0.35,
    "price_rise": 3.0,
}


def generator_effects() -> dict[str, float]:
    """The generator's log-odds of churn per unit of each driver, at signal_strength 1."""
    return dict(_EFFECTS)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    """The intercept b at which the mean of sigmoid(logit + b) is `rate`, by bisection."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    # sigmoid(x + b) = 1 / (1 + exp(-x) exp(-b)): one exponential per row, not one per step.
    odds_against = np.exp(-logit)
    low, high = -20.0, 20.0
    for _ in range(50):
        mid = (low + high) / 2
        if (1.0 / (1.0 + odds_against * np.exp(-mid))).mean() < rate:
            low = mid
        else:
            high = mid
    return low


def _draw_level(rng: np.random.Generator, shares: Any, row_of: np.ndarray) -> np.ndarray:
    """For each row, the index of a level drawn with the shares of row `row_of` of `shares`."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    cumulative = np.cumsum(np.asarray(shares, dtype=float), axis=1)
    draws = rng.random((row_of.shape[0], 1))
    return (draws > cumulative[row_of]).sum(axis=1).clip(0, cumulative.shape[1] - 1)


def _tenure_months(rng: np.random.Generator, contract: np.ndarray) -> np.ndarray:
    """Months with the company by contract: month-to-month customers mostly new, one-year
    ones spread out, two-year ones mostly close to the 72 months the books go back."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    tenure = np.empty(contract.shape[0])
    rows = [np.flatnonzero(contract == level) for level in range(len(CONTRACTS))]
    tenure[rows[0]] = 1.0 + np.floor(rng.gamma(0.6, 30.0, rows[0].size))
    tenure[rows[1]] = 1.0 + np.floor(rng.beta(1.7, 1.2, rows[1].size) * _MAX_TENURE)
    tenure[rows[2]] = _MAX_TENURE - np.floor(rng.gamma(0.8, 19.0, rows[2].size))
    return np.clip(tenure, 1, _MAX_TENURE).astype(int)


def _monthly_charges(rng: np.random.Generator, internet: np.ndarray) -> np.ndarray:
    """Today's price of each customer, drawn within the band of their internet service."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    monthly = np.empty(internet.shape[0])
    for level, (low, span, a, b) in enumerate(_PRICE_BANDS):
        rows = np.flatnonzero(internet == level)
        monthly[rows] = low + span * rng.beta(a, b, rows.size)
    return np.round(monthly, 2)


def _total_charges(monthly: np.ndarray, tenure: np.ndarray, annual_rise: np.ndarray) -> np.ndarray:
    """What a customer has paid over the tenure: the price rose by `annual_rise` on each
    anniversary of joining, up to today's `monthly` price."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    rises_so_far = (tenure - 1) // 12
    # The months since the last anniversary are at today's price, the twelve of each earlier
    # year one rise lower.
    total = (tenure - 12 * rises_so_far) * monthly
    price = monthly.copy()
    for rises_back in range(1, (_MAX_TENURE - 1) // 12 + 1):
        price = price / (1.0 + annual_rise)
        total += np.where(rises_back <= rises_so_far, 12 * price, 0.0)
    return total


def churn_log_odds(
    tenure: Any,
    contract: Any,
    internet: Any,
    payment: Any,
    monthly: Any,
    total: Any,
    support_calls: Any,
    senior: Any,
    paperless: Any,
    effects: dict[str, float] | None = None,
) -> np.ndarray:
    """The generator's log-odds of churn at signal_strength 1, without its intercept.

    `effects` replaces the generator's log-odds per unit of each named driver (the rest
    keep theirs): what drives churn in a world that changed (`mlvs.ml.batches`).

    Every driver is a column of the data, so the generator's own churn probability can be
    recomputed from any frame it made (see `true_logit_auc`). The price rise is how much
    today's price exceeds what the customer paid on average, as the price path left it in
    the total charges: customers whose bill has grown churn more.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    tenure = np.asarray(tenure, dtype=float)
    monthly = np.asarray(monthly, dtype=float)
    total = np.asarray(total, dtype=float)
    contract, internet, payment = (np.asarray(a) for a in (contract, internet, payment))
    months = np.maximum(tenure, 1.0)
    average_paid = np.where(total > 0, total / months, monthly)
    price_rise = np.clip(monthly / np.maximum(average_paid, 1.0) - 1.0, 0.0, 1.0)
    e = {**_EFFECTS, **(effects or {})}
    return (
        e["log_tenure"] * np.log(months)
        + e["tenure"] * tenure
        + e["one_year"] * (contract == "One year")
        + e["two_year"] * (contract == "Two year")
        + e["fiber"] * (internet == "Fiber optic")
        + e["no_internet"] * (internet == "No internet")
        + e["electronic_check"] * (payment == "Electronic check")
        + e["mailed_check"] * (payment == "Mailed check")
        + e["support_calls"] * np.asarray(support_calls, dtype=float)
        + e["monthly_charges"] * (monthly - 65.0)
        + e["senior"] * np.asarray(senior, dtype=float)
        + e["paperless"] * np.asarray(paperless, dtype=float)
        + e["price_rise"] * price_rise
    )


def frame_log_odds(frame: pd.DataFrame, effects: dict[str, float] | None = None) -> np.ndarray:
    """`churn_log_odds` of every row of a customer frame."""
    return churn_log_odds(
        frame["tenure_months"].to_numpy(),
        frame["contract"].to_numpy(),
        frame["internet_service"].to_numpy(),
        frame["payment_method"].to_numpy(),
        frame["monthly_charges"].to_numpy(),
        frame["total_charges"].to_numpy(),
        frame["support_calls"].to_numpy(),
        frame["senior_citizen"].to_numpy(),
        frame["paperless_billing"].to_numpy(),
        effects,
    )


def draw_churn(
    rng: np.random.Generator,
    logit: np.ndarray,
    churn_rate: float,
    label_noise: float,
    intercept_logit: np.ndarray | None = None,
) -> np.ndarray:
    """Churn labels (0/1) drawn from `logit` plus the intercept that gives `churn_rate`.

    The intercept is solved on `intercept_logit` (default: `logit` itself), so labels of a
    changed world can be drawn with the intercept of the world the model learned, and a
    price rise then raises the churn rate as it would. `label_noise` flips that share of
    labels afterwards, as the generator does.
    """
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    # Flipping a share n of labels moves the rate r to r(1 - n) + (1 - r)n: aim before the flips.
    aim = min(max((churn_rate - label_noise) / (1.0 - 2.0 * label_noise), 0.005), 0.995)
    intercept = _intercept_for_rate(logit if intercept_logit is None else intercept_logit, aim)
    churn = (rng.random(logit.shape[0]) < _sigmoid(logit + intercept)).astype(int)
    flip = rng.random(logit.shape[0]) < label_noise
    return np.where(flip, 1 - churn, churn)


def true_logit_auc(frame: pd.DataFrame, signal_strength: float) -> float:
    """The ROC-AUC of the generator's own churn probability on the labels of `frame`.

    No model can rank the customers of generated data better on average: what is left is
    the randomness of the labels and the flipped ones. `frame` is data the generator made
    with `signal_strength` (or any part of it, such as the test set); at strength 0 the
    probability is the same for everyone and the ceiling is 0.5.
    """
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.metrics import roc_auc_score

    labels = frame[TARGET].astype(int)
    if signal_strength <= 0.0 or labels.nunique() < 2:
        return 0.5
    return float(roc_auc_score(labels, frame_log_odds(frame)))


def generate_customers(
    n_rows: int, churn_rate: float, signal_strength: float, label_noise: float, seed: int
) -> pd.DataFrame:
    """A synthetic telecom customer base whose churn depends plausibly on its features.

    Contract, internet service and payment method are drawn together, tenure by contract,
    today's price by internet service; total charges add up a price path that rose on each
    anniversary. Churn follows a logistic model (`churn_log_odds`: short tenure,
    month-to-month contracts, fibre, electronic checks, support calls and price rises raise
    it); `signal_strength` scales the effects, an intercept found by bisection hits
    `churn_rate`, and `label_noise` flips that share of labels afterwards. At the defaults
    the churn rates by contract, internet service and payment method land near
    TELCO_CHURN_RATES.
    """
    # deferred: numpy (~0.2 s) and pandas (~1 s) are imported only when this runs
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    contract_index = rng.choice(len(CONTRACTS), size=n_rows, p=_CONTRACT_SHARES)
    internet_index = _draw_level(rng, _INTERNET_SHARES, contract_index)
    payment_index = _draw_level(rng, _PAYMENT_SHARES, contract_index)
    tenure = _tenure_months(rng, contract_index)
    monthly = _monthly_charges(rng, internet_index)
    annual_rise = rng.uniform(0.0, _MAX_ANNUAL_PRICE_RISE, n_rows)
    total = np.round(_total_charges(monthly, tenure, annual_rise), 2)
    fiber = internet_index == INTERNET_SERVICES.index("Fiber optic")
    support_calls = np.minimum(rng.poisson(1.2 + 1.5 * fiber), 30)
    paperless = (rng.random(n_rows) < np.asarray(_PAPERLESS_SHARE)[internet_index]).astype(int)
    senior = (rng.random(n_rows) < _SENIOR_SHARE).astype(int)
    contract = np.asarray(CONTRACTS)[contract_index]
    internet = np.asarray(INTERNET_SERVICES)[internet_index]
    payment = np.asarray(PAYMENT_METHODS)[payment_index]

    logit = signal_strength * churn_log_odds(
        tenure, contract, internet, payment, monthly, total, support_calls, senior, paperless
    )
    churn = draw_churn(rng, logit, churn_rate, label_noise)

    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(1, n_rows + 1)],
            "tenure_months": tenure,
            "contract": contract,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support_calls.astype(int),
            "payment_method": payment,
            "internet_service": internet,
            "paperless_billing": paperless,
            "senior_citizen": senior,
            TARGET: churn.astype(int),
        }
    )


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """Canonical CSV bytes: fixed float format and line endings, so hashes are stable."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.2f", lineterminator="\n")
    return buffer.getvalue().encode("utf-8")


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    """Write `frame` as canonical CSV atomically; return the SHA-256 of the bytes written."""
    payload = to_csv_bytes(frame)
    atomic_write_bytes(path, payload)
    return hashlib.sha256(payload).hexdigest()


def read_customers(path: Path) -> pd.DataFrame:
    """Read a customer CSV, refusing a missing, empty or unparsable file with a clear error."""
    # deferred: pandas (~1 s) is imported only when this runs
    import pandas as pd

    if not path.is_file():
        raise BadInputError(
            f"{path} does not exist; run `mlvs pipeline` (or the prepare notebook) to create it"
        )
    try:
        frame = pd.read_csv(path, dtype={"customer_id": str})
        # pandas renames a repeated header to "name.1"; keep the real names so the
        # schema check reports the duplicate instead of an unknown column.
        with open(path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        if len(set(header)) < len(header) and len(header) == len(frame.columns):
            frame.columns = header
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(
            f"{path} is not a readable CSV file ({str(exc).strip()}); restore it with `mlvs recover`"
        ) from None
    return frame


def validate_schema(frame: pd.DataFrame, with_target: bool = True) -> list[str]:
    """Every way `frame` breaks the declared schema, as readable sentences (empty when valid).

    Without `with_target`, the frame is customers to score: every column but `churn`.
    """
    # deferred: numpy (~0.2 s) and pandas (~1 s) are imported only when this runs
    import numpy as np
    import pandas as pd

    problems: list[str] = []
    if frame.empty:
        problems.append("the data set has no rows")
    schema = [c for c in SCHEMA if with_target or c.name != TARGET]
    expected = [c.name for c in schema]
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    for name in duplicated:
        problems.append(f"column '{name}' appears more than once")
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s): {', '.join(map(str, extra))}")
    for column in schema:
        if column.name not in frame.columns or column.name in duplicated:
            continue
        values = frame[column.name]
        nulls = int(values.isna().sum())
        if nulls:
            problems.append(f"'{column.name}' has {nulls} missing value(s)")
        present = values.dropna()
        if column.kind == "id":
            dupes = int(present.duplicated().sum())
            if dupes:
                problems.append(f"'{column.name}' has {dupes} duplicated value(s)")
        elif column.kind == "category":
            unknown = sorted(set(present.astype(str)) - set(column.allowed))
            if unknown:
                shown = ", ".join(repr(u) for u in unknown[:5])
                problems.append(
                    f"'{column.name}' has values outside {list(column.allowed)}: {shown}"
                )
        else:
            numeric = pd.to_numeric(present, errors="coerce")
            bad_type = int(numeric.isna().sum())
            if bad_type:
                problems.append(f"'{column.name}' has {bad_type} non-numeric value(s)")
            numeric = numeric.dropna()
            if not np.isfinite(numeric.to_numpy(dtype=float)).all():
                problems.append(f"'{column.name}' has infinite value(s)")
            numeric = numeric[
                np.isfinite(numeric.to_numpy(dtype=float))
            ]  # reported once, not again as out of range
            if column.kind == "int" and not (numeric == np.round(numeric)).all():
                problems.append(f"'{column.name}' has non-integer value(s)")
            below = int((numeric < column.minimum).sum())
            above = int((numeric > column.maximum).sum())
            if below or above:
                problems.append(
                    f"'{column.name}' has {below + above} value(s) outside [{column.minimum:g}, {column.maximum:g}]"
                )
    if (
        TARGET in frame.columns
        and TARGET not in duplicated
        and frame[TARGET].nunique(dropna=True) < 2
    ):
        problems.append(
            f"'{TARGET}' has a single class; training needs both churners and non-churners"
        )
    return problems


def check_schema(frame: pd.DataFrame) -> None:
    """Raise SchemaViolationError listing every violation at once."""
    problems = validate_schema(frame)
    if problems:
        raise SchemaViolationError(problems)


def split_customers(
    frame: pd.DataFrame, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified train/test split, rows kept in their original order within each part."""
    # deferred: scikit-learn (~2.5 s) is imported only when this runs
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        frame, test_size=test_size, stratify=frame[TARGET], random_state=seed
    )
    return train.sort_index(), test.sort_index()


def features_and_target(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The model's input columns and its label."""
    return frame[list(FEATURES)], frame[TARGET].astype(int)
