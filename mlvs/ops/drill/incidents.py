"""The incident catalog (`params/incidents.yaml`) and how each scenario is injected.

Injection is deliberate damage done the way it happens in real life: a bad
upstream extract, a half-written file, a flipped bit on disk, a failing stage,
a broken store. Each injector returns what it did, for the postmortem.
"""

from __future__ import annotations

import difflib
import functools
import http.client
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlvs._io import atomic_write_bytes, atomic_write_text, sha256_file
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.mlflow.store import tracking_uri
from mlvs.backends.uris import safe_uri
from mlvs.boundary import relative_path, workspace_file
from mlvs.errors import BadInputError, ParamsError
from mlvs.ml.data import features_and_target, read_customers, write_csv
from mlvs.ml.decision import fixed_or_default_threshold
from mlvs.ml.features import build_model
from mlvs.ml.modeling import build_classifier
from mlvs.ml.modelio import model_bytes
from mlvs.ml.params import load_stage, read_yaml
from mlvs.ops.deploy import deploy
from mlvs.ops.pipeline import run_stage
from mlvs.ops.recorded import recorded_files
from mlvs.ops.serve.status import ServiceStatus, process_alive
from mlvs.ops.serve.supervise import LOOPBACK, launch, wait_for_status
from mlvs.paths import ProjectPaths
from mlvs.stages.versions import register_fitted_model

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Family = Literal["data", "model", "pipeline", "store", "serving"]


class Scenario(BaseModel):
    """One entry of the catalog."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    name: str = ""
    family: Family
    description: str
    target: str | None = None
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    scale: float | None = Field(default=None, gt=0.0, le=100.0)
    keep_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    flips: int | None = Field(default=None, ge=1, le=1_000_000)
    stage: Literal["prepare", "train"] | None = None
    fault: Literal["preprocess", "partial", "train", "evaluate"] | None = None
    alias: str | None = None
    records: int | None = Field(default=None, ge=1, le=10_000)


def load_catalog(root: Path) -> dict[str, Scenario]:
    """Every scenario of `params/incidents.yaml`, validated, in catalog order."""
    path = root / "params" / "incidents.yaml"
    document = read_yaml(path)
    entries = document.get("scenarios")
    if not isinstance(entries, dict) or not entries:
        raise ParamsError(
            f"{path.relative_to(root)}: needs a non-empty 'scenarios' mapping of name to scenario"
        )
    catalog = {}
    for name, spec in entries.items():
        if name not in INJECTORS:
            raise ParamsError(
                f"{path.relative_to(root)}: scenario '{name}' has no injector; known: {', '.join(INJECTORS)}"
            )
        try:
            catalog[name] = Scenario.model_validate({**(spec or {}), "name": name})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ParamsError(
                f"{path.relative_to(root)}: scenarios.{name}.{key} = {err.get('input')!r} is not allowed: {err['msg']}"
            ) from None
        target = catalog[name].target
        if target is not None:
            # A drill damages its target: only a project file, never one outside it or the tools' state.
            where = f"{path.relative_to(root).as_posix()}: scenarios.{name}.target"
            workspace_file(root, target, where)
            catalog[name] = catalog[name].model_copy(
                update={"target": relative_path(target, where)}
            )
    return catalog


# Scenarios that break the embedded SQLite store on purpose: with a tracking server there is none here.
EMBEDDED_STORE_ONLY = (
    "store_alias_dangling",
    "store_mlflow_db_deleted",
    "store_mlflow_db_corrupted",
)


def not_applicable(paths: ProjectPaths, s: Scenario) -> str | None:
    """Why scenario `s` cannot be drilled against this project's stores; None when it can."""
    uri = tracking_uri(paths)
    if s.name in EMBEDDED_STORE_ONLY and not uri.startswith("sqlite:///"):
        return (
            f"scenario {s.name} breaks the embedded SQLite store, and this project's MLflow store is "
            f"{safe_uri(uri)}; drill it in a project without MLFLOW_TRACKING_URI"
        )
    return None


