"""Every scenario of the catalog is drilled: detected, recovered, byte-identical, no run lost.

The scenarios are read from params/incidents.yaml at collection time, so a
scenario added to the catalog is drilled here without anyone writing a test.
The test takes mlvs's word for none of it: it reads for itself that each
injection changed what the scenario names (a file's bytes or rows, a cache
object, an alias, the MLflow database, a failed stage's run), and afterwards
compares the tracked files, the DVC cache objects, the registry's aliases and
versions and every MLflow run and metric (its own SQL) with the state before.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, mlvs, tree_hashes

CATALOG = yaml.safe_load((REPO / "params" / "incidents.yaml").read_text())["scenarios"]
# What a drill may change besides the tracked state: locks, logs, its own record, MLflow's store.
RUNTIME = (
    ".git/",
    ".mlvs/",
    ".dvc/tmp/",
    ".dvc/cache/",
    "reports/",
    "mlartifacts/",
    "mlruns/",
    "mlflow.db",
)


def tracked_state(root: Path) -> dict[str, str]:
    return {k: v for k, v in tree_hashes(root).items() if not k.startswith(RUNTIME)}


def mlflow_run_ids(root: Path) -> set[str]:
    with sqlite3.connect(root / "mlflow.db") as db:
        return {row[0] for row in db.execute("SELECT run_uuid FROM runs")}


def test_catalog_covers_every_family_with_at_least_16_scenarios() -> None:
    families = {spec["family"] for spec in CATALOG.values()}
    assert len(CATALOG) >= 16
    assert families == {"data", "model", "pipeline", "store", "serving"}


def running(pid: int, settle: float = 0.0) -> bool:
    """Whether process `pid` runs (a killed child not yet reaped is a zombie: not running).

    A process killed with SIGKILL still shows as running while the kernel frees its memory
    (its command line is already empty); `settle` seconds give that teardown time to end.
    """
    deadline = time.monotonic() + settle
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(pid)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def service_status(root: Path, alias: str = "champion") -> dict[str, Any]:
    return json.loads((root / ".mlvs" / "serve" / f"{alias}.json").read_text())


def ask(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def drill_env(trained_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLVS_ROOT", str(trained_workspace))
    from mlvs.backends.mlflow.backups import backup_mlflow_db
    from mlvs.paths import ProjectPaths

    backup_mlflow_db(ProjectPaths(trained_workspace))
    yield trained_workspace
    # A serving drill that failed half-way may leave its service running: never past the test.
    for status_path in (trained_workspace / ".mlvs" / "serve").glob("*.json"):
        pid = json.loads(status_path.read_text())["pid"]
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def cache_objects(root: Path) -> dict[str, str]:
    """Every object in the DVC cache (relative path -> SHA-256), read here."""
    return tree_hashes(root / ".dvc" / "cache", skip=("runs/", "tmp/"))


def registry_rows(root: Path) -> dict[str, Any]:
    """The registry's aliases and versions, and every run with its status and metrics: our own SQL."""
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        return {
            "aliases": sorted(
                db.execute("SELECT name, alias, version FROM registered_model_aliases")
            ),
            "versions": sorted(
                db.execute("SELECT name, version, run_id, status FROM model_versions")
            ),
            "runs": sorted(db.execute("SELECT run_uuid, status, lifecycle_stage FROM runs")),
            "metrics": sorted(db.execute("SELECT run_uuid, key, value, step FROM metrics")),
        }


