"""Every path of a project, in one place.

A project root is the nearest directory, from the working directory upwards,
that holds both `dvc.yaml` and `params/`. `MLVS_ROOT` overrides the search, so
notebooks executed from `notebooks/` (JupyterLab, nbval) and commands run from
anywhere inside the project find the same root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlvs.errors import BadInputError
from mlvs.settings import ROOT

# The notebook each pipeline stage executes (`notebooks/<name>.ipynb`, the stage's cmd in dvc.yaml).
STAGE_NOTEBOOKS = {"prepare": "01_prepare", "train": "02_train"}


# The installed mlvs package itself (shipped beside a logged model, whose feature step it holds).
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ProjectPaths:
    """Where each artifact of a project lives, relative to its root."""

    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw_data(self) -> Path:
        return self.data / "raw" / "customer_data.csv"

    @property
    def batches(self) -> Path:
        """Customer batches scored after deployment (`mlvs batches generate`), DVC-tracked."""
        return self.data / "batches"

    @property
    def labels(self) -> Path:
        """Each batch's labels, which arrive after the batch, DVC-tracked."""
        return self.data / "labels"

    @property
    def processed(self) -> Path:
        return self.data / "processed"

    @property
    def train_data(self) -> Path:
        return self.processed / "train.csv"

    @property
    def test_data(self) -> Path:
        return self.processed / "test.csv"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def model_file(self) -> Path:
        return self.models / "model.skops"

    @property
    def model_card(self) -> Path:
        return self.models / "model_card.json"

    @property
    def golden(self) -> Path:
        return self.models / "golden_predictions.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def uv_lock(self) -> Path:
        """The committed lock file of the project's Python environment."""
        return self.root / "uv.lock"

    @property
    def state(self) -> Path:
        """mlvs's own runtime state: logs, journal, locks, backups (git-ignored)."""
        return self.root / ".mlvs"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def dvc_remote(self) -> Path:
        """The embedded default's local DVC remote (configured in `.dvc/config`)."""
        return self.state / "dvc-remote"

    @property
    def mlflow_db(self) -> Path:
        """MLflow's own default store, so plain `mlflow ui` in the root finds it."""
        return self.root / "mlflow.db"


def find_root(start: Path | None = None) -> Path:
    """Return the project root above `start` (default: the working directory)."""
    env_root = ROOT.get()
    if env_root is not None:
        return env_root
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file() and (candidate / "params").is_dir():
            return candidate
    raise BadInputError(
        f"{here} is not inside an mlvs project (no directory above it holds dvc.yaml and params/); "
        "run the command from the project or set MLVS_ROOT."
    )


def project(start: Path | None = None) -> ProjectPaths:
    """Return the paths of the project that contains `start`."""
    return ProjectPaths(find_root(start))
