"""The scoring service against the in-process floor and against MLflow's own scoring server, side by side.

One workspace with DEFAULT parameters (make_workspace(tiny=False), `mlvs pipeline`): the
real model. Three ways to score the same customers, 1 and 100 records per request:
- the floor: `predict_proba` on a ready frame, in this process, one call after another;
- `mlvs serve` (its real command, on a free loopback port);
- `mlflow models serve -m models:/churn-classifier/1 --env-manager local`, as MLflow's
  documentation runs it (one uvicorn worker, its default; it loads the model with MLflow's
  own skops loader, which needs MLFLOW_ALLOW_PICKLE_DESERIALIZATION on; it answers with
  `predict`'s labels, as a model logged without a `pyfunc_predict_fn` does).
Both servers run at once and get the same load, one right after the other for each
configuration (which goes first alternates; the floor is measured beside the single
client): 1, 8 and 32 clients (threads of this process, each with a keep-alive
connection), a fixed number of requests each, after a warm-up; latency is timed around
each request, throughput over the whole phase.

Then the swap: with 8 clients scoring, the champion is moved to versions the service has
not served yet, and the time from each move to the first `/model` answer naming the new
version is measured; every request of those clients must succeed. Twice: to the same run
registered again (bytes the service has verified already: only the version's card and
golden predictions are checked), then to models of new bytes (the forest fitted again
with other seeds: hashed, loaded with skops, golden predictions reproduced).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _service import start_service
from conftest import BIN, clean_env, git, make_workspace, mlvs

from ._bench import record, table

pytestmark = pytest.mark.bench

MODEL = "churn-classifier"
CLIENT_COUNTS = (1, 8, 32)
# Requests per client for (records per request, clients), after WARM_UP requests per client.
REQUESTS = {1: {1: 400, 8: 100, 32: 30}, 100: {1: 100, 8: 25, 32: 8}}
WARM_UP = 5
SWAPS = 3
OVERHEAD_TARGET_MS = 2.0
SWAP_TARGET_S = 1.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load(port: int, path: str, body: bytes, clients: int, requests: int) -> dict[str, Any]:
    """`clients` threads, each sending `requests` POSTs of `body` (after a warm-up): latencies and throughput."""
    latencies: list[float] = []
    failures = [0]
    ready = threading.Barrier(clients + 1)

    def one_client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Content-Type": "application/json"}
        mine = []
        try:
            for _ in range(WARM_UP):
                connection.request("POST", path, body=body, headers=headers)
                connection.getresponse().read()
            ready.wait()
            for _ in range(requests):
                started = time.perf_counter()
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):  # refused, reset: a failed request
                    ok = False
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                mine.append(time.perf_counter() - started)
                failures[0] += 0 if ok else 1
        finally:
            connection.close()
            latencies.extend(mine)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "throughput_rps": round(len(latencies) / wall, 1),
        "requests": len(latencies),
        "failed": failures[0],
    }


def floor(predict: Callable[[], Any], calls: int) -> dict[str, Any]:
    """`predict_proba` in this process, one call after another: the least any server can take."""
    for _ in range(WARM_UP):
        predict()
    latencies = []
    started = time.perf_counter()
    for _ in range(calls):
        begun = time.perf_counter()
        predict()
        latencies.append(time.perf_counter() - begun)
    wall = time.perf_counter() - started
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "throughput_rps": round(calls / wall, 1),
        "requests": calls,
        "failed": 0,
    }


def start_mlflow_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = clean_env(root)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
        assert process.poll() is None, "mlflow models serve stopped before it answered"
    raise AssertionError("mlflow models serve did not answer /ping in 300 s")


_REGISTER_VERSIONS = """
import sys
import mlflow
client = mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
first = client.get_model_version_by_alias("churn-classifier", "champion")
run = client.get_run(first.run_id)
for _ in range(int(sys.argv[2])):
    print(client.create_model_version("churn-classifier", f"{run.info.artifact_uri}/models", first.run_id).version)