def csv_rows(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def assert_injection_changed_what_it_names(
    root: Path,
    spec: dict[str, Any],
    files: dict[str, str],
    objects: dict[str, str],
    registry: dict[str, Any],
    rows: dict[str, list[str]],
) -> None:
    """Read, independently of mlvs, the bytes, rows, object, alias or database the scenario names."""
    family, target = spec["family"], spec.get("target")
    if family == "serving":
        status = service_status(root, spec["alias"])
        if target is None:  # killed: the process is gone and its status file was never closed
            assert not running(status["pid"], settle=10) and status["stopped_at"] is None, status
        else:  # the file changed under the running service, which refuses it and serves on
            assert tree_hashes(root).get(target) != files[target], f"{target} is unchanged"
            code, health = ask(status["port"], "GET", "/health")
            assert health["status"] == "degraded" and health["refused"]["kind"] == "file", health
            golden = json.loads((root / "models" / "golden_predictions.json").read_text())
            code, body = ask(status["port"], "POST", "/predict", {"records": golden["rows"]})
            assert (code, body["model_version"]) == (200, health["model_version"])
            probabilities = [p["churn_probability"] for p in body["predictions"]]
            assert probabilities == [float(p) for p in golden["churn_probability"]]
    elif family == "model" and target is None:  # a forced deploy: only the registry gives it away
        assert registry_rows(root)["aliases"] != registry["aliases"], "no alias moved"
    elif family in ("data", "model"):
        now = tree_hashes(root).get(target)
        assert now != files[target], f"{target} is unchanged"
        if family == "data" and now is not None and "fraction" in spec:
            changed = set(csv_rows(root / target)) ^ set(rows[target])
            assert changed or len(csv_rows(root / target)) != len(rows[target]), target
    elif family == "pipeline":
        failed = [r for r in registry_rows(root)["runs"] if r not in registry["runs"]]
        assert any(status == "FAILED" for _, status, _ in failed), failed
    elif target == "mlflow.db":
        database = root / "mlflow.db"
        if database.exists():
            assert tree_hashes(root)["mlflow.db"] != files["mlflow.db"]
        with contextlib.suppress(sqlite3.DatabaseError):
            assert registry_rows(root) != registry  # unreadable, or read as something else
    elif "alias" in spec:
        after = registry_rows(root)
        versions = {(name, str(version)) for name, version, _, _ in after["versions"]}
        (dangling,) = [a for a in after["aliases"] if a[1] == spec["alias"]]
        assert (dangling[0], str(dangling[2])) not in versions, dangling
    else:  # a cache object corrupted or removed
        now = cache_objects(root)
        assert {k: v for k, v in objects.items() if now.get(k) != v}, "no cache object changed"
        for relative, digest in now.items():
            if relative.startswith("files/md5/") and not relative.endswith(".dir"):
                name = relative.removeprefix("files/md5/").replace("/", "")
                path = root / ".dvc" / "cache" / relative
                if digest != objects.get(relative):
                    assert hashlib.md5(path.read_bytes()).hexdigest() != name, relative


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CATALOG))
def test_scenario_is_detected_recovered_and_byte_identical(drill_env: Path, name: str) -> None:
    from mlvs.ops.drill.drill import Drill
    from mlvs.paths import ProjectPaths

    root, spec = drill_env, CATALOG[name]
    drill = Drill.start(ProjectPaths(root), name, seed=1)
    drill.steady_state()
    before = tracked_state(root)
    files, objects, registry = tree_hashes(root), cache_objects(root), registry_rows(root)
    rows = {t: csv_rows(root / t) for t in [spec.get("target")] if t and t.endswith(".csv")}

    drill.inject()
    assert_injection_changed_what_it_names(root, spec, files, objects, registry, rows)
    drill.detect()
    drill.recover()
    if spec["family"] == "serving":
        # Read here, before the drill stops it: a service runs again, on the version and bytes it served.
        status = service_status(root, spec["alias"])
        assert running(status["pid"]), status
        # killed: another process serves now; a corrupted file: the same one served on
        assert (status["pid"] == drill.injected["service_pid"]) == (spec.get("target") is not None)
        (champion,) = [str(v) for _, alias, v in registry["aliases"] if alias == spec["alias"]]
        card = json.loads((root / "models" / "model_card.json").read_text())
        code, model = ask(status["port"], "GET", "/model")
        assert (code, model["version"], model["model_sha256"]) == (
            200,
            champion,
            card["model_sha256"],
        )
        assert ask(status["port"], "GET", "/health")[1]["status"] == "ok"
    record = drill.write_record(drill.verify_again())
    if spec["family"] == "serving":  # the drill stops what it started, cleanly
        status = service_status(root, spec["alias"])
        assert not running(status["pid"]) and status["stopped_at"] is not None, status
    assert record.detected, record
    assert record.rung is not None
    assert record.recovered, record

    # The state afterwards, read here: files, cache objects, registry and runs as they were.
    assert tracked_state(root) == before
    after_objects = cache_objects(root)
    assert {k: after_objects.get(k) for k in objects} == objects
    after = registry_rows(root)
    assert after["aliases"] == registry["aliases"]
    if spec["family"] == "model" and spec.get("target") is None:
        # the forced deploy's version stays registered (nothing is deleted); it is no longer champion
        extra = [v for v in after["versions"] if v not in registry["versions"]]
        assert set(registry["versions"]) <= set(after["versions"]) and len(extra) == 1, extra
    else:
        assert after["versions"] == registry["versions"]
    assert set(registry["runs"]) <= set(after["runs"])  # a stage that failed adds its FAILED run
    assert set(registry["metrics"]) <= set(after["metrics"])
    assert (root / "reports" / "incidents" / name / "record.json").is_file()


