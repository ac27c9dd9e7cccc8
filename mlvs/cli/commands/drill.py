"""`mlvs drill SCENARIO|all`: incident drills, each with its postmortem."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlvs.cli.menu import choose_from_menu, require_terminal, scenario_groups
from mlvs.cli.render import (
    emit_json,
)
from mlvs.cli.style import bad, good
from mlvs.ops.drill.drill import DrillFailure, DrillResult, drill_many
from mlvs.ops.drill.incidents import load_catalog, not_applicable
from mlvs.paths import project


@click.command("drill")
@click.argument("scenario", required=False)
@click.option("--seed", default=0, show_default=True, help="Seed of the damage.")
@click.option("--json", "as_json", is_flag=True, help="Print the postmortem records as JSON.")
def drill_command(scenario: str | None, seed: int, as_json: bool) -> None:
    """Drill SCENARIO (or `all`): inject, detect, recover, verify; keep a postmortem of each."""
    paths = project()
    catalog = load_catalog(paths.root)
    if scenario is None:
        require_terminal("give a scenario to drill, or `all`; `mlvs incidents` lists them")
        scenario = choose_from_menu(
            "Incident scenarios:", scenario_groups(catalog), "Scenario to drill", "scenario"
        )

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


def drills_text(results: list[DrillResult], index: Path) -> str:
    """Drills, for people: one line each (caught by, repaired by, how fast), then the postmortems."""

    lines = []
    for result in results:
        if isinstance(result, DrillFailure):
            failed = bad(
                f"{'NOT RECOVERED':<14}"
            )  # padded before styling: the escapes take no column
            lines.append(f"{result.scenario:<32} {failed} {result.error}")
            continue
        mark = good(f"{'recovered':<14}") if result.recovered else bad(f"{'NOT RECOVERED':<14}")
        lines.append(
            f"{result.scenario:<32} {mark} detected by {result.detected_by}, "
            f"repaired by {result.rung} "
            f"({result.time_to_detect_s:.3f} s + {result.time_to_recover_s:.3f} s)"
        )
    lines.append(f"postmortems: {index}")
    return "\n".join(lines)