"""


# Versions of new bytes: the champion's pipeline fitted again with other seeds (the same size
# of forest), each saved as training saves a model (file, card, golden predictions) and kept
# by a run of its own, as `register_model` keeps them.
_REGISTER_RETRAINED = """
import json, pathlib, sys, tempfile
import mlflow
import pandas as pd
from mlvs.ml.data import features_and_target, read_customers
from mlvs.ml.modelio import load_verified_model, read_card, save_model
from mlvs.paths import ProjectPaths
root = pathlib.Path(sys.argv[1])
paths = ProjectPaths(root)
model = load_verified_model(paths)
X, y = features_and_target(read_customers(paths.train_data))
rows = pd.DataFrame(json.loads(paths.golden.read_text())["rows"])
client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
first = client.get_model_version_by_alias("churn-classifier", "champion")
experiment = client.get_run(first.run_id).info.experiment_id
for seed in range(1, int(sys.argv[2]) + 1):
    model.set_params(**{k: 1000 + seed for k in model.get_params() if k.endswith("random_state")})
    model.fit(X, y)
    out = ProjectPaths(pathlib.Path(tempfile.mkdtemp(dir=root / ".mlvs")))
    out.models.mkdir()
    saved = save_model(model, out, read_card(paths), rows)
    run = client.create_run(experiment, tags={"model_sha256": saved.sha256})
    for name in ("model.skops", "model_card.json", "golden_predictions.json"):
        client.log_artifact(run.info.run_id, str(out.models / name), "models")
    client.set_terminated(run.info.run_id)
    source = f"{run.info.artifact_uri}/models"
    print(client.create_model_version("churn-classifier", source, run.info.run_id).version)
