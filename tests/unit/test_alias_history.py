"""The alias history: each move recorded as a registered-model tag, read back as untrusted input."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _history_checks import history_findings

from mlvs.backends.mlflow import lease
from mlvs.backends.mlflow.history import TAG_PREFIX, MoveReason, move_tags, parse_history
from mlvs.backends.mlflow.registry import (
    move_alias,
    read_alias_history,
    read_registry,
    set_aliases,
)
from mlvs.errors import AliasRaceError, LockTimeoutError
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
    for _ in range(3):
        run = client.create_run("0")
        client.create_model_version(
            NAME, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    return root


@pytest.mark.parametrize("backend", ["sql", "mlflow"])
def test_every_alias_move_is_recorded_by_either_way_into_the_registry(
    _registry_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    shutil.copy(_registry_template / "mlflow.db", tmp_path / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLVS_REGISTRY_BACKEND", backend)
    paths = ProjectPaths(tmp_path)
    first = {"champion": "1", "challenger": "2"}
    set_aliases(paths, NAME, first, MoveReason("pipeline", "a"), expected={})
    set_aliases(
        paths, NAME, {"champion": "2"}, MoveReason("deploy", "b", "pre-deploy-v2"), expected=first
    )
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


# --- every move a compare-and-set: two movers that read the same aliases, one loses and says so ---
# The interleavings are made by hand, step by step, against a real MLflow store: the embedded
# SQLite one with SQL (`sql`), and the same store through MlflowClient (`mlflow`), the way every
# tracking server is used, lease included.


def _paths(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> ProjectPaths:
    shutil.copy(store / "mlflow.db", tmp_path / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLVS_REGISTRY_BACKEND", backend)
    paths = ProjectPaths(tmp_path)
    set_aliases(
        paths,
        NAME,
        {"champion": "1"},
        MoveReason("pipeline", "there is no champion yet"),
        expected={},
    )
    return paths


def _aliases(paths: ProjectPaths) -> dict[str, str]:
    return read_registry(paths, NAME, None).alias_versions()


@pytest.mark.parametrize("backend", ["sql", "mlflow"])
def test_of_two_movers_that_read_the_same_champion_the_second_is_refused_naming_the_first(
    _registry_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    paths = _paths(_registry_template, tmp_path, monkeypatch, backend)
    seen_by_a, seen_by_b = _aliases(paths), _aliases(paths)  # both gates compare with version 1

    why_b = MoveReason("deploy", "version 2 beats version 1: gains", "pre-deploy-v2")
    set_aliases(paths, NAME, {"champion": "2"}, why_b, expected=seen_by_b)
    with pytest.raises(AliasRaceError) as lost:
        move_alias(
            paths,
            NAME,
            "champion",
            "3",
            MoveReason("pipeline", "version 3 beats version 1: gains"),
            seen_by_a,
        )

    message = str(lost.value)
    assert "\n" not in message
    assert "champion moved from version 1 to version 2 by deploy" in message
    assert "snapshot pre-deploy-v2" in message and "nothing was moved" in message
    assert _aliases(paths) == {"champion": "2"}
    moves = read_alias_history(paths, NAME).moves
    assert [(m.from_version, m.to_version) for m in moves] == [(None, "1"), ("1", "2")]
    assert history_findings(moves) == []


def test_without_the_compare_and_set_the_same_interleaving_loses_a_move_and_the_history_shows_it(
    _registry_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How alias moves were made before: read the aliases again when moving, whatever the gate saw.
    paths = _paths(_registry_template, tmp_path, monkeypatch, "mlflow")
    set_aliases(
        paths,
        NAME,
        {"champion": "2"},
        MoveReason("deploy", "version 2 beats version 1: gains"),
        expected={"champion": "1"},
    )
    move_alias(
        paths, NAME, "champion", "3", MoveReason("pipeline", "version 3 beats version 1: gains")
    )

    moves = read_alias_history(paths, NAME).moves
    assert _aliases(paths) == {"champion": "3"}  # version 2's promotion is gone
    (finding,) = history_findings(moves)
    assert "champion -> 3 by pipeline" in finding and "decided against champion 1" in finding


def test_a_lease_held_by_a_live_clone_makes_the_next_mover_wait_then_give_up_naming_it(
    _registry_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    paths = _paths(_registry_template, tmp_path, monkeypatch, "mlflow")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_db}")
    held = lease.acquire(client, NAME, "deploy", seconds=60)

    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as waited:
        lease.acquire(client, NAME, "rollback", seconds=60, wait=0.5)
    assert time.monotonic() - started >= 0.5
    assert "being moved by deploy on" in str(waited.value)

    assert _aliases(paths) == {"champion": "1"}
    lease.release(client, held)
    assert lease.read_lease(client, NAME) is None


def test_the_lease_of_a_clone_that_died_holding_it_is_taken_over_once_it_expires(
    _registry_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    paths = _paths(_registry_template, tmp_path, monkeypatch, "mlflow")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{paths.mlflow_db}")
    dead = lease.acquire(
        client, NAME, "deploy", seconds=0.2
    )  # never released: its clone was killed
    time.sleep(0.3)

    set_aliases(
        paths, NAME, {"champion": "2"}, MoveReason("deploy", "y"), expected={"champion": "1"}
    )

    assert _aliases(paths) == {"champion": "2"}
    # Taken over, used and given back: nobody holds it now, the dead clone's token is gone.
    assert lease.read_lease(client, NAME) is None
    assert dead.expires is not None and dead.expires < time.time()