def scenario(root: Path, name: str) -> Scenario:
    """The scenario called `name`, or a clear error listing the catalog."""
    catalog = load_catalog(root)
    if name not in catalog:
        close = difflib.get_close_matches(name, list(catalog), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BadInputError(
            f"unknown scenario '{name}'{hint}; `mlvs incidents` lists the {len(catalog)} scenarios"
        )
    return catalog[name]


def _target(s: Scenario) -> str:
    """The project file scenario `s` damages, as the catalog names it."""
    if s.target is None:
        raise ParamsError(
            f"params/incidents.yaml: scenario '{s.name}' needs a 'target', the file it damages"
        )
    return s.target


def _rows(frame: pd.DataFrame, fraction: float, rng: np.random.Generator) -> np.ndarray:
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    count = max(1, round(len(frame) * fraction))
    return np.sort(rng.choice(len(frame), size=min(count, len(frame)), replace=False))


def _rewrite_csv(path: Path, frame: pd.DataFrame) -> None:
    write_csv(frame, path)


def _flip_bytes(path: Path, flips: int, rng: np.random.Generator) -> list[int]:
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    size = path.stat().st_size
    # Skip the first bytes: a damaged header is too easy to notice; real bit rot is anywhere.
    offsets = sorted(
        int(o)
        for o in rng.choice(
            np.arange(min(64, size // 2), size), size=min(flips, size), replace=False
        )
    )
    with open(path, "r+b") as handle:
        for offset in offsets:
            handle.seek(offset)
            byte = handle.read(1)
            handle.seek(offset)
            handle.write(bytes([byte[0] ^ 0xFF]))
    return offsets


if TYPE_CHECKING:
    Injector = Callable[[ProjectPaths, Scenario, np.random.Generator], dict[str, Any]]
    RowsDamage = Callable[
        [pd.DataFrame, np.ndarray, Scenario, np.random.Generator],
        tuple[pd.DataFrame, dict[str, Any]],
    ]


def _damages_rows(fraction: float = 0.1) -> Callable[[RowsDamage], Injector]:
    """An injector made of a change to a seeded sample of rows of the scenario's CSV file.

    The sample is `s.fraction` of the rows (else `fraction`); the change returns the
    damaged frame and what it did, and the file is rewritten with the damaged frame.
    """

    def injector(damage: RowsDamage) -> Injector:
        @functools.wraps(damage)
        def inject(paths: ProjectPaths, s: Scenario, rng: np.random.Generator) -> dict[str, Any]:
            # deferred: pandas (~0.4 s) is imported only when a data injector runs
            import pandas as pd

            path = paths.root / _target(s)
            frame = pd.read_csv(path, dtype={"customer_id": str})
            frame, done = damage(frame, _rows(frame, s.fraction or fraction, rng), s, rng)
            _rewrite_csv(path, frame)
            return done

        return inject

    return injector


@_damages_rows()
def inject_data_noise(
    frame: pd.DataFrame, rows: np.ndarray, s: Scenario, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any]]:
    for column in ("monthly_charges", "total_charges"):
        spread = float(frame[column].std())
        frame.loc[rows, column] = (
            (frame.loc[rows, column] + rng.normal(0, (s.scale or 1) * spread, len(rows)))
            .abs()
            .round(2)
        )
    return frame, {"rows_changed": len(rows), "columns": ["monthly_charges", "total_charges"]}


@_damages_rows()
def inject_data_missing_values(
    frame: pd.DataFrame, rows: np.ndarray, s: Scenario, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any]]:
    # deferred: numpy is imported only when this injector runs
    import numpy as np

    frame["tenure_months"] = frame["tenure_months"].astype("float64")
    frame.loc[rows, ["tenure_months", "contract"]] = np.nan
    return frame, {"rows_changed": len(rows), "columns": ["tenure_months", "contract"]}


@_damages_rows()
def inject_data_duplicated_rows(
    frame: pd.DataFrame, rows: np.ndarray, s: Scenario, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any]]:
    # deferred: pandas is imported only when this injector runs
    import pandas as pd

    return pd.concat([frame, frame.iloc[rows]], ignore_index=True), {"rows_added": len(rows)}


@_damages_rows()
def inject_data_label_flips(
    frame: pd.DataFrame, rows: np.ndarray, s: Scenario, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any]]:
    frame.loc[rows, "churn"] = 1 - frame.loc[rows, "churn"]
    return frame, {"labels_flipped": len(rows)}


@_damages_rows(fraction=0.05)
def inject_data_schema_drift(
    frame: pd.DataFrame, rows: np.ndarray, s: Scenario, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any]]:
    frame.loc[rows, "payment_method"] = "Crypto wallet"
    frame = frame.rename(columns={"support_calls": "support_tickets"})
    return frame, {
        "renamed": {"support_calls": "support_tickets"},
        "unknown_category_rows": len(rows),
    }


def _truncate(path: Path, keep_fraction: float) -> dict[str, Any]:
    size = path.stat().st_size
    keep = int(size * keep_fraction)
    with open(path, "r+b") as handle:
        handle.truncate(keep)
    return {"bytes_before": size, "bytes_after": keep}