@pytest.mark.slow
def test_drilling_the_same_scenario_twice_works(drill_env: Path) -> None:
    from mlvs.ops.drill.drill import run_drill
    from mlvs.paths import ProjectPaths

    before = tracked_state(drill_env)
    first = run_drill(ProjectPaths(drill_env), "model_bit_flips", seed=1)
    second = run_drill(ProjectPaths(drill_env), "model_bit_flips", seed=2)
    assert first.recovered and second.recovered
    assert tracked_state(drill_env) == before
    evidence = list((drill_env / "reports/incidents/model_bit_flips/evidence").iterdir())
    assert len(evidence) == 2  # the first drill's evidence is kept


@pytest.mark.slow
def test_a_deep_check_runs_again_exactly_when_the_bytes_it_read_changed(drill_env: Path) -> None:
    from mlvs.ops.verify import verify
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(drill_env)
    assert verify(paths).healthy
    again = verify(paths)
    assert again.healthy
    vouched = {
        "model:models/model.skops",
        "metrics:reports/metrics.json",
        "schema:data/processed/train.csv",
    }
    assert vouched <= set(again.reused)
    assert verify(paths, reuse_passed=False).reused == []

    train = drill_env / "data" / "processed" / "train.csv"
    header, rest = train.read_text().split("\n", 1)
    train.write_text(header.replace(",", ";", 1) + "\n" + rest)  # two columns run together
    changed = verify(paths)
    assert any(
        f.check == "schema" and f.artifact == "data/processed/train.csv" for f in changed.findings
    )
    assert "schema:data/processed/train.csv" not in changed.reused
    assert "model:models/model.skops" in changed.reused  # the model's bytes did not change


DEEP_CHECKS = {
    "model:models/model.skops",
    "metrics:reports/metrics.json",
    "schema:data/raw/customer_data.csv",
    "schema:data/processed/train.csv",
    "schema:data/processed/test.csv",
}


