"""`mlvs monitor BATCH.csv` and `mlvs alerts`: judge a batch after deployment; the alerts so far."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mlvs.cli.render import emit_json
from mlvs.cli.style import bad, note
from mlvs.ops.dashboard import write_dashboard
from mlvs.ops.monitor import monitor_batch
from mlvs.ops.monitor_state import load_state
from mlvs.ops.reports_index import refresh_index
from mlvs.paths import ProjectPaths, project


def _from_root(paths: ProjectPaths, given: str) -> str:
    """A path the user typed (from the working directory) as the notebook reads it (from the root)."""
    if not given:
        return ""
    path = Path(given).resolve()
    try:
        return path.relative_to(paths.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _alert_line(alert: dict[str, Any], verb: str) -> str:
    return (
        f"{alert['severity']:<8} {verb} {alert['rule']} on {alert['subject']}: "
        f"{alert['metric']} {alert['value']:.4g} (threshold {alert['threshold']:g}), "
        f"since batch {alert['raised_batch']}"
    )


@click.command("monitor")
@click.argument("batch")
@click.option(
    "--labels", default="", help="The batch's labels (customer_id, churn), once they arrive."
)
@click.option("--json", "as_json", is_flag=True, help="Print the batch's record as JSON.")
def monitor_command(batch: str, labels: str, as_json: bool) -> None:
    """Judge BATCH (a CSV of customers) with notebooks/05_monitor.ipynb: drift, schema,
    predictions and, with --labels, realised performance; raise the alerts the rules call for.

    Exit status: 0 no alert, 1 an alert raised by this batch or still open, 2 bad input
    (nothing written).
    """
    paths = project()
    record = monitor_batch(paths, _from_root(paths, batch), _from_root(paths, labels))
    write_dashboard(paths)
    refresh_index(paths)
    opened = record["open_alerts"]
    if as_json:
        emit_json(record)
    else:
        drift = record["drift"]
        click.echo(
            f"batch {record['batch']}: {record['rows']:,} customers, model version "
            f"{record['model_version']}, {drift['share_drifted']:.0%} of features drifted, "
            f"{record['predicted_churn_rate']:.1%} predicted to churn"
        )
        if record["performance"]:
            p = record["performance"]
            click.echo(
                f"realised: ROC-AUC {p['roc_auc']:.3f} (test set {p['reference_roc_auc']:.3f}), "
                f"net value per customer {p['net_value_per_customer']:.1f} "
                f"(test set {p['reference_net_value_per_customer']:.1f}), ROI {p['roi']:.2f} "
                f"(test set {p['reference_roi']:.2f})"
            )
        for alert in record["alerts"]:
            click.echo(f"{bad('ALERT')} {_alert_line(alert, 'raised')}")
        for alert in record["resolved"]:
            click.echo(f"{note('resolved')} {_alert_line(alert, 'resolved')}")
        raised = {(a["rule"], a["subject"]) for a in record["alerts"]}
        for alert in opened:
            if (alert["rule"], alert["subject"]) not in raised:
                click.echo(f"{note('open')} {_alert_line(alert, 'still open')}")
        check = record.get("deploy_check")
        if check and check["worse"]:
            click.echo(
                f"{bad('DEPLOY')} version {check['deployed']} earned {check['metric']} "
                f"{check['champion_value']:.4g} on this batch against {check['previous_value']:.4g} for "
                f"version {check['previous']}, which it replaced; "
                + (
                    f"rolled back to {check['snapshot']} (models, registry), verified"
                    if check["action"] == "rolled back"
                    else f"roll it back with: {check['command']}"
                )
            )
        if not opened:
            click.echo("no alert open")
    for problem in record.get("webhook_failures", []):
        click.echo(f"{note('mlvs: note:')} alert not delivered: {problem}", err=True)
    sys.exit(1 if opened or record["alerts"] else 0)


@click.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
def alerts_command(as_json: bool) -> None:
    """Every alert raised so far, open and resolved, newest first."""
    state, _ = load_state(project())
    alerts = [a.to_dict() for a in reversed(state.alerts)]
    if as_json:
        emit_json({"alerts": alerts})
        return
    if not alerts:
        click.echo("no alert raised yet")
    for alert in alerts:
        status = (
            "open" if alert["status"] == "open" else f"resolved at batch {alert['resolved_batch']}"
        )
        click.echo(f"{_alert_line(alert, 'raised')} [{status}]")
