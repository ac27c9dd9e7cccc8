"""`mlvs serve`: the scoring service of the champion, started for real on a free loopback port.

One service in one trained workspace answers the read-only checks; the refusal of a
bad version has a workspace and a service of its own.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _service import Service, records_of, start_service
from conftest import BIN, clean_env, copy_workspace, mlvs

pytestmark = pytest.mark.slow

MODEL = "churn-classifier"


def champion(root: Path) -> str:
    with sqlite3.connect(root / "mlflow.db") as db:
        (version,) = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'",
            (MODEL,),
        ).fetchone()
    return str(version)


@pytest.fixture(autouse=True)
def _own_tracking_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test reads its own workspace's store: MLflow exports MLFLOW_TRACKING_URI into the
    environment when an in-process call configures it, which would point later tests elsewhere."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def served(
    _trained_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Service]]:
    root = copy_workspace(_trained_template, tmp_path_factory.mktemp("served") / "ws")
    service = start_service(root)
    yield root, service
    assert service.stop() == 0, service.log()


def test_health_is_ok_once_the_champion_is_loaded_and_verified(
    served: tuple[Path, Service],
) -> None:
    root, service = served
    status, body = service.call("GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["model_version"] == champion(root)
    assert body["refused"] is None


def test_model_names_the_champion_version_and_the_hash_its_run_recorded(
    served: tuple[Path, Service],
) -> None:
    root, service = served
    card = json.loads((root / "models" / "model_card.json").read_text())
    status, body = service.call("GET", "/model")
    assert status == 200
    assert (body["name"], body["alias"], body["version"]) == (MODEL, "champion", champion(root))
    assert body["model_sha256"] == card["model_sha256"]
    assert body["loaded_at"].endswith("Z")


def test_predictions_are_the_golden_probabilities_decided_at_the_cards_threshold(
    served: tuple[Path, Service],
) -> None:
    root, service = served
    golden = json.loads((root / "models" / "golden_predictions.json").read_text())
    threshold = json.loads((root / "models" / "model_card.json").read_text())["decision_threshold"]
    status, body = service.call("POST", "/predict", {"records": golden["rows"]})
    assert status == 200
    assert body["model_version"] == champion(root)
    probabilities = [p["churn_probability"] for p in body["predictions"]]
    assert probabilities == [float(p) for p in golden["churn_probability"]]
    assert [p["churn"] for p in body["predictions"]] == [p >= threshold for p in probabilities]


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"contract": None}, "contract"),
        ({"support_calls": "two"}, "support_calls"),
        ({"internet_service": "Satellite"}, "internet_service"),
        ({"tenure_months": 500}, "tenure_months"),
    ],
    ids=["missing-column", "wrong-type", "unknown-category", "outside-the-schema"],
)
def test_a_bad_record_gets_422_naming_the_record_and_the_column(
    served: tuple[Path, Service], change: dict[str, Any], column: str
) -> None:
    root, service = served
    records = records_of(root, 3)
    bad = {k: v for k, v in {**records[1], **change}.items() if v is not None}
    status, body = service.call("POST", "/predict", {"records": [records[0], bad, records[2]]})
    assert status == 422
    assert [(e["record"], e["column"]) for e in body["errors"]] == [(1, column)]
    assert f"record 1, column {column!r}" in body["detail"]


def test_a_body_that_is_not_json_or_too_large_is_refused_and_the_service_goes_on(
    served: tuple[Path, Service],
) -> None:
    _, service = served
    status, body = service.call("POST", "/predict", raw=b'{"records": [')
    assert status == 422
    assert body["errors"][0]["record"] is None
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as raw:
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert raw.recv(64).split(b" ")[1] == b"413"
    assert service.call("GET", "/health")[0] == 200


def test_the_values_sent_never_reach_the_log(served: tuple[Path, Service]) -> None:
    root, service = served
    record = {**records_of(root, 1)[0], "customer_id": "SECRET-ID-4711"}
    assert service.call("POST", "/predict", {"records": [record]})[0] == 200
    bad = {**record, "contract": "SECRET-PLAN-4711"}
    assert service.call("POST", "/predict", {"records": [bad]})[0] == 422
    logged = service.log() + "".join(
        p.read_text() for p in (root / ".mlvs" / "logs").glob("mlvs.log*")
    )
    assert "serving" in logged
    assert "SECRET" not in logged


def test_openapi_describes_the_three_endpoints(served: tuple[Path, Service]) -> None:
    _, service = served
    status, spec = service.call("GET", "/openapi.json")
    assert status == 200
    assert {"/health", "/model", "/predict"} <= set(spec["paths"])
    record = spec["components"]["schemas"]["CustomerRecord"]
    assert record["properties"]["tenure_months"]["maximum"] == 72


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--alias", "nosuch"], "nosuch"),
        (["--port", "{busy}"], "already in use"),
    ],
    ids=["unknown-alias", "port-in-use"],
)
def test_a_bad_option_is_refused_in_one_line_with_status_2(
    served: tuple[Path, Service], args: list[str], named: str
) -> None:
    root, service = served
    args = [a.replace("{busy}", str(service.port)) for a in args]
    result = mlvs(root, "serve", *args, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlvs: error:")
    assert named in lines[0]


# A version whose run recorded the hash of one model file but keeps another: what a corrupted
# artifact store, or a file swapped after training, looks like to the service.
_REGISTER_BAD_VERSION = """
import hashlib, pathlib, sys
import mlflow
root = pathlib.Path(sys.argv[1])
client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
current = client.get_model_version_by_alias("churn-classifier", "champion")
trained = (root / "models" / "model.skops").read_bytes() + b"another model"
run = client.create_run(
    client.get_run(current.run_id).info.experiment_id,
    tags={"model_sha256": hashlib.sha256(trained).hexdigest()},
)
for name in ("model.skops", "model_card.json", "golden_predictions.json"):
    client.log_artifact(run.info.run_id, str(root / "models" / name), "models")
