"""`mlvs monitor` and `mlvs alerts` on a trained workspace: drift raises its alert once, a webhook
gets it, labels add realised performance, a clean batch resolves it; bad input changes nothing."""

from __future__ import annotations

import http.server
import json
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _service import records_of, start_service
from conftest import BIN, clean_env, copy_workspace, mlvs, register_inverted_version, tree_hashes
from team._browser import chromium

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUESTS_PER_CLIENT = 2000  # an upper bound: the clients stop once the rollback is served
BATCH_1, LABELS_1 = "data/batches/batch-0001.csv", "data/labels/batch-0001.csv"
BATCH_2, LABELS_2 = "data/batches/batch-0002.csv", "data/labels/batch-0002.csv"


class Receiver:
    """A webhook on loopback that keeps the JSON of every POST it is sent."""

    def __init__(self) -> None:
        received: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    up = Receiver()
    yield up
    up.close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/alerts"


@pytest.fixture(scope="module")
def batched(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained workspace with batch 1 (a price rise) and batch 2 (the training distribution)."""
    root = copy_workspace(_trained_template, tmp_path_factory.mktemp("monitor") / "ws")
    # The tiny workspace's test set has 80 rows: its predictions are too few for a prediction
    # PSI that a clean batch stays under. How well the rules tell drift from noise at the
    # project's sizes is measured by the monitoring benchmark; here, the mechanics.
    params = root / "params" / "monitoring.yaml"
    document = yaml.safe_load(params.read_text())
    for rule in document["rules"]:
        if rule["name"] == "prediction_drift":
            rule["above"] = 1.0
    params.write_text(yaml.safe_dump(document, sort_keys=False))
    for scenario in ("price_rise", "none"):
        made = mlvs(root, "batches", "generate", "--scenario", scenario)
        assert made.returncode == 0, made.stderr
    return root


@pytest.fixture
def ws(batched: Path, tmp_path: Path) -> Path:
    return copy_workspace(batched, tmp_path / "ws")


def monitor(root: Path, *args: str, webhook: str | None = None) -> tuple[int, dict, str]:
    env = clean_env(root) | ({"MLVS_ALERT_WEBHOOK": webhook} if webhook else {})
    done = subprocess.run(
        [str(BIN / "mlvs"), "monitor", *args, "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


def test_drift_alerts_once_labels_add_performance_and_a_clean_batch_resolves_it(
    ws: Path, receiver: Receiver
) -> None:
    code, first, _ = monitor(ws, BATCH_1, webhook=receiver.url)
    assert code == 1
    raised = {(a["rule"], a["subject"]) for a in first["alerts"]}
    assert ("feature_drift", "monthly_charges") in raised
    assert first["drift"]["features"]["monthly_charges"]["drifted"]
    assert not first["drift"]["features"]["contract"]["drifted"]
    sent = {(a["rule"], a["subject"], a["status"]) for a in receiver.received}
    assert sent == {(rule, subject, "open") for rule, subject in raised}
    assert {"rule", "severity", "subject", "value", "threshold"} <= set(receiver.received[0])

    code, labelled, _ = monitor(ws, BATCH_1, "--labels", LABELS_1, webhook=receiver.url)
    performance = labelled["performance"]
    assert 0.5 < performance["roc_auc"] <= 1.0 and 0.5 < performance["reference_roc_auc"] <= 1.0
    assert performance["roi"] > 0 and performance["reference_roi"] > 0
    assert labelled["alerts"] == []  # the open alert is not raised again
    assert code == 1 and len(receiver.received) == len(sent)

    # The webhook is down now: the batch is still judged, and the console says what was not sent.
    code, clean, stderr = monitor(ws, BATCH_2, webhook=closed_port_url())
    assert code == 0 and clean["open_alerts"] == []
    assert {(a["rule"], a["subject"]) for a in clean["resolved"]} == raised
    assert clean["webhook_failures"] and "alert not delivered" in stderr

    listed = json.loads(mlvs(ws, "alerts", "--json").stdout)["alerts"]
    assert {(a["rule"], a["subject"], a["status"], a["resolved_batch"]) for a in listed} == {
        (rule, subject, "resolved", 2) for rule, subject in raised
    }
    with sqlite3.connect(ws / "mlflow.db") as db:
        steps = db.execute(
            "SELECT t.value, m.step FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
            "WHERE m.key = 'share_drifted' AND t.key = 'batch'"
        ).fetchall()
        # Each notebook run (prepare, train, and the monitoring runs) logged the machine's load.
        system = db.execute(
            "SELECT r.name, COUNT(DISTINCT m.key) FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
            "WHERE m.key IN ('system/cpu_utilization_percentage', 'system/system_memory_usage_megabytes', "
            "'system/disk_usage_megabytes') GROUP BY r.run_uuid"
        ).fetchall()
        # Lineage: which data each run read, by the hash DVC keeps it under.
        inputs = db.execute(
            "SELECT r.name, d.name, d.digest FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id "
            "JOIN runs r ON r.run_uuid = i.destination_id WHERE i.source_type = 'DATASET'"
        ).fetchall()
    assert sorted(set(steps)) == [("1", 1), ("2", 2)]
    batch_md5 = yaml.safe_load((ws / f"{BATCH_1}.dvc").read_text())["outs"][0]["md5"]
    processed = next(
        o["md5"]
        for o in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
        if o["path"] == "data/processed"
    )
    assert ("05_monitor", "batch-0001", batch_md5) in inputs
    assert {("02_train", "train", processed), ("02_train", "test", processed)} <= set(inputs)
    assert {name for name, keys in system if keys == 3} >= {"01_prepare", "02_train", "05_monitor"}
    assert (ws / "reports" / "monitoring" / "batch-0002" / "05_monitor.html").is_file()

    # The dashboard, rebuilt after each batch, opens from disk and draws its four panels.
    dashboard = ws / "reports" / "monitoring.html"
    with chromium(ws.parent / "browser") as browser:
        browser.open(dashboard.as_uri())
        drawn = browser.evaluate(
            "(() => { const svg = document.querySelector('#timeline svg');"
            " const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};"
            " return {width: box.width, height: box.height,"
            " axes: document.querySelectorAll('#timeline svg g[id^=axes_]').length,"
            " lines: document.querySelectorAll('#timeline svg g[id^=line2d_]').length,"
            " alerts: document.querySelectorAll('#alerts tr').length - 1,"
            " summary: document.getElementById('summary').innerText}; })()"
        )
        index = ws / "reports" / "index.html"
        browser.open(index.as_uri())
        link = browser.evaluate("document.getElementById('monitoring')?.getAttribute('href')")
    assert drawn["width"] > 500 and drawn["height"] > 500 and drawn["axes"] == 4
    assert drawn["lines"] > 9  # one PSI line per feature, and the rest
    assert drawn["alerts"] == len(raised)
    assert drawn["summary"].startswith("2 batch(es) monitored, 1 with labels; 0 alert(s) open")
    assert link == "monitoring.html"

    # A snapshot names the batches its model judged.
    assert mlvs(ws, "snapshot", "create", "after-monitoring").returncode == 0
    shown = json.loads(mlvs(ws, "snapshot", "show", "after-monitoring", "--json").stdout)
    assert shown["monitored_batches"] == [1, 2]


def _write(root: Path, name: str, text: str) -> str:
    (root / name).write_text(text)
    return name


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing column", "lacks column(s) contract"),
        ("wrong type", "column tenure_months has 1 value(s) that are not numbers"),
        ("empty", "has no rows"),
        ("unknown customers in labels", "customer(s) not in batch"),
        ("labels of a batch never monitored", "was never monitored"),
        ("no such file", "is not a file"),
    ],
)
def test_a_bad_batch_or_labels_file_is_one_line_and_changes_nothing(
    ws: Path, case: str, named: str
) -> None:
    batch = (ws / BATCH_2).read_text().splitlines()
    header = batch[0].split(",")
    args: list[str]
    if case == "missing column":
        at = header.index("contract")
        rows = [",".join(c for i, c in enumerate(line.split(",")) if i != at) for line in batch]
        args = [_write(ws, "bad.csv", "\n".join(rows) + "\n")]
    elif case == "wrong type":
        cells = batch[1].split(",")
        cells[header.index("tenure_months")] = "twelve"
        args = [_write(ws, "bad.csv", "\n".join([batch[0], ",".join(cells), *batch[2:]]) + "\n")]
    elif case == "empty":
        args = [_write(ws, "bad.csv", batch[0] + "\n")]
    elif case == "unknown customers in labels":
        labels = (ws / LABELS_2).read_text() + "Z9999-000001,1\n"
        args = [BATCH_2, "--labels", _write(ws, "bad-labels.csv", labels)]
    elif case == "labels of a batch never monitored":
        args = [BATCH_2, "--labels", LABELS_2]
    else:
        args = ["data/batches/batch-9999.csv"]
    before = tree_hashes(ws)
    result = mlvs(ws, "monitor", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert tree_hashes(ws) == before


def test_a_deploy_that_loses_to_the_version_it_replaced_is_rolled_back_by_itself(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ws / 'mlflow.db'}")
    monkeypatch.setenv("MLVS_ROOT", str(ws))
    assert register_inverted_version(ws) == "2"

    # The service follows the champion while clients keep asking, from before the bad deploy
    # until after the monitor rolled it back: none of their requests fails.
    service = start_service(ws)
    record = records_of(ws, 1)
    answers: list[tuple[int, str | None]] = []
    done = threading.Event()

    def client() -> None:
        connection = service.connection()
        for _ in range(REQUESTS_PER_CLIENT):
            if done.is_set():
                break
            try:
                connection.request(
                    "POST",
                    "/predict",
                    json.dumps({"records": record}),
                    {"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                body = json.loads(response.read())
                answers.append((response.status, body.get("model_version")))
            except (OSError, ValueError) as error:
                answers.append((0, f"{type(error).__name__}"))
                connection = service.connection()
            time.sleep(0.1)

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    try:
        for thread in clients:
            thread.start()
        forced = mlvs(ws, "deploy", "2", "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        snapshot = json.loads(forced.stdout)["snapshot"]
        assert champion(ws) == "2"
        code, scored, _ = monitor(ws, BATCH_2)
        assert scored["model_version"] == "2"
        code, labelled, _ = monitor(ws, BATCH_2, "--labels", LABELS_2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and service.call("GET", "/model")[1]["version"] != "1":
            time.sleep(0.1)
        served_after = service.call("GET", "/model")[1]["version"]
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=60)
        service.stop()
    failed = [a for a in answers if a[0] != 200]
    assert answers and failed == [], failed[:5]
    assert {version for _, version in answers} <= {"1", "2"} and served_after == "1"
    check = labelled["deploy_check"]
    assert (check["deployed"], check["previous"], check["snapshot"]) == ("2", "1", snapshot)
    assert check["worse"] and check["champion_value"] < check["previous_value"] - check["margin"]
    assert check["action"] == "rolled back" and check["rollback"]["findings"] == []
    assert code == 1
    (alert,) = [a for a in labelled["alerts"] if a["rule"] == "deploy_guard"]
    assert alert["severity"] == "critical" and snapshot in alert["subject"]
    assert champion(ws) == "1"
    assert mlvs(ws, "verify").returncode == 0
    moves = json.loads(mlvs(ws, "registry", "history", "--json").stdout)["moves"]
    assert (moves[-1]["command"], moves[-1]["from_version"], moves[-1]["to_version"]) == (
        "rollback",
        "2",
        "1",
    )


def champion(root: Path) -> str:
    with sqlite3.connect(root / "mlflow.db") as db:
        (version,) = db.execute(
            "SELECT version FROM registered_model_aliases WHERE alias = 'champion'"
        ).fetchone()
    return str(version)
