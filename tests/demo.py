"""`make demo`: the guided tour of the whole system on the embedded default.

Pipeline, snapshot, a parameter change and retrain, a second snapshot, a drill of
every scenario, a rollback to the first snapshot, and a summary. Every step is a
plain `mlvs` command, printed before it runs, so the tour can be replayed by hand.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
    print("\n=== Done")
    print(f"Drills: {'all recovered' if drilled == 0 else 'some did NOT recover (see the index)'}")
    print(f"Reports index: {paths.reports / 'index.html'}")
    print(
        "Undo the rollback: mlvs rollback <the automatic snapshot listed by `mlvs snapshot list`>"
    )
    print("Browse the runs: make ui    Open the notebooks: make lab")


if __name__ == "__main__":
    main()
