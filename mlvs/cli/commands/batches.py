"""`mlvs batches generate`: the next batches of a seeded scenario, for monitoring."""

from __future__ import annotations

import click

from mlvs.cli.render import emit_json
from mlvs.ops.batches import generate_batches
from mlvs.paths import project


@click.group("batches")
def batches_group() -> None:
    """Batches of customers scored after deployment, with labels that arrive later."""


@batches_group.command("generate")
@click.option(
    "--scenario",
    default="none",
    show_default=True,
    help="none, price_rise, contract_shift, new_payment_method, concept_drift, "
    "missing_values or gradual (params/monitoring.yaml gives each its severity).",
)
@click.option("--n-batches", default=1, show_default=True, type=int, help="How many batches.")
@click.option("--seed", type=int, default=None, help="Seed (default: params/monitoring.yaml's).")
@click.option("--json", "as_json", is_flag=True, help="Print the batches written as JSON.")
def batches_generate_command(
    scenario: str, n_batches: int, seed: int | None, as_json: bool
) -> None:
    """Write the next batches under data/batches/ (labels under data/labels/), tracked by DVC.

    Exit status: 0 written, 2 bad input (nothing written).
    """
    paths = project()
    written = generate_batches(paths, scenario, n_batches, seed)
    if as_json:
        emit_json({"batches": [w.to_dict(paths.root) for w in written]})
        return
    for w in written:
        click.echo(
            f"batch {w.number:>4}  {w.scenario} (severity {w.severity:g}), {w.rows:,} customers: "
            f"{w.customers.relative_to(paths.root)}, labels {w.labels.relative_to(paths.root)}"
        )
