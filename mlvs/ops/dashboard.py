"""`reports/monitoring.html`: every monitored batch on one time axis, rebuilt after each batch.

One page that opens from disk (its figures are inline SVG, nothing is fetched): drift
per feature (PSI), the share of drifted features and the predicted churn rate, and, for
batches whose labels arrived, realised ROC-AUC and net value per customer beside the test
set's. Alerts raised are marked at their batch; alias moves (deploys, rollbacks, promotions)
at the batch after which they happened, from the alias history.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_text
from mlvs.logs import get_logger
from mlvs.ops.history import alias_history
from mlvs.ops.monitor_state import batch_dir, load_state, monitoring_dir
from mlvs.paths import ProjectPaths

log = get_logger("dashboard")

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f4f4f4}.open{color:#b00}.muted{color:#888}figure{margin:1em 0}"""


def dashboard_file(paths: ProjectPaths) -> Path:
    """Where the dashboard is written."""
    return paths.reports / "monitoring.html"


def _records(paths: ProjectPaths, numbers: list[int]) -> list[dict[str, Any]]:
    """Each batch's record, its labelled record's performance merged in when there is one."""
    rows = []
    for number in sorted(numbers):
        folder = batch_dir(paths, number)
        try:
            record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        labelled = folder / "record-labelled.json"
        if labelled.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError):
                record["performance"] = json.loads(labelled.read_text(encoding="utf-8"))[
                    "performance"
                ]
        if isinstance(record, dict) and record.get("batch") == number:
            rows.append(record)
    return rows


def _moves(paths: ProjectPaths, monitored: dict[str, Any]) -> list[tuple[float, str]]:
    """Alias moves as (position on the batch axis, label): after the last batch monitored before."""
    times = sorted(
        (datetime.fromisoformat(v["monitored_at"]), int(k))
        for k, v in monitored.items()
        if isinstance(v, dict) and "monitored_at" in v
    )
    if not times:
        return []
    try:
        history = alias_history(paths)
    except Exception:  # no registry yet: the page still renders without its moves
        return []
    marks = []
    for move in history.moves:
        if move.alias != "champion":
            continue
        when = move.when()
        before = [number for t, number in times if t <= when]
        if not before:
            continue
        marks.append(
            (
                max(before) + 0.5,
                f"{move.command}: v{move.from_version or '-'}→v{move.to_version or '-'}",
            )
        )
    return marks


def _figure(
    records: list[dict[str, Any]], alerts: list[dict[str, Any]], moves: list[tuple[float, str]]
) -> str:
    """The four panels as inline SVG text."""
    # deferred: matplotlib (~0.5 s) only when a dashboard is drawn
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    matplotlib.use("Agg")  # no display: the figure only becomes SVG text

    batches = [r["batch"] for r in records]
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    psi_ax, share_ax, auc_ax, value_ax = axes
    features = sorted({f for r in records for f in r["drift"]["features"]})
    for feature in features:
        values = [
            min(r["drift"]["features"].get(feature, {}).get("psi", float("nan")), 2.0)
            for r in records
        ]
        psi_ax.plot(batches, values, marker="o", label=feature)
    psi_ax.axhline(0.1, color="#555", linestyle=":", linewidth=1)
    psi_ax.axhline(0.25, color="#555", linestyle="--", linewidth=1)
    psi_ax.set_ylabel("PSI per feature")
    psi_ax.legend(fontsize=7, ncol=3)
    share_ax.plot(
        batches,
        [r["drift"]["share_drifted"] for r in records],
        marker="o",
        label="share of features drifted",
    )
    share_ax.plot(
        batches,
        [r["predicted_churn_rate"] for r in records],
        marker="s",
        label="predicted churn rate",
    )
    share_ax.set_ylabel("share")
    share_ax.legend(fontsize=8)
    labelled = [r for r in records if r.get("performance")]
    if labelled:
        xs = [r["batch"] for r in labelled]
        for ax, key, label in (
            (auc_ax, "roc_auc", "realised ROC-AUC"),
            (value_ax, "net_value_per_customer", "net value per customer"),
        ):
            ax.plot(xs, [r["performance"][key] for r in labelled], marker="o", label=label)
            reference = labelled[-1]["performance"][f"reference_{key}"]
            ax.axhline(reference, color="#8C8C8C", linestyle="--", label="test set")
            ax.legend(fontsize=8)
    else:
        for ax in (auc_ax, value_ax):
            ax.text(
                0.5,
                0.5,
                "no labels yet",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="#888",
            )
    auc_ax.set_ylabel("ROC-AUC")
    value_ax.set_ylabel("net value / customer")
    value_ax.set_xlabel("batch")
    value_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        for alert in alerts:
            ax.axvline(alert["raised_batch"], color="#C44E52", alpha=0.25, linewidth=6)
        for position, _ in moves:
            ax.axvline(position, color="#2CA02C", linestyle="--", linewidth=1.5)
    for position, label in moves:
        psi_ax.annotate(
            label,
            (position, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            color="#2CA02C",
        )
    psi_ax.set_title(
        "red bands: alerts raised; green dashes: champion moves (deploy, rollback, promotion)",
        fontsize=9,
    )
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _alert_row(alert: dict[str, Any]) -> str:
    status = alert["status"]
    if alert["resolved_batch"] is not None:
        status += f" at batch {alert['resolved_batch']}"
    cells = (
        alert["raised_batch"],
        alert["severity"],
        alert["rule"],
        alert["subject"],
        f"{alert['value']:.4g}",
        f"{alert['threshold']:g}",
        status,
    )
    shown = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
    return f'<tr class="{"open" if alert["status"] == "open" else "muted"}">{shown}</tr>'


def render(paths: ProjectPaths) -> str:
    """The dashboard page for what `reports/monitoring/` holds now."""
    state, monitored = load_state(paths)
    records = _records(paths, [int(k) for k in monitored if k.isdigit()])
    alerts = [a.to_dict() for a in state.alerts]
    moves = _moves(paths, monitored)
    figure = (
        _figure(records, alerts, moves)
        if records
        else '<p class="muted">no batch monitored yet: mlvs monitor BATCH.csv</p>'
    )
    rows = "\n".join(_alert_row(a) for a in reversed(alerts)) or (
        '<tr><td colspan="7" class="muted">no alert raised yet</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlvs monitoring</title>
<style>{STYLE}</style></head><body>
<h1>Monitoring</h1>
<p id="summary">{len(records)} batch(es) monitored, {sum(1 for r in records if r.get("performance"))} with labels;
{sum(1 for a in alerts if a["status"] == "open")} alert(s) open of {len(alerts)} raised. <a href="index.html">All reports</a></p>
<figure id="timeline">{figure}</figure>
<h2>Alerts</h2>
<table id="alerts"><tr><th>batch</th><th>severity</th><th>rule</th><th>subject</th><th>value</th><th>threshold</th><th>status</th></tr>
{rows}
</table>
</body></html>
"""


def write_dashboard(paths: ProjectPaths) -> Path | None:
    """Rebuild `reports/monitoring.html`; a failure to draw it never fails the monitoring run."""
    try:
        monitoring_dir(paths).mkdir(parents=True, exist_ok=True)
        target = dashboard_file(paths)
        atomic_write_text(target, render(paths))
        return target
    except Exception as error:  # the batch's own record is what matters; say why and go on
        log.warning("the monitoring dashboard could not be rebuilt (%s)", error)
        return None
