"""Rollback under live traffic: a deploy and its rollback while eight clients keep scoring, and no request fails.

The real service runs in a trained workspace where version 2 is the champion's run
registered again. Eight clients on loopback each send a fixed number of requests of one
to three records on their own keep-alive connection, while the deploy operation (what
`mlvs deploy 2 --force` calls, run in the test's process to spare a start-up) moves the
champion to version 2 (the gate, rightly, sees no gain: forced, as its own drill shows)
and `mlvs rollback pre-deploy-... --only registry` moves it back. Each client's requests come
in four equal parts: the first before the deploy, the second while it runs, the third
from 1 s after it and while the rollback runs, the last from 1 s after the rollback.

What "the champion" was at each moment is read twice: from the registry's own alias row,
polled every few milliseconds by a thread of the test (the instants of each move to
within that), and from the alias history (`mlvs.ops.history.champion_at`), which must
agree. Then, literally: every answer's version was the champion at some moment between
the request's start and its end, and every request sent more than 1 s after a move (by
the history's time) is answered by the version the alias moved to.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _service import Service, records_of, start_service
from conftest import BIN, clean_env, mlvs

pytestmark = pytest.mark.slow

MODEL = "churn-classifier"
CLIENTS = 8
# Requests of each client in each of its four parts: a fixed count, 192 per client in all.
PART = 12
# Between two requests of one client, before the deploy and after the rollback; while a move
# runs, longer, so that each part spans the seconds the command takes.
PAUSE_S = 0.02
PAUSE_DURING_MOVE_S = 0.3
POLL_S = 0.005
# The outcome's bound: within this after each alias move, every new answer comes from the new version.
WITHIN_S = 1.0


@dataclass(frozen=True)
class Answer:
    started: float  # time.time(), so that it compares with the alias history's times
    ended: float
    status: int
    version: str | None


def alias_timeline(
    root: Path, stop: threading.Event, moves: list[tuple[float, float, str]]
) -> None:
    """Append (last poll before, first poll after, version) for the champion at start and at every move."""
    db = sqlite3.connect(f"{(root / 'mlflow.db').as_uri()}?mode=ro", uri=True, timeout=30)
    query = "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'"
    last, before = None, float("-inf")
    try:
        while not stop.is_set():
            polled = time.time()
            (version,) = db.execute(query, (MODEL,)).fetchone()
            if str(version) != last:
                moves.append((before, time.time(), str(version)))
                last = str(version)
            before = polled
            time.sleep(POLL_S)
    finally:
        db.close()


def client(
    service: Service, bodies: list[bytes], gates: list[threading.Event], answers: list[Answer]
) -> None:
    """PART requests before each gate opens... then PART after each: a fixed count, paced."""
    connection = service.connection()
    try:
        for part, gate in enumerate([None, *gates]):
            if gate is not None:
                assert gate.wait(timeout=300), "the moves did not finish in 300 s"
            pause = PAUSE_DURING_MOVE_S if part in (1, 2) else PAUSE_S
            for i in range(PART):
                started = time.time()
                try:
                    connection.request(
                        "POST",
                        "/predict",
                        body=bodies[(part * PART + i) % len(bodies)],
                        headers={"Content-Type": "application/json"},
                    )
                    response = connection.getresponse()
                    body = json.loads(response.read())
                    answers.append(
                        Answer(started, time.time(), response.status, body.get("model_version"))
                    )
                except Exception:  # a refused or broken connection is a failed request
                    answers.append(Answer(started, time.time(), 0, None))
                    connection.close()
                    connection = service.connection()
                time.sleep(pause)
    finally:
        connection.close()


def champion_during(
    moves: list[tuple[float, float, str]], started: float, ended: float
) -> set[str]:
    """Every version that was the champion at some moment of [started, ended], as the poller saw it."""
    possible = set()
    for i, (after, _, version) in enumerate(moves):
        # It became champion after `after` (the last poll that still saw the one before) and
        # stayed at most until the first poll that saw the next one.
        until = moves[i + 1][1] if i + 1 < len(moves) else float("inf")
        if after <= ended and started <= until:
            possible.add(version)
    return possible


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# Version 2 is the champion's run registered again: a new version of the registry, the bytes
# its run recorded. The gate refuses it (it gains nothing), so it is deployed with --force:
# the deploy command's whole path (snapshot, alias move, history) with the gate overruled.
_REGISTER_SECOND_VERSION = """
import sys
import mlflow
client = mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
first = client.get_model_version_by_alias("churn-classifier", "champion")
run = client.get_run(first.run_id)
print(client.create_model_version(
    "churn-classifier", f"{run.info.artifact_uri}/models", first.run_id
).version)
"""


def test_a_deploy_and_its_rollback_under_live_traffic_fail_no_request(
    trained_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = trained_workspace
    # Set, not deleted, so that the store the in-process deploy configures is undone after the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLVS_ROOT", str(root))
    from mlvs.ops.deploy import deploy
    from mlvs.ops.history import alias_history, champion_at
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(root)
    registered = subprocess.run(
        [str(BIN / "python"), "-c", _REGISTER_SECOND_VERSION, str(root)],
        env=clean_env(root),
        capture_output=True,
        text=True,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert registered.stdout.split() == ["2"]
    history_before = len(alias_history(paths).moves)
    service = start_service(root)
    gates = [threading.Event() for _ in range(3)]
    stop_polling = threading.Event()
    moves: list[tuple[float, float, str]] = []
    answers: list[list[Answer]] = [[] for _ in range(CLIENTS)]
    bodies = [json.dumps({"records": records_of(root, 1 + n % 3)}).encode() for n in range(CLIENTS)]
    poller = threading.Thread(target=alias_timeline, args=(root, stop_polling, moves))
    clients = [
        threading.Thread(target=client, args=(service, bodies[n:] + bodies[:n], gates, answers[n]))
        for n in range(CLIENTS)
    ]
    try:
        poller.start()
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        gates[0].set()
        # The deploy operation itself, in this process: `mlvs deploy` is this call and its
        # start-up, seconds of imports this test has no need to wait for.
        deployed = deploy(paths, "2", force=True)
        assert deployed.deployed and deployed.forced, deployed.to_dict()
        snapshot = deployed.snapshot
        assert snapshot is not None
        time.sleep(WITHIN_S + 0.2)
        gates[1].set()
        rolled = mlvs(root, "rollback", snapshot, "--only", "registry")
        assert rolled.returncode == 0, rolled.stderr[-3000:]
        time.sleep(WITHIN_S + 0.2)
        gates[2].set()
    finally:
        for gate in gates:
            gate.set()
        for thread in clients:
            thread.join(timeout=120)
        stop_polling.set()
        poller.join(timeout=60)
        assert service.stop() == 0, service.log()

    every = [answer for per_client in answers for answer in per_client]
    assert len(every) == CLIENTS * 4 * PART
    failed = [a for a in every if a.status != 200]
    assert not failed, f"{len(failed)} of {len(every)} requests failed"

    # The champion's moves as the registry's row showed them, and as the alias history has them.
    assert [version for _, _, version in moves] == ["1", "2", "1"]
    recorded = [m for m in alias_history(paths).moves[history_before:] if m.alias == "champion"]
    assert [(m.command, m.to_version) for m in recorded] == [("deploy", "2"), ("rollback", "1")]
    for _, seen, version in moves:
        assert champion_at(paths, _moment(seen)) == version

    # Every answer came from a version that was champion at some moment of its request.
    wrong = [a for a in every if a.version not in champion_during(moves, a.started, a.ended)]
    assert not wrong, (
        f"{len(wrong)} answers came from a version that was not champion during the request, "
        f"e.g. {wrong[0]}; moves {moves}"
    )
    # Literally: from 1 s after each move (the history's time), every new answer is the new version.
    for i, move in enumerate(recorded):
        moved = move.when().timestamp()
        until = recorded[i + 1].when().timestamp() if i + 1 < len(recorded) else float("inf")
        late = [a for a in every if moved + WITHIN_S < a.started and a.ended < until]
        assert late, (
            f"no request was sent more than {WITHIN_S} s after the move to {move.to_version}"
        )
        stale = [a for a in late if a.version != move.to_version]
        assert not stale, f"{len(stale)} answers after the move to {move.to_version}: {stale[:3]}"
    # Both versions really answered while the clients ran: the moves happened under traffic.
    assert {a.version for a in every} == {"1", "2"}
