"""Champion/challenger: the alias moves only when the new version wins by the margin."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlvs.backends.mlflow import tracking

NAME = "churn-classifier"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_registered_model(NAME)
    return client


def add_version(client, roc_auc: float) -> str:
    experiment = client.get_experiment_by_name("Default").experiment_id
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "test_roc_auc", roc_auc)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        NAME, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    return str(version.version)


def alias_version(client, alias: str) -> str:
    return str(client.get_model_version_by_alias(NAME, alias).version)


def test_first_version_becomes_champion(client) -> None:
    version = add_version(client, 0.80)
    decision = tracking.promote(NAME, version, "roc_auc", 0.01, {"test_roc_auc": 0.80})
    assert decision["alias"] == "champion"
    assert alias_version(client, "champion") == version


def test_version_that_wins_by_the_margin_takes_champion(client) -> None:
    first = add_version(client, 0.80)
    tracking.promote(NAME, first, "roc_auc", 0.01, {"test_roc_auc": 0.80})
    second = add_version(client, 0.82)
    decision = tracking.promote(NAME, second, "roc_auc", 0.01, {"test_roc_auc": 0.82})
    assert decision["alias"] == "champion" and decision["previous_champion"] == first
    assert alias_version(client, "champion") == second


def test_version_within_the_margin_becomes_challenger(client) -> None:
    first = add_version(client, 0.80)
    tracking.promote(NAME, first, "roc_auc", 0.01, {"test_roc_auc": 0.80})
    second = add_version(client, 0.805)
    decision = tracking.promote(NAME, second, "roc_auc", 0.01, {"test_roc_auc": 0.805})
    assert decision["alias"] == "challenger"
    assert alias_version(client, "champion") == first
    assert alias_version(client, "challenger") == second
