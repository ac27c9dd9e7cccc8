"""What the prepare notebook calls: the schema report, the split written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from mlvs._io import atomic_write_text
from mlvs.ml import data as datamod
from mlvs.ml.features import build_preprocessor
from mlvs.paths import ProjectPaths
from mlvs.testing.faults import fault_point


def schema_report(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per declared column: what was found and whether it holds."""
    rows = []
    problems = datamod.validate_schema(frame)
    for column in datamod.SCHEMA:
        present = column.name in frame.columns
        values = frame[column.name] if present else pd.Series(dtype=object)
        issues = [
            p for p in problems if f"'{column.name}'" in p or (not present and column.name in p)
        ]
        rows.append(
            {
                "column": column.name,
                "kind": column.kind,
                "allowed": (
                    ", ".join(column.allowed)
                    if column.allowed
                    else (
                        f"{column.minimum:g} to {column.maximum:g}"
                        if column.minimum is not None
                        else "unique"
                    )
                ),
                "missing": int(values.isna().sum()) if present else len(frame),
                "distinct": int(values.nunique()) if present else 0,
                "status": "ok" if not issues else "; ".join(issues),
            }
        )
    return pd.DataFrame(rows).set_index("column")


@dataclass(frozen=True)
class PreparedData:
    """The outputs of the prepare stage and their hashes."""

    customers: pd.DataFrame
    train: pd.DataFrame
    test: pd.DataFrame
    hashes: dict[str, str]

    def frames(self) -> dict[str, pd.DataFrame]:
        """The raw data and each side of the split, by the names `hashes` uses."""
        return {"raw": self.customers, "train": self.train, "test": self.test}

    def summary(self) -> pd.DataFrame:
        """Rows, churn rate and SHA-256 (shortened) of the raw data and of each side of the split."""
        frames = self.frames()
        return pd.DataFrame(
            {
                "rows": [len(f) for f in frames.values()],
                "churn rate": [f[datamod.TARGET].mean() for f in frames.values()],
                "sha256": [self.hashes[name][:16] for name in frames],
            },
            index=list(frames),
        ).round(4)

    def feature_preview(self, rows: int = 5) -> pd.DataFrame:
        """The first rows of the feature matrix the classifier sees, after engineering and scaling."""

        X, _ = datamod.features_and_target(self.train)
        preprocessor = build_preprocessor().fit(X)
        names = list(preprocessor.named_steps["encode"].get_feature_names_out())
        return pd.DataFrame(
            preprocessor.transform(X.head(rows)), columns=names, index=X.head(rows).index
        ).round(3)

    def churn_by_level(self) -> pd.DataFrame:
        """Customers and churn rate of each contract, internet service and payment method in
        the raw data, next to the public Telco sample's rate the generator is tuned to."""
        rows = []
        for column, reference in datamod.TELCO_CHURN_RATES.items():
            grouped = self.customers.groupby(column)[datamod.TARGET].agg(["size", "mean"])
            for level, telco_rate in reference.items():
                found = level in grouped.index
                rows.append(
                    {
                        "feature": column,
                        "value": level,
                        "customers": int(grouped.loc[level, "size"]) if found else 0,
                        "churn rate": float(grouped.loc[level, "mean"]) if found else float("nan"),
                        "Telco sample": telco_rate,
                    }
                )
        return pd.DataFrame(rows).set_index(["feature", "value"]).round(3)

    def true_logit_auc(self, signal_strength: float) -> dict[str, float]:
        """The AUC ceiling of the raw data and of each side of the split, by the names `hashes` uses.

        It is the ROC-AUC of the generator's own churn probability on the labels: how much
        signal the data holds, which no model trained on it beats on average.
        """
        return {
            name: datamod.true_logit_auc(frame, signal_strength)
            for name, frame in self.frames().items()
        }

    def run_metrics(self, true_logit_auc: dict[str, float] | None = None) -> dict[str, float]:
        """What the prepare run logs as metrics: sizes, the churn rate and, when given (from
        `true_logit_auc`), the AUC ceiling of each frame as `true_logit_auc_<name>`."""
        metrics = {
            "rows": len(self.customers),
            "churn_rate": float(self.customers[datamod.TARGET].mean()),
            "train_rows": len(self.train),
            "test_rows": len(self.test),
        }
        for name, auc in (true_logit_auc or {}).items():
            metrics[f"true_logit_auc_{name}"] = auc
        return metrics

    def run_tags(self) -> dict[str, str]:
        """What the prepare run logs as tags: the SHA-256 of each file written."""
        return {
            "data_sha256": self.hashes["raw"],
            "train_sha256": self.hashes["train"],
            "test_sha256": self.hashes["test"],
        }


def write_prepared(
    paths: ProjectPaths, customers: pd.DataFrame, test_size: float, seed: int
) -> PreparedData:
    """Write raw data, the stratified split and a summary; return the split and the SHA-256 of each file."""
    datamod.check_schema(customers)
    fault_point("prepare:preprocess")
    raw_hash = datamod.write_csv(customers, paths.raw_data)
    fault_point("prepare:partial")
    train, test = datamod.split_customers(customers, test_size, seed)
    hashes = {
        "raw": raw_hash,
        "train": datamod.write_csv(train, paths.train_data),
        "test": datamod.write_csv(test, paths.test_data),
    }
    prepared = PreparedData(customers, train, test, hashes)
    summary = {
        "rows": {name: len(frame) for name, frame in prepared.frames().items()},
        "churn_rate": {
            name: round(float(frame[datamod.TARGET].mean()), 6)
            for name, frame in prepared.frames().items()
        },
        "sha256": hashes,
    }
    atomic_write_text(
        paths.processed / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n"
    )
    return prepared
