"""`make demo`: the guided tour of the whole system on the embedded default.

Pipeline, snapshot, a parameter change and retrain, a second snapshot, a drill of
every scenario, a rollback to the first snapshot; then production: clean batches
monitored, a drift alerted, a bad deploy rolled back by the monitor on its own, the
dashboard; and a summary. Every step is a plain `mlvs` command, printed before it runs,
so the tour can be replayed by hand.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mlvs.paths import project


def step(title: str, *args: str, check: bool = True) -> int:
    """Print and run one `mlvs` command."""
    print(f"\n=== {title}\n$ mlvs {' '.join(args)}", flush=True)
    result = subprocess.run([str(Path(sys.executable).parent / "mlvs"), *args])
    if check and result.returncode != 0:
        sys.exit(f"demo stopped: `mlvs {' '.join(args)}` exited {result.returncode}")
    return result.returncode


def main() -> None:
    """Run the tour in the current project."""
    paths = project()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    first, second = f"demo-{stamp}-baseline", f"demo-{stamp}-more-trees"
    step("Run the pipeline (prepare -> train), skipping what is unchanged", "pipeline")
    step("Snapshot the whole system", "snapshot", "create", first, "-m", "demo: baseline")
    params_file = paths.params / "train.yaml"
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    trees = params["hyperparameters"]["random_forest"]["n_estimators"]
    print(
        f"\n=== Change a parameter: random_forest.n_estimators {trees} -> {trees * 2} (params/train.yaml)"
    )
    text = params_file.read_text(encoding="utf-8").replace(
        f"n_estimators: {trees}\n", f"n_estimators: {trees * 2}\n", 1
    )
    params_file.write_text(text, encoding="utf-8")
    step("Retrain: only the train stage re-runs", "pipeline")
    step("Snapshot the new state", "snapshot", "create", second, "-m", "demo: twice the trees")
    step("Compare the two snapshots", "snapshot", "diff", first, second)
    drilled = step(
        "Drill every incident scenario (each leaves a postmortem)", "drill", "all", check=False
    )
    step("Roll back to the baseline, verified", "rollback", first)
    step("Check the restored state", "verify")
    production(paths)
    print("\n=== Done")
    print(f"Drills: {'all recovered' if drilled == 0 else 'some did NOT recover (see the index)'}")
    print(f"Reports index: {paths.reports / 'index.html'}")
    print(
        "Undo the rollback: mlvs rollback <the automatic snapshot listed by `mlvs snapshot list`>"
    )
    print("Browse the runs: make ui    Open the notebooks: make lab")


def next_batch(scenario: str) -> tuple[str, str]:
    """Generate the next batch of `scenario`; its customers' and labels' paths."""
    paths = project()
    step(f"A new batch of customers: {scenario}", "batches", "generate", "--scenario", scenario)
    number = max(int(p.stem.split("-")[1]) for p in paths.batches.glob("batch-*.csv"))
    return f"data/batches/batch-{number:04d}.csv", f"data/labels/batch-{number:04d}.csv"


def production(paths: Any) -> None:
    """The model's life after deployment: batches judged, a drift alerted, a bad deploy undone."""
    for _ in range(2):
        batch, labels = next_batch("none")
        step("Monitor it: drift, schema, predictions", "monitor", batch, check=False)
        step(
            "Its labels arrive: realised performance",
            "monitor",
            batch,
            "--labels",
            labels,
            check=False,
        )
    batch, _ = next_batch("price_rise")
    step("Monitor a price rise: the drift is alerted (exit 1)", "monitor", batch, check=False)

    params_file = paths.params / "train.yaml"
    original = params_file.read_text(encoding="utf-8")
    print(
        "\n=== A bad model: contact only customers above 0.95 churn probability (params/train.yaml)"
    )
    params_file.write_text(
        original.replace("decision_threshold: value", "decision_threshold: 0.95", 1),
        encoding="utf-8",
    )
    try:
        step("Train it: the promotion gate keeps it as the challenger", "pipeline")
        step("Deploy it anyway, past the gate", "deploy", "--force", check=False)
        batch, labels = next_batch("none")
        step("Monitor the next batch", "monitor", batch, check=False)
        step(
            "Its labels arrive: the deploy earns less than the model it replaced, and is rolled back",
            "monitor",
            batch,
            "--labels",
            labels,
            check=False,
        )
        step("The alias history: the deploy and its automatic rollback", "registry", "history")
    finally:
        params_file.write_text(original, encoding="utf-8")
    step("Every alert so far", "alerts")
    print(f"\nMonitoring dashboard: {paths.reports / 'monitoring.html'}")


if __name__ == "__main__":
    main()