client.set_terminated(run.info.run_id)
bad = client.create_model_version(
    "churn-classifier", f"{run.info.artifact_uri}/models", run.info.run_id
)
client.set_registered_model_alias("churn-classifier", "champion", bad.version)
print(bad.version)
"""


def wait_for(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def test_a_version_that_fails_verification_is_refused_and_the_old_one_served(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    good = champion(root)
    service = start_service(root)
    try:
        moved = subprocess.run(
            [str(BIN / "python"), "-c", _REGISTER_BAD_VERSION, str(root)],
            env=clean_env(root),
            capture_output=True,
            text=True,
        )
        assert moved.returncode == 0, moved.stderr[-3000:]
        bad = moved.stdout.strip().splitlines()[-1]
        health = wait_for(lambda: (b := service.call("GET", "/health")[1])["refused"] and b)
        assert health["status"] == "degraded"
        assert health["refused"]["version"] == bad
        assert "SHA-256" in health["refused"]["reason"]
        status, body = service.call("POST", "/predict", {"records": records_of(root, 2)})
        assert (status, body["model_version"]) == (200, good)
        assert f"refused {MODEL}@champion version {bad}" in service.log()

        verified = mlvs(root, "verify")
        assert verified.returncode == 1
        assert f"{MODEL}@champion (version {bad})" in verified.stdout
    finally:
        assert service.stop() == 0, service.log()


def test_a_damaged_workspace_model_is_not_served_the_runs_own_copy_is(
    trained_workspace: Path,
) -> None:
    from mlvs.backends.mlflow.model_files import read_alias
    from mlvs.ops.serve.loader import load_version
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(trained_workspace)
    recorded = json.loads(paths.model_card.read_text())["model_sha256"]
    damaged = bytearray(paths.model_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    paths.model_file.write_bytes(bytes(damaged))
    version, run_id = read_alias(paths, MODEL)["champion"]
    loaded = load_version(paths, MODEL, "champion", version, run_id)
    assert (loaded.source, loaded.model_sha256) == ("run artifacts", recorded)


def test_a_model_that_does_not_reproduce_its_golden_predictions_is_refused(
    trained_workspace: Path,
) -> None:
    from mlvs.errors import IntegrityError
    from mlvs.ops.serve.loader import verify_model_dir
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(trained_workspace)
    golden = json.loads(paths.golden.read_text())
    golden["churn_probability"][0] = repr(float(golden["churn_probability"][0]) + 1e-9)
    paths.golden.write_text(json.dumps(golden))
    recorded = json.loads(paths.model_card.read_text())["model_sha256"]
    with pytest.raises(IntegrityError, match="does not reproduce its golden predictions"):
        verify_model_dir(paths, recorded, 0.5)
