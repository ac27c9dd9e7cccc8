"""What the prepare and train notebooks call, one module per stage."""

from mlvs.stages.prepare import PreparedData, feature_preview, schema_report, write_prepared
from mlvs.stages.train import (
    TrainedModel,
    all_metrics,
    data_hash,
    golden_sample,
    load_split,
    save_trained,
    train_and_evaluate,
)

__all__ = [
    "PreparedData",
    "TrainedModel",
    "all_metrics",
    "data_hash",
    "feature_preview",
    "golden_sample",
    "load_split",
    "save_trained",
    "schema_report",
    "train_and_evaluate",
    "write_prepared",
]
