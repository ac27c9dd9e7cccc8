"""Where monitoring keeps its state, and reading it back (light: no pandas, no MLflow).

`reports/monitoring/state.json` holds the alert state and which batches were monitored,
with the model version that judged each; `alerts.json` every alert raised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_text
from mlvs.errors import IntegrityError
from mlvs.ml.monitor import AlertState
from mlvs.paths import ProjectPaths


def monitoring_dir(paths: ProjectPaths) -> Path:
    """Where monitoring keeps its records, alerts and dashboard inputs."""
    return paths.reports / "monitoring"


def batch_dir(paths: ProjectPaths, number: int) -> Path:
    """Where batch `number`'s record, predictions and executed notebook go."""
    return monitoring_dir(paths) / f"batch-{number:04d}"


def load_state(paths: ProjectPaths) -> tuple[AlertState, dict[str, Any]]:
    """The alert state and the record of monitored batches (empty before the first batch)."""
    path = monitoring_dir(paths) / "state.json"
    if not path.is_file():
        return AlertState(), {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        state = AlertState.from_dict(document["alerts"])
        monitored = dict(document["monitored"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(
            f"{path} is not a monitoring state ({type(exc).__name__}); restore it with "
            "`mlvs rollback` to a snapshot, or remove it to start monitoring afresh"
        ) from None
    return state, monitored


def save_state(paths: ProjectPaths, state: AlertState, monitored: dict[str, Any]) -> None:
    """Write the alert state, the monitored batches and the list of alerts."""
    folder = monitoring_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"alerts": state.to_dict(), "monitored": monitored}
    atomic_write_text(folder / "state.json", json.dumps(document, indent=2, sort_keys=True) + "\n")
    alerts = {"alerts": [a.to_dict() for a in state.alerts]}
    atomic_write_text(folder / "alerts.json", json.dumps(alerts, indent=2) + "\n")


def judged_batches(paths: ProjectPaths, model_version: str | None) -> list[int]:
    """The batches `model_version` was the champion for when they were monitored."""
    if not model_version:
        return []
    try:
        _, monitored = load_state(paths)
    except IntegrityError:
        return []
    return sorted(
        int(number)
        for number, seen in monitored.items()
        if number.isdigit()
        and isinstance(seen, dict)
        and str(seen.get("model_version")) == str(model_version)
    )
