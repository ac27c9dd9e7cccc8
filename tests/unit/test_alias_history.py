"""The alias history: each move recorded as a registered-model tag, read back as untrusted input."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlvs.backends.mlflow.history import TAG_PREFIX, MoveReason, move_tags, parse_history
from mlvs.paths import ProjectPaths

NAME = "churn-classifier"


def test_a_recorded_move_reads_back_with_every_field() -> None:
    tags = move_tags(
        [("champion", "1", "2")], MoveReason("deploy", "better", "pre-deploy-v2", forced=True)
    )
    (move,) = parse_history(NAME, tags).moves
    assert (move.command, move.alias, move.from_version, move.to_version) == (
        "deploy",
        "champion",
        "1",
        "2",
    )
    assert move.snapshot == "pre-deploy-v2" and move.reason == "better" and move.forced
    assert move.when() <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("{not json", "its value is not JSON"),
        ("[1, 2]", "a JSON object is needed"),
        ('{"time": "yesterday"}', "field 'command' must be a non-empty text"),
        ("RECORD_WITH_BAD_VERSION", "field 'to_version' must be a version number or null"),
        ("RECORD_WITH_EXTRA_FIELD", "unknown field 'extra'"),
    ],
)
def test_a_malformed_tag_is_named_and_not_counted(value: str, named: str) -> None:
    good = move_tags([("champion", None, "1")], MoveReason("pipeline", "first"))
    record = json.loads(next(iter(good.values())))
    if value == "RECORD_WITH_BAD_VERSION":
        value = json.dumps({**record, "to_version": "../../etc"})
    elif value == "RECORD_WITH_EXTRA_FIELD":
        value = json.dumps({**record, "extra": 1})
    bad_key = f"{TAG_PREFIX}00000000000000000002.0001.champion"
    history = parse_history(NAME, {**good, bad_key: value, "unrelated": "x"})
    assert len(history.moves) == 1
    (problem,) = history.problems
    assert bad_key in problem and named in problem


def test_the_version_at_a_time_is_the_last_move_before_it() -> None:
    first = move_tags([("champion", None, "1")], MoveReason("pipeline", "first"))
    middle = datetime.now(UTC)
    second = move_tags([("champion", "1", "2")], MoveReason("deploy", "better"))
    history = parse_history(NAME, {**second, **first})  # order of the tags does not matter
    assert [m.to_version for m in history.moves] == ["1", "2"]
    assert history.version_at("champion", datetime(2000, 1, 1, tzinfo=UTC)) is None
    assert history.version_at("champion", middle) == "1"
    assert history.version_at("champion", datetime.now(UTC)) == "2"
    assert history.version_at("challenger", datetime.now(UTC)) is None


@pytest.fixture(scope="module")
def _registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    client.create_registered_model(NAME)
    for _ in range(2):
        run = client.create_run("0")
        client.create_model_version(
            NAME, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    return root


@pytest.mark.parametrize("backend", ["sql", "mlflow"])
def test_every_alias_move_is_recorded_by_either_way_into_the_registry(
    _registry_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from mlvs.backends.mlflow.registry import read_alias_history, read_registry, set_aliases

    shutil.copy(_registry_template / "mlflow.db", tmp_path / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLVS_REGISTRY_BACKEND", backend)
    paths = ProjectPaths(tmp_path)
    set_aliases(paths, NAME, {"champion": "1", "challenger": "2"}, MoveReason("pipeline", "a"))
    set_aliases(paths, NAME, {"champion": "2"}, MoveReason("deploy", "b", "pre-deploy-v2"))
    assert read_registry(paths, NAME, None).alias_versions() == {"champion": "2"}
    moves = [
        (m.command, m.alias, m.from_version, m.to_version, m.snapshot)
        for m in read_alias_history(paths, NAME).moves
    ]
    assert moves == [
        ("pipeline", "challenger", None, "2", None),
        ("pipeline", "champion", None, "1", None),
        ("deploy", "challenger", "2", None, "pre-deploy-v2"),
        ("deploy", "champion", "1", "2", "pre-deploy-v2"),
    ]
