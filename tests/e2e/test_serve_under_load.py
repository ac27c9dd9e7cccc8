"""Rollback under live traffic: the champion moves twice while eight clients keep scoring, and no request fails.

The real service runs in a trained workspace; eight clients on loopback send requests
of one to three records, each on its own keep-alive connection, while the champion
moves to a new version (the place of `mlvs deploy`) and is rolled back with `mlvs
rollback --only registry`. A thread reads the alias from the registry every few
milliseconds, so each move is known to within that; each request is timed from just
before it is sent to just after its answer is read.

The service learns of a move by reading the alias (every 0.25 s), so an answer may come
from the champion the alias left less than the swap's 1 s before the request was sent;
any other version in an answer is a failure, and so is the old version in an answer to a
request sent more than 1 s after the move.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _service import Service, records_of, start_service
from conftest import BIN, clean_env, mlvs

pytestmark = pytest.mark.slow

CLIENTS = 8
# Each client stops once both moves have settled, and never sends more than this.
MAX_REQUESTS_PER_CLIENT = 2000
# Between two requests of one client: eight clients then keep the service busy without
# starving the commands that move the alias of the machine's two cores.
PAUSE_S = 0.02
POLL_S = 0.005
SETTLE_S = 1.0
# The longest a swap may take after the alias moves (the outcome: within 1 s).
SWAP_S = 1.0


# The setup: version 2 is the same model registered again (a new version of the registry,
# the bytes its run recorded), and snapshot `deployed` holds the registry with the
# champion on it. The champion is then put back on version 1 without a snapshot, so that
# the first move under traffic is `mlvs rollback deployed --only registry`: `mlvs deploy`
# takes its place once it exists.
_REGISTER_SECOND_VERSION = """
import os, subprocess, sys
import mlflow
root, mlvs = sys.argv[1], sys.argv[2]
client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
first = client.get_model_version_by_alias("churn-classifier", "champion")
run = client.get_run(first.run_id)
second = client.create_model_version(
    "churn-classifier", f"{run.info.artifact_uri}/models", first.run_id
)
client.set_registered_model_alias("churn-classifier", "champion", second.version)
subprocess.run([mlvs, "snapshot", "create", "deployed"], cwd=root, check=True, capture_output=True)
client.set_registered_model_alias("churn-classifier", "champion", first.version)
print(first.version, second.version)
"""


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    version: str | None


def alias_timeline(
    root: Path, stop: threading.Event, moves: list[tuple[float, float, str]]
) -> None:
    """Append (last poll before, first poll after, version) for the champion at start and at every move."""
    db = sqlite3.connect(f"{(root / 'mlflow.db').as_uri()}?mode=ro", uri=True, timeout=30)
    query = (
        "SELECT version FROM registered_model_aliases "
        "WHERE name = 'churn-classifier' AND alias = 'champion'"
    )
    last, before = None, float("-inf")
    try:
        while not stop.is_set():
            polled = time.monotonic()
            (version,) = db.execute(query).fetchone()
            if str(version) != last:
                moves.append((before, time.monotonic(), str(version)))
                last = str(version)
            before = polled
            time.sleep(POLL_S)
    finally:
        db.close()


def client(
    service: Service, bodies: list[bytes], stop: threading.Event, answers: list[Answer]
) -> None:
    connection = service.connection()
    try:
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                connection.request(
                    "POST",
                    "/predict",
                    body=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                body = json.loads(response.read())
                answers.append(
                    Answer(started, time.monotonic(), response.status, body.get("model_version"))
                )
            except Exception:  # a refused or broken connection is a failed request
                answers.append(Answer(started, time.monotonic(), 0, None))
                connection.close()
                connection = service.connection()
            time.sleep(PAUSE_S)
    finally:
        connection.close()


def champion_during(
    moves: list[tuple[float, float, str]], started: float, ended: float
) -> set[str]:
    """Every version that may have been the champion at some moment of [started, ended]."""
    possible = set()
    for i, (after, _, version) in enumerate(moves):
        # It became champion after `after` (the last poll that still saw the one before) and
        # stayed at most until the first poll that saw the next one.
        until = moves[i + 1][1] if i + 1 < len(moves) else float("inf")
        if after <= ended and started <= until:
            possible.add(version)
    return possible


def test_a_deploy_and_a_rollback_under_live_traffic_fail_no_request(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    mlvs(root, "snapshot", "create", "before-deploy", check=True)
    registered = subprocess.run(
        [str(BIN / "python"), "-c", _REGISTER_SECOND_VERSION, str(root), str(BIN / "mlvs")],
        env=clean_env(root),
        capture_output=True,
        text=True,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    first, second = registered.stdout.split()

    service = start_service(root)
    stop_clients, stop_polling = threading.Event(), threading.Event()
    moves: list[tuple[float, float, str]] = []
    answers: list[list[Answer]] = [[] for _ in range(CLIENTS)]
    bodies = [json.dumps({"records": records_of(root, 1 + n % 3)}).encode() for n in range(CLIENTS)]
    poller = threading.Thread(target=alias_timeline, args=(root, stop_polling, moves))
    clients = [
        threading.Thread(
            target=client, args=(service, bodies[n:] + bodies[:n], stop_clients, answers[n])
        )
        for n in range(CLIENTS)
    ]
    try:
        poller.start()
        for thread in clients:
            thread.start()
        time.sleep(SETTLE_S)
        for snapshot in ("deployed", "before-deploy"):  # the deploy, then its rollback
            moved = mlvs(root, "rollback", snapshot, "--only", "registry")
            assert moved.returncode == 0, moved.stderr[-3000:]
            time.sleep(SETTLE_S + 0.5)
    finally:
        stop_clients.set()
        for thread in clients:
            thread.join(timeout=60)
        stop_polling.set()
        poller.join(timeout=60)
        assert service.stop() == 0, service.log()

    every = [answer for per_client in answers for answer in per_client]
    assert [version for _, _, version in moves] == [first, second, first]
    assert all(len(per_client) < MAX_REQUESTS_PER_CLIENT for per_client in answers)
    failed = [a for a in every if a.status != 200]
    assert not failed, f"{len(failed)} of {len(every)} requests failed"
    # A move is seen within the service's poll and swapped in once verified: an answer may come
    # from the version the alias left less than SWAP_S before the request, never from another.
    wrong = [
        a for a in every if a.version not in champion_during(moves, a.started - SWAP_S, a.ended)
    ]
    assert not wrong, f"{len(wrong)} answers came from a version that was not champion then"
    for i, (after, _, version) in enumerate(moves[1:], start=1):
        until = moves[i + 1][0] if i + 1 < len(moves) else float("inf")
        # Sent over 1 s after this move, answered before the next one: only the new version.
        late = [a for a in every if after + SWAP_S < a.started and a.ended < until]
        assert late, f"no request was sent more than 1 s after the move to version {version}"
        stale = [a.started - after for a in late if a.version != version]
        assert not stale, (
            f"{len(stale)} requests sent 1 to {max(stale, default=0):.2f} s after the move to "
            f"version {version} were answered by another version:\n{service.log()}"
        )
