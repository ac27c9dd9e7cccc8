"""Reading the registry through MlflowClient: "not found" is empty, anything else is an error."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

from mlvs.backends.mlflow.registry import read_registry
from mlvs.paths import ProjectPaths


class _Client:
    """An MlflowClient whose registry answers every question with one error."""

    error_code = ""

    def __init__(self, **_: Any) -> None:
        pass

    def get_registered_model(self, name: str) -> Any:
        raise MlflowException(
            f"registered model {name!r}", error_code=ErrorCode.Value(self.error_code)
        )


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectPaths:
    # A store that is neither the embedded SQLite file nor a server: the client is the way in.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(mlflow, "MlflowClient", _Client)
    return ProjectPaths(tmp_path)


def test_a_model_the_registry_does_not_know_has_no_aliases(
    paths: ProjectPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Client, "error_code", "RESOURCE_DOES_NOT_EXIST")
    state = read_registry(paths, "churn-classifier", None)
    assert state.error is None and state.aliases == {} and state.model is None


@pytest.mark.parametrize("code", ["INTERNAL_ERROR", "PERMISSION_DENIED", "TEMPORARILY_UNAVAILABLE"])
def test_a_registry_that_fails_to_answer_is_an_error_not_an_empty_registry(
    paths: ProjectPaths, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    monkeypatch.setattr(_Client, "error_code", code)
    state = read_registry(paths, "churn-classifier", None)
    assert state.error is not None and "churn-classifier" in state.error
    assert state.aliases == {}


def test_a_server_that_does_not_answer_is_an_error_told_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{port}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    state = read_registry(ProjectPaths(tmp_path), "churn-classifier", None)
    assert state.error is not None and "does not answer" in state.error
    assert "secret" not in state.error + state.tracking_uri
