"""What the scoring service knows without loading a model: the registry's change token, a dead service, a changed file."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlvs.backends.mlflow.model_files import RegistryChanges
from mlvs.ops.serve.follow import ServingState
from mlvs.ops.serve.loader import LoadedModel
from mlvs.ops.serve.status import (
    ServedVersion,
    ServiceStatus,
    died_without_stopping,
    read_status,
    write_status,
)
from mlvs.paths import ProjectPaths


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectPaths:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    root.mkdir()
    with sqlite3.connect(root / "mlflow.db") as db:
        db.execute("CREATE TABLE registered_model_aliases (name TEXT, alias TEXT, version INT)")
        db.execute("INSERT INTO registered_model_aliases VALUES ('m', 'champion', 1)")
    return ProjectPaths(root)


def test_the_registry_token_changes_with_every_commit_and_only_then(paths: ProjectPaths) -> None:
    changes = RegistryChanges(paths)
    first = changes.token()
    assert first is not None and changes.token() == first
    for version in (2, 3):
        with sqlite3.connect(paths.mlflow_db) as db:
            db.execute("UPDATE registered_model_aliases SET version = ?", (version,))
        assert changes.token() != first
        first = changes.token()
    changes.close()


def test_the_registry_token_is_none_for_a_tracking_server(
    paths: ProjectPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert RegistryChanges(paths).token() is None


def _status(pid: int, stopped_at: str | None = None) -> ServiceStatus:
    return ServiceStatus(
        model_name="m",
        alias="champion",
        pid=pid,
        serving=ServedVersion(version="1", model_sha256="a" * 64, loaded_at="t"),
        updated_at="t",
        host="127.0.0.1",
        port=8080,
        stopped_at=stopped_at,
    )


def test_a_service_whose_process_is_gone_without_a_clean_stop_died(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    pid = int(gone.stdout)
    assert died_without_stopping(_status(pid))
    assert not died_without_stopping(_status(pid, stopped_at="2026-01-01T00:00:00Z"))


@pytest.mark.parametrize("pid", [0, 1, -1], ids=["zero", "init", "negative"])
def test_a_pid_that_is_never_a_service_is_never_signalled_nor_taken_for_one(pid: int) -> None:
    assert died_without_stopping(_status(pid))


def test_the_status_file_keeps_where_the_service_listened(paths: ProjectPaths) -> None:
    write_status(paths, _status(os.getpid()))
    status = read_status(paths, "champion")
    assert status is not None and (status.host, status.port, status.stopped_at) == (
        "127.0.0.1",
        8080,
        None,
    )


def card(model: bytes) -> str:
    return json.dumps(
        {"model_sha256": hashlib.sha256(model).hexdigest(), "model_file": "model.skops"}
    )


def _serving(paths: ProjectPaths, model_file: Path, sha: str) -> ServingState:
    state = ServingState(paths, "m", "champion")
    state.current = LoadedModel(
        "m", "champion", "1", sha, object(), 0.5, "t", "workspace", 0.1, str(model_file)
    )
    state.target = "1"
    return state


def test_a_changed_model_file_is_refused_and_its_repair_ends_the_refusal(
    paths: ProjectPaths,
) -> None:
    model_file = paths.model_file
    model_file.parent.mkdir(parents=True)
    good = b"the verified model bytes"
    model_file.write_bytes(good)
    paths.model_card.write_text(card(good))
    state = _serving(paths, model_file, hashlib.sha256(good).hexdigest())
    assert state.current is not None and state._source_problem(state.current) is None

    model_file.write_bytes(b"the verified model bytez")
    refused = state._source_problem(state.current)
    assert refused is not None and refused.kind == "file" and refused.version == "1"
    assert "models/model.skops" in refused.reason and "not loaded" in refused.reason

    model_file.write_bytes(good)
    assert state._source_problem(state.current) is None


def test_a_new_model_written_with_its_own_card_is_no_refusal(paths: ProjectPaths) -> None:
    model_file = paths.model_file
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"old")
    state = _serving(paths, model_file, hashlib.sha256(b"old").hexdigest())
    assert state.current is not None and state._source_problem(state.current) is None
    model_file.write_bytes(b"retrained")
    paths.model_card.write_text(card(b"retrained"))
    assert state._source_problem(state.current) is None


def test_a_request_waits_for_a_check_only_when_the_registry_changed_or_a_swap_is_pending(
    paths: ProjectPaths,
) -> None:
    state = _serving(paths, paths.model_file, "a" * 64)
    state._seen = state._check_changes.token()
    assert not state.needs_check()
    state.target = "2"  # the alias moved to a version being loaded
    assert state.needs_check()
    state.target = "1"
    with sqlite3.connect(paths.mlflow_db) as db:
        db.execute("UPDATE registered_model_aliases SET version = 2")
    assert state.needs_check()


class _Constant:
    """A stand-in model: the same probability for every record."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, frame: Any) -> Any:
        import numpy as np

        return np.array([[1 - self.p, self.p]] * len(frame))


RECORD = {
    "tenure_months": 12,
    "contract": "Month-to-month",
    "monthly_charges": 70.5,
    "total_charges": 846.0,
    "support_calls": 2,
    "payment_method": "Electronic check",
    "internet_service": "Fiber optic",
    "paperless_billing": 1,
    "senior_citizen": 0,
}


def test_a_request_after_the_alias_moved_is_answered_by_the_new_version_once_swapped_in(
    paths: ProjectPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import httpx

    from mlvs.ops.serve import follow
    from mlvs.ops.serve.app import create_app

    def alias_row(_: ProjectPaths, name: str) -> dict[str, tuple[str, str | None]]:
        with sqlite3.connect(paths.mlflow_db) as db:
            (version,) = db.execute("SELECT version FROM registered_model_aliases").fetchone()
        reads.append(str(version))
        return {"champion": (str(version), "run")}

    def load(*args: Any, **kwargs: Any) -> LoadedModel:
        loads.append(args[3])
        time.sleep(0.2)  # a load takes time: the request must wait for it, not answer meanwhile
        return LoadedModel("m", "champion", args[3], "b" * 64, _Constant(0.9), 0.5, "t", "x", 0.2)

    reads: list[str] = []
    loads: list[str] = []
    monkeypatch.setattr(follow, "read_alias", alias_row)
    monkeypatch.setattr(follow, "load_version", load)
    monkeypatch.setattr(follow, "write_status", lambda *args: None)
    state = ServingState(paths, "m", "champion")
    state.current = LoadedModel("m", "champion", "1", "a" * 64, _Constant(0.1), 0.5, "t", "x", 0.1)
    state.check()
    assert (reads, loads) == (["1"], [])

    async def versions_answered() -> list[str]:
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            body = {"records": [RECORD]}
            first = await client.post("/predict", json=body)
            with sqlite3.connect(paths.mlflow_db) as db:  # the alias moves, as a deploy moves it
                db.execute("UPDATE registered_model_aliases SET version = 2")
            second = await client.post("/predict", json=body)
            third = await client.post("/predict", json=body)
        return [r.json()["model_version"] for r in (first, second, third)]

    assert asyncio.run(versions_answered()) == ["1", "2", "2"]
    # The first request read nothing; the second had the alias read and waited for the load.
    assert (reads, loads) == (["1", "2"], ["2"])