@pytest.mark.slow
def test_a_deep_check_runs_again_when_one_byte_of_its_code_changed(
    drill_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlvs.ml import modelio
    from mlvs.ops import verify as verifying
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(drill_env)
    assert verifying.verify(paths).healthy
    assert set(verifying.verify(paths).reused) == DEEP_CHECKS

    read = verifying._module_source

    def one_byte_changed(module: object) -> bytes:
        source = read(module)  # type: ignore[arg-type]
        return source[:-1] + bytes([source[-1] ^ 1]) if module is modelio else source

    monkeypatch.setattr(verifying, "_module_source", one_byte_changed)
    changed = verifying.verify(paths)
    assert changed.healthy and changed.reused == []  # every deep check ran again on the new code
    assert set(verifying.verify(paths).reused) == DEEP_CHECKS  # and its passes are remembered


@pytest.mark.slow
def test_every_mlvs_module_a_deep_check_runs_is_in_the_deep_check_fingerprint(
    drill_env: Path,
) -> None:
    import inspect
    import sys
    from types import FrameType

    import mlvs
    from mlvs.ops import verify as verifying
    from mlvs.paths import ProjectPaths

    package = Path(mlvs.__file__).resolve().parent
    ran: set[Path] = set()

    def record(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            ran.add(Path(frame.f_code.co_filename))

    paths = ProjectPaths(drill_env)
    sys.setprofile(record)
    try:
        findings = verifying.check_schema(paths)
        model_findings, model = verifying.check_model(paths)
        findings += model_findings + verifying.check_metrics(paths, model)
    finally:
        sys.setprofile(None)
    assert findings == [] and model is not None
    ran_in_mlvs = {p.resolve() for p in ran if p.resolve().is_relative_to(package)}
    covered = {Path(inspect.getsourcefile(m)).resolve() for m in verifying.DEEP_CHECK_CODE}
    assert {"data.py", "features.py", "modelio.py", "verify.py"} <= {p.name for p in ran_in_mlvs}
    assert ran_in_mlvs - covered == set()


@pytest.mark.slow
def test_recover_on_a_healthy_system_changes_nothing(drill_env: Path) -> None:
    from mlvs.ops.recover import recover
    from mlvs.paths import ProjectPaths

    before = tree_hashes(drill_env, skip=(".git/", ".mlvs/", ".dvc/tmp/"))
    outcome = recover(ProjectPaths(drill_env))
    assert outcome.healthy and outcome.repairs == []
    assert tree_hashes(drill_env, skip=(".git/", ".mlvs/", ".dvc/tmp/")) == before


@pytest.mark.slow
def test_drill_command_keeps_a_postmortem_and_an_index(trained_workspace: Path) -> None:
    result = mlvs(trained_workspace, "drill", "data_label_flips", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert [d["scenario"] for d in document["drills"]] == ["data_label_flips"]
    folder = trained_workspace / "reports/incidents/data_label_flips"
    for name in ("03_incident.ipynb", "03_incident.html", "record.json"):
        assert (folder / name).is_file(), name
    index = (trained_workspace / "reports/index.html").read_text()
    assert "incidents/data_label_flips/03_incident.html" in index
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{trained_workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlvs")
    runs = client.search_runs([experiment.experiment_id], "tags.incident = 'data_label_flips'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "postmortem")}
    assert artifacts == {"postmortem/record.json"}


def test_a_drill_on_a_sick_system_is_refused_with_the_reason_and_leaves_no_run_or_report(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    train = root / "data/processed/train.csv"
    train.write_bytes(train.read_bytes().replace(b",", b";", 1))  # damaged, as by a crash
    runs_before = mlflow_run_ids(root)

    result = mlvs(root, "drill", "data_noise")

    assert result.returncode == 1, result.stderr[-2000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("data_noise"))
    assert "NOT RECOVERED" in line and "not healthy before the drill" in line
    assert "data/processed/train.csv" in line and "mlvs recover" in line
    assert "Traceback" not in result.stderr
    assert not (root / "reports/incidents/data_noise").exists()
    assert mlflow_run_ids(root) == runs_before


def test_unknown_scenario_is_refused(trained_workspace: Path) -> None:
    before = tree_hashes(trained_workspace)
    result = mlvs(trained_workspace, "drill", "data_nosie")
    assert result.returncode == 2
    assert "data_noise" in result.stderr  # the close match is suggested
    assert tree_hashes(trained_workspace) == before


def test_drill_without_a_scenario_never_prompts_in_ci(trained_workspace: Path) -> None:
    result = subprocess.run(
        [str(Path(__import__("sys").executable).parent / "mlvs"), "drill"],
        cwd=trained_workspace,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "give a scenario" in result.stderr