"""


def move_champion(root: Path, version: str) -> None:
    """The alias move itself, as `mlvs rollback --only registry` makes it: one SQL transaction."""
    with sqlite3.connect(root / "mlflow.db", isolation_level=None) as db:
        db.execute(
            "UPDATE registered_model_aliases SET version = ? WHERE name = ? AND alias = 'champion'",
            (int(version), MODEL),
        )


def timed_swap(root: Path, port: int, version: str) -> float:
    """Seconds from moving the champion to `version` until `/model` names it."""
    time.sleep(0.5)
    moved = time.perf_counter()
    move_champion(root, version)
    while served_version(port) != version:
        assert time.perf_counter() - moved < 60, f"version {version} not served in 60 s"
        time.sleep(0.01)
    return time.perf_counter() - moved


def served_version(port: int) -> str | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/model")
        return json.loads(connection.getresponse().read()).get("version")
    finally:
        connection.close()


def test_serving_latency_throughput_and_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_workspace(tmp_path / "ws", tiny=False)
    trained = mlvs(root, "pipeline")
    assert trained.returncode == 0, trained.stderr[-3000:]
    git(root, "add", "-A")
    git(root, "commit", "-qm", "trained")
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "MLVS_"))]:
        monkeypatch.delenv(key)

    from mlvs.ml.modelio import load_verified_model
    from mlvs.ml.scoring import parse_request, records_frame
    from mlvs.paths import ProjectPaths

    rows = json.loads((root / "models" / "golden_predictions.json").read_text())["rows"]
    records = {size: [rows[i % len(rows)] for i in range(size)] for size in (1, 100)}
    model = load_verified_model(ProjectPaths(root))
    frames = {
        size: records_frame(parse_request({"records": batch}).records)
        for size, batch in records.items()
    }
    results: dict[str, dict[str, Any]] = {}

    # Both servers run at once and each configuration is measured on one right after the
    # other (the first alternating), so that a machine whose load drifts treats them alike.
    service = start_service(root)
    port = free_port()
    mlflow_server = start_mlflow_server(root, port)
    try:
        for turn, (size, clients) in enumerate(
            (size, clients) for size in records for clients in CLIENT_COUNTS
        ):
            if clients == 1:  # the floor, measured beside the servers' own single client
                results[f"floor {size} record(s)"] = floor(
                    lambda frame=frames[size]: model.predict_proba(frame), REQUESTS[size][1]
                )
            ours = ("mlvs", service.port, "/predict", {"records": records[size]})
            theirs = ("mlflow", port, "/invocations", {"dataframe_records": records[size]})
            for name, at, path, body in (ours, theirs) if turn % 2 == 0 else (theirs, ours):
                results[f"{name} {size} record(s), {clients} client(s)"] = load(
                    at, path, json.dumps(body).encode(), clients, REQUESTS[size][clients]
                )
    except BaseException:
        service.stop()
        raise
    finally:
        os.killpg(mlflow_server.pid, 15)
        mlflow_server.wait(timeout=60)

    swaps: list[float] = []
    new_bytes_swaps: list[float] = []
    traffic: dict[str, Any] = {}
    new_bytes_traffic: dict[str, Any] = {}
    try:
        registered = subprocess.run(
            [str(BIN / "python"), "-c", _REGISTER_VERSIONS, str(root), str(SWAPS)],
            env=clean_env(root),
            capture_output=True,
            text=True,
        )
        assert registered.returncode == 0, registered.stderr[-3000:]
        versions = registered.stdout.split()
        body = json.dumps({"records": records[1]}).encode()
        background = threading.Thread(
            target=lambda: traffic.update(load(service.port, "/predict", body, 8, 400))
        )
        background.start()
        for version in versions:
            swaps.append(timed_swap(root, service.port, version))
        background.join()
        retrained = subprocess.run(
            [str(BIN / "python"), "-c", _REGISTER_RETRAINED, str(root), str(SWAPS)],
            env=clean_env(root),
            capture_output=True,
            text=True,
        )
        assert retrained.returncode == 0, retrained.stderr[-3000:]
        background = threading.Thread(
            target=lambda: new_bytes_traffic.update(load(service.port, "/predict", body, 8, 400))
        )
        background.start()
        for version in retrained.stdout.split():
            new_bytes_swaps.append(timed_swap(root, service.port, version))
        background.join()
    finally:
        assert service.stop() == 0, service.log()

    floor_1 = results["floor 1 record(s)"]["p50_ms"]
    mlvs_1 = results["mlvs 1 record(s), 1 client(s)"]["p50_ms"]
    overhead = round(mlvs_1 - floor_1, 3)
    mlvs_8 = results["mlvs 1 record(s), 8 client(s)"]["throughput_rps"]
    mlflow_8 = results["mlflow 1 record(s), 8 client(s)"]["throughput_rps"]
    table(
        "scoring: latency (ms) and throughput (requests/s)",
        ["how", "p50", "p99", "req/s", "requests", "failed"],
        [
            [name, r["p50_ms"], r["p99_ms"], r["throughput_rps"], r["requests"], r["failed"]]
            for name, r in results.items()
        ],
    )
    print(
        f"swap after an alias move (s): {[round(s, 3) for s in swaps]}; traffic meanwhile: {traffic}"
    )
    print(
        f"swap to new bytes (s): {[round(s, 3) for s in new_bytes_swaps]}; "
        f"traffic meanwhile: {new_bytes_traffic}"
    )
    assert all(r["failed"] == 0 for r in results.values())

    figures = {"results": results}
    record(
        "serve_overhead_1_record_1_client",
        figures,
        value=overhead,
        unit="ms",
        target=OVERHEAD_TARGET_MS,
        target_text=f"p50 of mlvs serve at most {OVERHEAD_TARGET_MS} ms over in-process predict_proba",
        baseline=floor_1,
        ratio=round(mlvs_1 / floor_1, 3),
    )
    for size in (1, 100):
        ours = results[f"mlvs {size} record(s), 8 client(s)"]["throughput_rps"]
        theirs = results[f"mlflow {size} record(s), 8 client(s)"]["throughput_rps"]
        record(
            f"serve_throughput_{size}_record{'s' if size > 1 else ''}_8_clients",
            {"p50_ms": results[f"mlvs {size} record(s), 8 client(s)"]["p50_ms"]},
            value=ours,
            unit="requests/s",
            target=theirs,
            target_text="at least the throughput of mlflow models serve on the same version",
            better="higher",
            baseline=theirs,
            ratio=round(ours / theirs, 3),
        )
    record(
        "serve_swap_after_alias_move",
        {"swaps_s": [round(s, 3) for s in swaps]},
        value=round(max(swaps), 3),
        unit="s",
        target=SWAP_TARGET_S,
        target_text=(
            f"every swap at most {SWAP_TARGET_S} s after the alias moved (a version not served "
            "before: the same run registered again, whose bytes the service already verified)"
        ),
    )
    record(
        "serve_swap_to_new_model_bytes",
        {"swaps_s": [round(s, 3) for s in new_bytes_swaps]},
        value=round(max(new_bytes_swaps), 3),
        unit="s",
        target=SWAP_TARGET_S,
        target_text=(
            f"every swap at most {SWAP_TARGET_S} s after the alias moved to a model never loaded "
            "(the forest fitted again with another seed): hash, skops load, golden predictions"
        ),
    )
    record(
        "serve_failed_requests_during_swaps",
        {"requests": traffic.get("requests", 0) + new_bytes_traffic.get("requests", 0)},
        value=traffic.get("failed", -1) + new_bytes_traffic.get("failed", -1),
        unit="requests",
        target=0,
        target_text="no failed request while the alias moves under 8 clients",
    )
    assert mlvs_8 > 0 and mlflow_8 > 0
