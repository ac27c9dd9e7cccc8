"""What a stage's MLflow run says about the code and data it ran: git state and input hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import git, mlvs

pytestmark = pytest.mark.slow


def stage_runs(root: Path) -> dict[str, dict[str, str]]:
    """Run id -> tags of every notebook run in the workspace's MLflow store."""
    # deferred: mlflow (~1.7 s) only for the tests that read runs
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlvs")
    return {r.info.run_id: r.data.tags for r in client.search_runs([experiment.experiment_id])}


def pipeline_runs(root: Path) -> dict[str, dict[str, str]]:
    """`mlvs pipeline` once; notebook -> tags of each run it created."""
    before = set(stage_runs(root))
    result = mlvs(root, "pipeline")
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        tags["notebook"]: tags for run_id, tags in stage_runs(root).items() if run_id not in before
    }


def edit_params(root: Path, stage: str, key: str, value: object) -> None:
    path = root / "params" / f"{stage}.yaml"
    data = yaml.safe_load(path.read_text())
    data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_git_dirty_describes_the_users_changes_not_the_pipelines_own_writes(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    # A committed change to prepare's params reruns both stages. On the way `dvc repro`
    # rewrites dvc.lock and deletes the git-tracked reports/metrics.json before training,
    # as in a fresh clone: none of that is a change of the user's.
    edit_params(root, "prepare", "seed", 43)
    git(root, "commit", "-qam", "another seed")
    runs = pipeline_runs(root)
    assert {name: tags["git_dirty"] for name, tags in runs.items()} == {
        "01_prepare": "false",
        "02_train": "false",
    }
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (processed,) = [o for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/processed"]
    assert runs["02_train"]["dvc_lock.data/processed"] == processed["md5"]
    git(root, "commit", "-qam", "retrained")

    # An edit of the user's, not committed: the run that uses it says so.
    edit_params(root, "train", "decision_threshold", 0.55)
    runs = pipeline_runs(root)
    assert {name: tags["git_dirty"] for name, tags in runs.items()} == {"02_train": "true"}