def inject_data_truncated_file(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    return _truncate(
        paths.root / _target(s), s.keep_fraction if s.keep_fraction is not None else 0.5
    )


def inject_deleted_file(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    path = paths.root / _target(s)
    size = path.stat().st_size
    path.unlink()
    return {"deleted": s.target, "bytes": size}


def inject_model_truncated(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    return _truncate(
        paths.root / _target(s), s.keep_fraction if s.keep_fraction is not None else 0.3
    )


def inject_bit_flips(paths: ProjectPaths, s: Scenario, rng: np.random.Generator) -> dict[str, Any]:
    return {"offsets": _flip_bytes(paths.root / _target(s), s.flips or 8, rng)}


def inject_model_replaced_by_worse(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    """A valid model trained on shuffled labels, with its card's hash patched: only behaviour gives it away."""
    params = load_stage("train", paths.root)
    X, y = features_and_target(read_customers(paths.train_data))
    worse = build_model(
        build_classifier(params.model_type, params.model_hyperparameters(), params.seed)
    )
    worse.fit(X, rng.permutation(y.to_numpy()))
    atomic_write_bytes(paths.model_file, model_bytes(worse))
    card = json.loads(paths.model_card.read_text(encoding="utf-8"))
    card["model_sha256"] = sha256_file(paths.model_file)
    atomic_write_text(paths.model_card, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return {"replaced": s.target, "trained_on": "shuffled labels", "card_patched": True}


def inject_deploy_forced_worse(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    """A worse model (shuffled labels) registered, then deployed with --force past the gate's refusal.

    No file of the project changes: only the registry (and its alias history) gives it away.
    """
    params = load_stage("train", paths.root)
    X, y = features_and_target(read_customers(paths.train_data))
    worse = build_model(
        build_classifier(params.model_type, params.model_hyperparameters(), params.seed)
    )
    worse.fit(X, rng.permutation(y.to_numpy()))
    version = register_fitted_model(
        paths,
        worse,
        "deploy_forced_worse",
        {
            "decision_threshold": str(fixed_or_default_threshold(params.decision_threshold)),
            "trained_on": "shuffled labels",
        },
    )
    result = deploy(paths, version, force=True)
    return {
        "version": version,
        "gate": "passed" if result.passed else "refused",
        "forced": result.forced,
        "snapshot": result.snapshot,
        "reason": result.decision.reason,
    }


def _golden_records(paths: ProjectPaths, count: int) -> list[dict[str, Any]]:
    """`count` customer records in the request's form: the golden sample's rows, repeated."""
    rows = json.loads(paths.golden.read_text(encoding="utf-8"))["rows"]
    return [rows[i % len(rows)] for i in range(count)]


def _ask(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """One request to the service on loopback: (status, decoded JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _served(status: ServiceStatus) -> dict[str, Any]:
    return {
        "service_pid": status.pid,
        "port": status.port,
        "served_version": status.serving.version if status.serving else None,
        "served_sha256": status.serving.model_sha256 if status.serving else None,
    }


def inject_service_killed_mid_request(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    """`mlvs serve` started, a request of 10,000 records half sent, and the service killed with SIGKILL.

    Nothing of the project changes: the dead process's status file, still open, gives it away.
    """
    alias = s.alias or "champion"
    started = launch(paths, alias, LOOPBACK, 0)
    port = started.port or 0  # launch waits until the status file names it
    body = json.dumps({"records": _golden_records(paths, s.records or 10_000)}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.2)  # the service is reading the body: mid-request
        os.kill(started.pid, signal.SIGKILL)
        try:
            answer = client.recv(64)
        except OSError:
            answer = b""
    deadline = time.monotonic() + 10
    while process_alive(started.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {
        **_served(started),
        "signal": "SIGKILL",
        "request_bytes_sent": len(body) // 2,
        "request_bytes": len(body),
        "answered": bool(answer),
    }


def inject_service_model_corrupted(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    """Bits of the champion's model file flipped while `mlvs serve` serves it from memory.

    The service must refuse the changed bytes (never load them) and go on answering with
    the verified model it holds; what it answered meanwhile is kept for the postmortem.
    """
    alias = s.alias or "champion"
    started = launch(paths, alias, LOOPBACK, 0)
    port = started.port or 0  # launch waits until the status file names it
    offsets = _flip_bytes(paths.root / _target(s), s.flips or 8, rng)
    refused = wait_for_status(
        paths, alias, lambda st: st.refused is not None and st.refused.kind == "file", 10.0
    )
    golden = json.loads(paths.golden.read_text(encoding="utf-8"))
    status, answer = _ask(
        port, "POST", "/predict", json.dumps({"records": golden["rows"]}).encode()
    )
    probabilities = [p["churn_probability"] for p in answer.get("predictions", [])]
    return {
        **_served(started),
        "offsets": offsets,
        "refused": refused.refused.reason if refused and refused.refused else None,
        "answered_status": status,
        "answered_by_version": answer.get("model_version"),
        "answers_are_golden": probabilities == [float(p) for p in golden["churn_probability"]],
    }


def inject_pipeline_fault(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    """Re-run one stage with a fault armed at the named point; the stage must fail."""
    outcome = run_stage(paths, s.stage or "train", fault=s.fault, restore_on_failure=False)
    return {
        "stage": s.stage,
        "fault": s.fault,
        "stage_failed": not outcome.ok,
        "failed_report": outcome.report,
    }


def inject_cache_corrupted(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    store = ObjectStore(paths)
    md5 = recorded_files(paths, store)[0][_target(s)]
    return {"object": md5, "offsets": _flip_bytes(store.cache_path(md5), s.flips or 16, rng)}


def inject_cache_missing(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    store = ObjectStore(paths)
    removed = []
    for rel, md5 in recorded_files(paths, store)[0].items():
        if rel.startswith("data/") and store.cache_path(md5).is_file():
            store.cache_path(md5).unlink()
            removed.append(rel)
    return {"objects_removed": removed}


def inject_alias_dangling(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    name = load_stage("train", paths.root).registry.model_name
    database = Path(tracking_uri(paths).removeprefix("sqlite:///"))
    with sqlite3.connect(database) as db:
        before = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (name, s.alias),
        ).fetchone()
        missing = (
            db.execute(
                "SELECT max(version) FROM model_versions WHERE name = ?", (name,)
            ).fetchone()[0]
            or 0
        ) + 100
        db.execute(
            "UPDATE registered_model_aliases SET version = ? WHERE name = ? AND alias = ?",
            (missing, name, s.alias),
        )
    return {"alias": s.alias, "was_version": before[0] if before else None, "now_version": missing}


def inject_mlflow_db_deleted(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    size = paths.mlflow_db.stat().st_size
    paths.mlflow_db.unlink()
    return {"deleted": "mlflow.db", "bytes": size}


def inject_mlflow_db_corrupted(
    paths: ProjectPaths, s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    path = paths.mlflow_db
    size = path.stat().st_size
    # Overwrite whole pages past the header, as a failing disk would.
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(rng.bytes(min(s.flips or 4096, size - 100)))
    return {"bytes_overwritten": min(s.flips or 4096, size - 100), "of": size}


INJECTORS: dict[str, Injector] = {
    "data_noise": inject_data_noise,
    "data_missing_values": inject_data_missing_values,
    "data_duplicated_rows": inject_data_duplicated_rows,
    "data_label_flips": inject_data_label_flips,
    "data_schema_drift": inject_data_schema_drift,
    "data_truncated_file": inject_data_truncated_file,
    "data_deleted_file": inject_deleted_file,
    "model_deleted": inject_deleted_file,
    "model_truncated": inject_model_truncated,
    "model_bit_flips": inject_bit_flips,
    "model_replaced_by_worse": inject_model_replaced_by_worse,
    "deploy_forced_worse": inject_deploy_forced_worse,
    "serving_killed_mid_request": inject_service_killed_mid_request,
    "serving_model_file_corrupted": inject_service_model_corrupted,
    "pipeline_preprocessing_failure": inject_pipeline_fault,
    "pipeline_training_failure": inject_pipeline_fault,
    "pipeline_evaluation_failure": inject_pipeline_fault,
    "pipeline_partial_outputs": inject_pipeline_fault,
    "store_cache_corrupted": inject_cache_corrupted,
    "store_cache_missing": inject_cache_missing,
    "store_alias_dangling": inject_alias_dangling,
    "store_mlflow_db_deleted": inject_mlflow_db_deleted,
    "store_mlflow_db_corrupted": inject_mlflow_db_corrupted,
}


def inject(paths: ProjectPaths, s: Scenario, seed: int = 0) -> dict[str, Any]:
    """Break the system as scenario `s` says; return what was done."""
    # deferred: numpy (~0.2 s) is imported only when this runs
    import numpy as np

    return INJECTORS[s.name](paths, s, np.random.default_rng(seed))
