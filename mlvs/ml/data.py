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
from typing import TYPE_CHECKING

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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def generate_customers(
    n_rows: int, churn_rate: float, signal_strength: float, label_noise: float, seed: int
) -> pd.DataFrame:
    """A synthetic telecom customer base whose churn depends plausibly on its features.

    Churn follows a logistic model (short tenure, month-to-month contracts,
    fibre, electronic checks and support calls raise it); `signal_strength`
    scales the effects, an intercept found by bisection hits `churn_rate`, and
    `label_noise` flips that share of labels afterwards.
    """
    # deferred: numpy (~0.2 s) and pandas (~1 s) are imported only when this runs
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    contract = rng.choice(CONTRACTS, size=n_rows, p=[0.55, 0.25, 0.20])
    # Longer contracts go with longer tenure: a mixture of new and loyal customers.
    tenure_scale = np.select(
        [contract == "Month-to-month", contract == "One year"], [14.0, 30.0], 48.0
    )
    tenure = np.clip(np.round(rng.gamma(1.6, tenure_scale / 1.6)), 0, 72).astype(int)
    internet = rng.choice(INTERNET_SERVICES, size=n_rows, p=[0.35, 0.45, 0.20])
    base_charge = np.select([internet == "Fiber optic", internet == "DSL"], [80.0, 55.0], 22.0)
    monthly = np.clip(np.round(base_charge + rng.normal(0, 12, n_rows), 2), 10.0, 200.0)
    total = np.clip(np.round(monthly * tenure * rng.uniform(0.95, 1.05, n_rows), 2), 0.0, 20_000.0)
    support_calls = np.clip(rng.poisson(1.2 + 1.5 * (internet == "Fiber optic")), 0, 30)
    payment = rng.choice(PAYMENT_METHODS, size=n_rows, p=[0.34, 0.22, 0.22, 0.22])
    paperless = (rng.random(n_rows) < 0.6).astype(int)
    senior = (rng.random(n_rows) < 0.16).astype(int)

    logit = signal_strength * (
        -0.045 * tenure
        + 1.1 * (contract == "Month-to-month")
        - 0.9 * (contract == "Two year")
        + 0.6 * (internet == "Fiber optic")
        + 0.5 * (payment == "Electronic check")
        + 0.35 * support_calls
        + 0.012 * (monthly - 60.0)
        + 0.3 * senior
        + 0.2 * paperless
    )
    # Flipping a share n of labels moves the rate r to r(1 - n) + (1 - r)n: aim before the flips.
    aim = min(max((churn_rate - label_noise) / (1.0 - 2.0 * label_noise), 0.005), 0.995)
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        if _sigmoid(logit + mid).mean() < aim:
            low = mid
        else:
            high = mid
    churn = (rng.random(n_rows) < _sigmoid(logit + low)).astype(int)
    flip = rng.random(n_rows) < label_noise
    churn = np.where(flip, 1 - churn, churn)

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


def validate_schema(frame: pd.DataFrame) -> list[str]:
    """Every way `frame` breaks the declared schema, as readable sentences (empty when valid)."""
    # deferred: numpy (~0.2 s) and pandas (~1 s) are imported only when this runs
    import numpy as np
    import pandas as pd

    problems: list[str] = []
    if frame.empty:
        problems.append("the data set has no rows")
    expected = [c.name for c in SCHEMA]
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    for name in duplicated:
        problems.append(f"column '{name}' appears more than once")
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s): {', '.join(map(str, extra))}")
    for column in SCHEMA:
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
