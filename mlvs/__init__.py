"""mlvs: notebook-driven MLOps versioning over Git, DVC and MLflow.

The notebook API: the names below are all the notebooks use (`import mlvs`, then
`mlvs.<name>`); everything else is internal.

- `project`: the paths of the project around the working directory (or `MLVS_ROOT`).
- `load_params`: a stage's validated parameters from `params/`, with a notebook's overrides.
- `start_run`: the MLflow run a notebook logs to (`log`, `log_figure`, `log_file`, `end`).
- `generate_customers`: the seeded synthetic customer base the prepare stage starts from.
- `schema_report`: one row per declared column of the data: what was found, whether it holds.
- `write_prepared`: write the raw data and the stratified split; return them with their hashes.
- `load_split`: the prepared train and test sets, schema-checked, with their data hash.
- `train_and_evaluate`: cross-validate, fit and score the configured model.
- `save_trained`: write the model file, its card, its golden predictions and the metrics.
- `register_model`: log the training run, register the model, promote it if it beats the champion.
- `Drill`: an incident drill, one step per call (`03_incident`).
- `Rollback`: a rollback to a snapshot, one step per call (`04_rollback`).
- `Monitor`: one batch judged after deployment, one step per call (`05_monitor`).
- `records_frame`: findings or repairs as a table.
- `plots`: the figures the notebooks show and log.

Importing `mlvs` is cheap: each name is imported on first use (PEP 562), so
`import mlvs.errors` does not pull in pandas or MLflow, and nothing else in the
interpreter is changed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlvs.backends.mlflow.tracking import start_run
    from mlvs.ml.data import generate_customers
    from mlvs.ml.params import load_params
    from mlvs.notebook import plots
    from mlvs.notebook.monitor import Monitor
    from mlvs.notebook.rollback import Rollback
    from mlvs.notebook.tables import records_frame
    from mlvs.ops.drill.drill import Drill
    from mlvs.paths import project
    from mlvs.stages.prepare import schema_report, write_prepared
    from mlvs.stages.train import load_split, register_model, save_trained, train_and_evaluate


# Where each exported name lives, imported only when first used.
_HOMES: dict[str, tuple[str, ...]] = {
    "mlvs.paths": ("project",),
    "mlvs.ml.params": ("load_params",),
    "mlvs.backends.mlflow.tracking": ("start_run",),
    "mlvs.ml.data": ("generate_customers",),
    "mlvs.stages.prepare": ("schema_report", "write_prepared"),
    "mlvs.stages.train": ("load_split", "train_and_evaluate", "save_trained", "register_model"),
    "mlvs.ops.drill.drill": ("Drill",),
    "mlvs.notebook.rollback": ("Rollback",),
    "mlvs.notebook.monitor": ("Monitor",),
    "mlvs.notebook.tables": ("records_frame",),
}
_MODULES = {"plots": "mlvs.notebook.plots"}
_EXPORTS = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562) and keep it."""
    if name == "__version__":  # pyproject.toml is the one place it is written
        # deferred: importlib.metadata costs ~50 ms, which every command would pay
        from importlib.metadata import version

        value: Any = version("mlvs")
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'mlvs' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_MODULES})


__all__ = [
    "Drill",
    "Monitor",
    "Rollback",
    "generate_customers",
    "load_params",
    "load_split",
    "plots",
    "project",
    "records_frame",
    "register_model",
    "save_trained",
    "schema_report",
    "start_run",
    "train_and_evaluate",
    "write_prepared",
]
