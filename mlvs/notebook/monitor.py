"""`05_monitor`, one step per call: read and check a batch, judge it, record it and its alerts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlvs.backends.mlflow.tracking import MONITOR, NotebookRun, kind_tags
from mlvs.ops import monitor as ops
from mlvs.ops.alerting import deliver
from mlvs.ops.monitor_state import load_state
from mlvs.paths import ProjectPaths

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Monitor:
    """One batch judged against the training data and the champion, with its alerts."""

    paths: ProjectPaths
    batch: ops.BatchFile
    labels: Any | None  # one 0/1 per customer of the batch, when they have arrived
    judgement: ops.Judgement | None = None

    @classmethod
    def start(cls, paths: ProjectPaths, batch: str, labels: str = "") -> Monitor:
        """Read `batch` (and `labels`) and check them; refuse what is not a batch in one line."""
        read, truth = ops.check_inputs(paths, batch, labels)
        return cls(paths, read, truth)

    def judge(self) -> ops.Judgement:
        """Drift, schema, predictions of the champion, and performance when labels are given."""
        _, monitored = load_state(self.paths)
        self.judgement = ops.judge(self.paths, self.batch, self.labels, monitored)
        return self.judgement

    def drift_table(self) -> pd.DataFrame:
        """Each feature's drift statistic, threshold, verdict, PSI and missing share."""
        # deferred: pandas (~1 s) is imported only when this runs
        import pandas as pd

        judged = self._judged()
        rows = [f.as_dict() for f in judged.drift.features]
        return pd.DataFrame(rows).set_index("feature")

    def record(self, run: NotebookRun) -> ops.Judgement:
        """Apply the alert rules, keep the record, log the run (step = batch) and send the alerts."""
        judged = ops.record(
            self.paths, self._judged(), labelled=self.labels is not None, deliver=deliver
        )
        steps = judged.alerts
        assert steps is not None
        metrics = {
            "share_drifted": judged.drift.share_drifted,
            "prediction_psi": judged.prediction_psi,
            "predicted_churn_rate": judged.predicted_churn_rate,
            "scored_share": judged.scored_share,
            "schema_findings": float(len(judged.schema)),
            **{f"psi.{f.feature}": f.psi for f in judged.drift.features},
        }
        if judged.performance is not None:
            p = judged.performance
            metrics |= {
                "roc_auc": p.roc_auc,
                "recall": p.recall,
                "net_value_per_customer": p.net_value_per_customer,
            }
        tags = kind_tags(
            MONITOR,
            batch=self.batch.number,
            model_version=judged.model_version,
            labelled=self.labels is not None,
            alerts_open=len(steps.still_open),
        )
        tags |= {f"mlvs.alert.{a.rule}.{a.subject}": a.severity for a in steps.raised}
        run.log({"batch_file": str(self.batch.path.name)}, metrics, tags, step=self.batch.number)
        # Lineage: the batch as a dataset input, its digest the MD5 DVC keeps it under.
        run.log_dataset(
            self.batch.frame,
            f"batch-{self.batch.number:04d}",
            self.batch.path,
            self.batch.md5,
            "monitoring",
        )
        return judged

    def guard_deploy(self) -> ops.DeployCheck | None:
        """With labels: a champion deployed within the last batches against the version it
        replaced, on this batch; rolled back (verified) when it loses by more than the margin."""
        if self.labels is None:
            return None
        return ops.check_deploy(self.paths, self._judged(), self.labels)

    def _judged(self) -> ops.Judgement:
        if self.judgement is None:
            raise RuntimeError("call judge() first")
        return self.judgement
