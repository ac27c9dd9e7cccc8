"""Commands about the health of a project: verify, incidents, drill, reproduce."""

from __future__ import annotations

import sys

import click

from mlvs.cli.render import (
    drills_text,
    emit_json,
    incidents_table,
    reproduction_text,
    verify_text,
)
from mlvs.errors import BadInputError
from mlvs.paths import project


@click.command("verify")
@click.option("--only", "only", default=None, help="Comma-separated checks to run (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify_command(only: str | None, as_json: bool) -> None:
    """Check every tracked file, the data schema, the model, metrics, registry and stores."""
    from mlvs.ops.verify import parse_checks, verify

    report = verify(project(), parse_checks(only))
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(verify_text(report))
    sys.exit(0 if report.healthy else 1)


@click.command("incidents")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def incidents_command(as_json: bool) -> None:
    """List the incident scenarios of params/incidents.yaml."""
    from mlvs.ops.drill.incidents import load_catalog

    catalog = load_catalog(project().root)
    if as_json:
        emit_json([s.model_dump(exclude_none=True) for s in catalog.values()])
    else:
        click.echo(incidents_table(catalog))


@click.command("drill")
@click.argument("scenario", required=False)
@click.option("--seed", default=0, show_default=True, help="Seed of the damage.")
@click.option("--json", "as_json", is_flag=True, help="Print the postmortem records as JSON.")
def drill_command(scenario: str | None, seed: int, as_json: bool) -> None:
    """Drill SCENARIO (or `all`): inject, detect, recover, verify; keep a postmortem of each."""
    from mlvs.ops.drill.drill import drill_many
    from mlvs.ops.drill.incidents import load_catalog

    paths = project()
    catalog = load_catalog(paths.root)
    if scenario is None:
        if not sys.stdin.isatty():
            raise BadInputError("give a scenario to drill, or `all`; `mlvs incidents` lists them")
        scenario = click.prompt(
            "scenario to drill", type=click.Choice([*catalog, "all"]), show_choices=True
        )
    from mlvs.ops.drill.incidents import not_applicable

    # `all` means every scenario that can break something here (a server has no SQLite store to break).
    names = (
        [n for n, s in catalog.items() if not_applicable(paths, s) is None]
        if scenario == "all"
        else [scenario]
    )
    results, index = drill_many(paths, names, seed)
    if as_json:
        emit_json({"drills": [r.to_dict() for r in results], "index": str(index)})
    else:
        click.echo(drills_text(results, index))
    sys.exit(0 if results and all(r.recovered for r in results) else 1)


@click.command("reproduce")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def reproduce_command(name: str, as_json: bool) -> None:
    """Re-run snapshot NAME's pipeline in isolation; compare data bytes, metrics, golden predictions."""
    from mlvs.ops.reproduce import expected_from_manifest, reproduce
    from mlvs.ops.snapshot.read import show_snapshot

    paths = project()
    manifest = show_snapshot(paths, name)
    result = reproduce(paths, name, expected_from_manifest(paths, manifest))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(reproduction_text(result))
    sys.exit(0 if result.reproduces else 1)
