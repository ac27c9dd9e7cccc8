"""The pipeline end to end: DVC runs the notebooks through papermill, MLflow records them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import BIN, clean_env, mlvs, pipeline_console, tree_hashes

from mlvs.backends.kernel import KERNEL_DIR_PREFIX

pytestmark = pytest.mark.slow


def mlflow_client(root: Path, uri: str | None = None):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri or f"sqlite:///{root / 'mlflow.db'}")


def test_pipeline_writes_every_output(trained_workspace: Path) -> None:
    root = trained_workspace
    for rel in (
        "data/raw/customer_data.csv",
        "data/processed/train.csv",
        "data/processed/test.csv",
        "data/processed/summary.json",
        "models/model.skops",
        "models/model_card.json",
        "models/golden_predictions.json",
        "reports/metrics.json",
        "reports/01_prepare.ipynb",
        "reports/01_prepare.html",
        "reports/02_train.ipynb",
        "reports/02_train.html",
    ):
        assert (root / rel).is_file(), rel
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "train"}
    card = json.loads((root / "models/model_card.json").read_text())
    assert {"model_sha256", "data_sha256", "metrics", "params"} <= set(card)


def test_the_console_shows_each_stage_and_no_contradicting_hint(_trained_template: Path) -> None:
    # What the first `mlvs pipeline` of the shared template printed: no second training needed.
    console = pipeline_console(_trained_template).read_text(encoding="utf-8")
    # Kernels run over IPC: ipykernel's warning about unencrypted TCP never appears.
    assert "Kernel is running over TCP" not in console
    # mlvs pushes by itself, so DVC's advice to push is not passed on.
    assert "dvc push" not in console
    for stage in ("prepare", "train"):
        assert f"mlvs: stage {stage}: started" in console
        assert re.search(rf"mlvs: stage {stage}: done in \d+\.\d s", console), console
    assert "\x1b[" not in console  # not a terminal: no colour


def test_each_stage_of_the_pipeline_got_its_side_process_forked_warm(
    _trained_template: Path,
) -> None:
    # The shared template's own `mlvs pipeline`: each stage's `mlvs run` logged its side process.
    log = (_trained_template / ".mlvs" / "logs" / "mlvs.log").read_text(encoding="utf-8")
    forked = re.findall(r" (\d+) DEBUG mlvs\.run: side process (\d+) forked warm", log)
    runs = {run for run, _ in forked}
    side_processes = {side for _, side in forked}
    assert len(runs) == 2 and len(side_processes) == 2, log[-3000:]


def test_second_run_skips_unchanged_stages(trained_workspace: Path) -> None:
    before = tree_hashes(trained_workspace / "data") | tree_hashes(trained_workspace / "models")
    result = mlvs(trained_workspace, "pipeline", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["ran"] == []
    assert summary["skipped"] == ["prepare", "train"]
    assert summary["metrics"]["test_roc_auc"] > 0.5
    assert (
        tree_hashes(trained_workspace / "data") | tree_hashes(trained_workspace / "models")
        == before
    )


def test_data_reaches_the_dvc_remote(trained_workspace: Path) -> None:
    status = subprocess.run(
        [str(BIN / "dvc"), "status", "--cloud", "--json"],
        cwd=trained_workspace,
        env=clean_env(trained_workspace),
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout or "{}") == {}


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=root, env=clean_env(root), capture_output=True, text=True
    )


def _pushes_logged(root: Path) -> tuple[int, int]:
    """How many `dvc push` the pipelines of `root` ran, and how many they skipped."""
    log = (root / ".mlvs" / "logs" / "mlvs.log").read_text()
    return log.count("mlvs.pipeline: dvc push\n"), log.count("dvc push skipped")


def test_a_pipeline_with_nothing_to_run_pushes_only_what_its_last_push_did_not_send(
    trained_workspace: Path, tmp_path: Path
) -> None:
    pushed, skipped = _pushes_logged(trained_workspace)
    assert mlvs(trained_workspace, "pipeline").returncode == 0
    assert _pushes_logged(trained_workspace) == (pushed, skipped + 1)

    # Another remote: the same outputs have never been sent there, so the next pipeline sends them.
    elsewhere = tmp_path / "another-remote"
    changed = _dvc(trained_workspace, "remote", "add", "-d", "-f", "elsewhere", str(elsewhere))
    assert changed.returncode == 0, changed.stderr
    assert mlvs(trained_workspace, "pipeline").returncode == 0
    assert _pushes_logged(trained_workspace) == (pushed + 1, skipped + 1)
    status = _dvc(trained_workspace, "status", "--cloud", "--json")
    assert status.returncode == 0 and json.loads(status.stdout or "{}") == {}, status.stdout

    # A record that cannot be read is no record: the pipeline pushes.
    (trained_workspace / ".mlvs" / "last-push.json").write_text("{not json")
    assert mlvs(trained_workspace, "pipeline").returncode == 0
    assert _pushes_logged(trained_workspace) == (pushed + 2, skipped + 1)


def test_each_notebook_is_a_finished_mlflow_run_with_its_report(trained_workspace: Path) -> None:
    client = mlflow_client(trained_workspace)
    experiment = client.get_experiment_by_name("mlvs")
    runs = {r.data.tags["notebook"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"01_prepare", "02_train"}
    for name, run in runs.items():
        assert run.info.status == "FINISHED"
        assert {"git_commit", "git_dirty", "data_sha256", "notebook"} <= set(run.data.tags)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "notebook")}
        assert artifacts == {f"notebook/{name}.ipynb", f"notebook/{name}.html"}
    train = runs["02_train"]
    assert train.data.params["model_type"] == "random_forest"
    for metric in (
        "cv_roc_auc_mean",
        "cv_roc_auc_std",
        "test_accuracy",
        "test_precision",
        "test_recall",
        "test_f1",
        "test_roc_auc",
        "net_value",
        "budget_roi",
        "net_value_contact_everyone",
    ):
        assert metric in train.data.metrics, metric
    plots = {a.path for a in client.list_artifacts(train.info.run_id, "plots")}
    assert {
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
        "plots/feature_importance.png",
    } <= plots


def test_model_is_registered_with_signature_and_champion_alias(trained_workspace: Path) -> None:
    client = mlflow_client(trained_workspace)
    version = client.get_model_version_by_alias("churn-classifier", "champion")
    assert str(version.version) == "1"
    assert version.source.startswith("models:/m-")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    model_dir = Path(logged.artifact_location.removeprefix("file://"))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert "signature" in mlmodel and mlmodel["signature"]["inputs"]
    assert mlmodel.get("saved_input_example_info")
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    requirements = (model_dir / "requirements.txt").read_text()
    assert "scikit-learn==" in requirements and "skops==" in requirements
    assert re.search(r"^xgboost(-cpu)?==\d", requirements, re.MULTILINE), requirements


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private temporary directory short enough for socket paths (tmp_path can be too deep)."""
    directory = Path(tempfile.mkdtemp(prefix="mlvs-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_failed_notebook_is_kept_with_its_error_and_run_marked_failed(
    workspace: Path, tmp_path: Path, short_tmp: Path
) -> None:
    # Train before prepare: the data is missing, so a cell fails inside the notebook.
    other_store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    env = clean_env(workspace) | {"MLFLOW_TRACKING_URI": other_store, "TMPDIR": str(short_tmp)}
    result = subprocess.run(
        [str(BIN / "mlvs"), "run", "02_train"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "02_train.ipynb failed" in result.stderr
    # The kernel ran over IPC and its socket directory is gone, even after a failing cell.
    assert "Kernel is running over TCP" not in result.stderr, result.stderr
    assert not list(short_tmp.glob(f"{KERNEL_DIR_PREFIX}*"))
    report = (workspace / "reports/02_train.ipynb").read_text()
    assert "An Exception was encountered at" in report
    assert (workspace / "reports/02_train.html").is_file()
    # MLFLOW_TRACKING_URI is honoured: the run is in the other store, marked failed.
    client = mlflow_client(workspace, other_store)
    runs = client.search_runs([client.get_experiment_by_name("mlvs").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (workspace / "mlflow.db").exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["run", "01_prepare", "-p", "n_rows", "5"], "n_rows"),
        (["run", "01_prepare", "-p", "n_rows", "many"], "n_rows"),
        (["run", "01_prepare", "-p", "n_row", "500"], "n_row"),
        (["run", "01_prepare", "-p", "x=__import__('os')", "1"], "not a Python identifier"),
        (["run", "01_prepare", "-p", "seed", "[1, 2]"], "-f"),
        (["run", "../pyproject.toml"], "not one of this project's notebooks"),
        (["run", "nope"], "not one of this project's notebooks"),
    ],
)
def test_bad_input_is_refused_before_any_work(
    trained_workspace: Path, args: list[str], named: str
) -> None:
    before = tree_hashes(trained_workspace)
    result = mlvs(trained_workspace, *args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree_hashes(trained_workspace) == before


def test_a_one_off_run_says_when_its_outputs_leave_dvc_lock_behind(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    result = mlvs(root, "run", "01_prepare", "-p", "n_rows", "2000", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["outputs_matching_dvc_lock"] is False
    last = result.stderr.strip().splitlines()[-1]
    assert "no longer match dvc.lock" in last and "data/processed/train.csv" in last, last
    assert "`mlvs pipeline`" in last and "`mlvs recover`" in last

    # The command the line names brings them together again.
    assert mlvs(root, "recover").returncode == 0
    checked = mlvs(root, "verify", "--json")
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["healthy"] is True
