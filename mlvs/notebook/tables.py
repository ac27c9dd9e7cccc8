"""The tables the notebooks show: records (findings, repairs), and what `04_rollback.ipynb` compares."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mlvs.errors import BadInputError
from mlvs.ml.modeling import TEST_METRICS
from mlvs.ops.pipeline import read_metrics
from mlvs.ops.snapshot.diff import diff_snapshots
from mlvs.ops.snapshot.read import list_snapshots
from mlvs.paths import ProjectPaths


def records_frame(records: Sequence[Any]) -> pd.DataFrame:
    """One row per record (a verify finding, a recovery repair...), one column per field."""
    return pd.DataFrame([dataclasses.asdict(record) for record in records])


def snapshot_table(paths: ProjectPaths) -> pd.DataFrame:
    """One row per snapshot: when, why, which model version, its test ROC-AUC and data hash."""
    rows = []
    for m in list_snapshots(paths):
        champion = m.registry.aliases.get("champion") if m.registry else None
        raw = m.files.get("data/raw/customer_data.csv")
        rows.append(
            {
                "snapshot": m.name,
                "created": m.created_at,
                "automatic": m.automatic,
                "message": m.message,
                "champion": champion.version if champion else None,
                "test_roc_auc": m.metrics.get("test_roc_auc"),
                "raw data sha256": raw.sha256[:12] if raw else "",
            }
        )
    return pd.DataFrame(rows).set_index("snapshot") if rows else pd.DataFrame()


def default_target(paths: ProjectPaths) -> str:
    """The snapshot before the latest one the user made (automatic snapshots are skipped)."""
    made = [m.name for m in list_snapshots(paths) if not m.automatic]
    if len(made) < 2:
        raise BadInputError(
            "there is no snapshot before the latest one; take two with `mlvs snapshot create NAME`"
        )
    return made[-2]


def diff_frame(paths: ProjectPaths, target: str) -> pd.DataFrame:
    """The differences between snapshot `target` and the current state, one row per change."""
    diff = diff_snapshots(paths, target).to_dict()
    rows = []
    for kind in ("params", "metrics", "outputs", "registry"):
        for key, (old, new) in diff[kind].items():
            rows.append(
                {"kind": kind, "what": key, "in snapshot": str(old)[:40], "now": str(new)[:40]}
            )
    for path in diff["code"]:
        rows.append({"kind": "code", "what": path, "in snapshot": "", "now": "changed"})
    return pd.DataFrame(rows)


def current_metrics(paths: ProjectPaths) -> dict[str, float]:
    """The test metrics of the model now in `models/`."""
    metrics = read_metrics(paths)
    return {k: metrics[k] for k in TEST_METRICS if k in metrics}


def report_frame(report: Any) -> pd.DataFrame:
    """The files and aliases a rollback changed."""
    rows = [
        {"what": f.path, "part": f.part, "action": f.action, "from": f.source} for f in report.files
    ]
    rows += [
        {
            "what": f"{report.model_name}@{alias}",
            "part": "registry",
            "action": f"{old} -> {new}",
            "from": "registry",
        }
        for alias, (old, new) in report.aliases.items()
    ]
    return pd.DataFrame(rows)
