"""A rollback told step by step: what `04_rollback.ipynb` calls, one step per cell.

Like a drill (`mlvs.ops.drill.drill.Drill`), a `Rollback` keeps what each step
found, so that the executed notebook reads as the record of the rollback: the
snapshots, what differs, what was restored, the check afterwards, the metrics of
both states, and the MLflow run that keeps it all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mlvs.backends.mlflow import tracking
from mlvs.notebook.tables import (
    current_metrics,
    default_target,
    diff_frame,
    report_frame,
    snapshot_table,
)
from mlvs.ops.rollback.plan import RollbackReport
from mlvs.ops.rollback.restore import rollback
from mlvs.ops.verify import Report, verify
from mlvs.paths import ProjectPaths


@dataclass
class Rollback:
    """One rollback in progress: its target, the metrics before and after, its report."""

    paths: ProjectPaths
    target: str
    only: Any = None
    before: dict[str, float] = field(default_factory=dict)
    restored: dict[str, float] = field(default_factory=dict)
    report: RollbackReport | None = None

    @classmethod
    def start(cls, paths: ProjectPaths, snapshot: str | None = None, only: Any = None) -> Rollback:
        """A rollback to `snapshot` (None: the one before the latest the user made) of `only` some parts."""
        return cls(paths, snapshot or default_target(paths), only)

    def snapshots(self) -> pd.DataFrame:
        """Every snapshot: when, why, which model version, its test ROC-AUC and data hash."""
        return snapshot_table(self.paths)

    def differences(self) -> pd.DataFrame:
        """What differs between the target snapshot and the current state, one row per change."""
        return diff_frame(self.paths, self.target)

    def restore(self) -> RollbackReport:
        """Roll back, verified (an automatic snapshot of the current state first); keep the metrics left."""
        self.before = current_metrics(self.paths)
        self.report = rollback(self.paths, self.target, self.only)
        return self.report

    def changes(self) -> pd.DataFrame:
        """The files and aliases the rollback changed."""
        if self.report is None:
            raise RuntimeError("Rollback.changes() called before Rollback.restore()")
        return report_frame(self.report)

    def verify(self) -> Report:
        """Check the restored state as `mlvs verify` does."""
        return verify(self.paths)

    def compared_metrics(self) -> dict[str, dict[str, float]]:
        """The test metrics of the state left and of the state restored, by label."""
        self.restored = current_metrics(self.paths)
        return {"before rollback": self.before, f"restored ({self.target})": self.restored}

    def log_run(self, figure: Any) -> str:
        """Log the rollback as an MLflow run of kind `rollback`, with the metrics figure; return its id."""
        return tracking.log_kind_run(
            self.paths,
            "04_rollback",
            tracking.ROLLBACK,
            params={"snapshot": self.target, "only": self.only or "all"},
            metrics={f"restored_{k}": v for k, v in self.restored.items()},
            details={"automatic_snapshot": self.report.automatic_snapshot if self.report else None},
            figures={"metrics_before_after": figure},
        )
