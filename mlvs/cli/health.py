"""Commands about the health of a project: verify, incidents, drill, reproduce."""

from __future__ import annotations

import sys

import click

from mlvs.cli.render import emit_json
from mlvs.errors import BadInputError
from mlvs.ops.drill.drill import drill_many
from mlvs.ops.drill.incidents import load_catalog, not_applicable
from mlvs.ops.reproduce import expected_from_manifest, reproduce
from mlvs.ops.snapshot.read import show_snapshot
from mlvs.ops.verify import parse_checks, verify
from mlvs.paths import project


@click.command("verify")
@click.option("--only", "only", default=None, help="Comma-separated checks to run (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify_command(only: str | None, as_json: bool) -> None:
    """Check every tracked file, the data schema, the model, metrics, registry and stores."""
    report = verify(project(), parse_checks(only))
    if as_json:
        emit_json(report.to_dict())
    elif report.healthy:
        click.echo("healthy: every check passed")
    else:
        click.echo(f"{len(report.findings)} finding(s):")
        for finding in report.findings:
            click.echo(f"  {finding}")
    sys.exit(0 if report.healthy else 1)


@click.command("incidents")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def incidents_command(as_json: bool) -> None:
    """List the incident scenarios of params/incidents.yaml."""
    catalog = load_catalog(project().root)
    if as_json:
        emit_json([s.model_dump(exclude_none=True) for s in catalog.values()])
        return
    width = max(len(n) for n in catalog)
    for name, s in catalog.items():
        click.echo(f"{name:<{width}}  {s.family:<8}  {s.description}")


@click.command("drill")
@click.argument("scenario", required=False)
@click.option("--seed", default=0, show_default=True, help="Seed of the damage.")
@click.option("--json", "as_json", is_flag=True, help="Print the postmortem records as JSON.")
def drill_command(scenario: str | None, seed: int, as_json: bool) -> None:
    """Drill SCENARIO (or `all`): inject, detect, recover, verify; keep a postmortem of each."""
    paths = project()
    catalog = load_catalog(paths.root)
    if scenario is None:
        if not sys.stdin.isatty():
            raise BadInputError("give a scenario to drill, or `all`; `mlvs incidents` lists them")
        scenario = click.prompt(
            "scenario to drill", type=click.Choice([*catalog, "all"]), show_choices=True
        )

    # `all` means every scenario that can break something here (a server has no SQLite store to break).
    names = (
        [n for n, s in catalog.items() if not_applicable(paths, s) is None]
        if scenario == "all"
        else [scenario]
    )
    records, index = drill_many(paths, names, seed)
    if as_json:
        emit_json({"drills": records, "index": str(index)})
    else:
        for record in records:
            mark = "recovered" if record.get("recovered") else "NOT RECOVERED"
            click.echo(
                f"{record['scenario']:<32} {mark:<14} detected by {record.get('detected_by')}, "
                f"repaired by {record.get('rung')} "
                f"({record.get('time_to_detect_s', 0):.3f} s + {record.get('time_to_recover_s', 0):.3f} s)"
            )
        click.echo(f"postmortems: {index}")
    sys.exit(0 if records and all(r.get("recovered") for r in records) else 1)


@click.command("reproduce")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def reproduce_command(name: str, as_json: bool) -> None:
    """Re-run snapshot NAME's pipeline in isolation; compare data bytes, metrics, golden predictions."""
    paths = project()
    manifest = show_snapshot(paths, name)
    result = reproduce(paths, name, expected_from_manifest(paths, manifest))
    if as_json:
        emit_json(result.to_dict())
    elif result.reproduces:
        click.echo(
            f"snapshot {name!r} reproduces: {result.compared_files} file(s) byte for byte, "
            f"{result.compared_metrics} metric(s) exactly, golden predictions identical "
            f"({result.seconds:.0f} s)"
        )
    else:
        click.echo(
            f"snapshot {name!r} does not reproduce, {len(result.differences)} difference(s):"
        )
        for difference in result.differences:
            click.echo(f"  {difference}")
    sys.exit(0 if result.reproduces else 1)
