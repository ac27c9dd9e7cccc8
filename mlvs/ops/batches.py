"""`mlvs batches generate`: the next batches of a seeded scenario, written and tracked with DVC.

Batch N is `data/batches/batch-NNNN.csv` (the raw customer columns without `churn`) with
its labels in `data/labels/batch-NNNN.csv` (`customer_id`, `churn`), and what made it in
`data/batches/batch-NNNN.json` (scenario, severity, seed, rows), kept in git beside the
`.dvc` files. Numbers continue after the highest batch already there, whatever its
scenario, so batches read as one stream of periods.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_bytes, atomic_write_text
from mlvs.backends.dvc.command import dvc
from mlvs.errors import BadInputError
from mlvs.logs import get_logger
from mlvs.ml.batches import SCENARIOS, Batch, make_batch
from mlvs.ml.data import to_csv_bytes
from mlvs.ml.params import load_stage
from mlvs.paths import ProjectPaths
from mlvs.state.interrupted import recover_interrupted
from mlvs.state.lock import state_lock

log = get_logger("batches")

BATCH_NAME = re.compile(r"^batch-(\d{4,6})\.csv$")
MAX_BATCHES_AT_ONCE = 1000


@dataclass(frozen=True)
class WrittenBatch:
    """One batch written: where, and what made it."""

    number: int
    scenario: str
    severity: float
    rows: int
    customers: Path
    labels: Path

    def to_dict(self, root: Path) -> dict[str, Any]:
        return {
            "number": self.number,
            "scenario": self.scenario,
            "severity": self.severity,
            "rows": self.rows,
            "customers": self.customers.relative_to(root).as_posix(),
            "labels": self.labels.relative_to(root).as_posix(),
        }


def batch_numbers(paths: ProjectPaths) -> list[int]:
    """The numbers of the batches in `data/batches/`, in order."""
    if not paths.batches.is_dir():
        return []
    found = (BATCH_NAME.match(p.name) for p in paths.batches.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def batch_file(paths: ProjectPaths, number: int) -> Path:
    """Where batch `number`'s customers are."""
    return paths.batches / f"batch-{number:04d}.csv"


def labels_file(paths: ProjectPaths, number: int) -> Path:
    """Where batch `number`'s labels are."""
    return paths.labels / f"batch-{number:04d}.csv"


def generate_batches(
    paths: ProjectPaths, scenario: str, n_batches: int, seed: int | None = None
) -> list[WrittenBatch]:
    """Write the next `n_batches` batches of `scenario` and track them with DVC.

    Bad input (an unknown scenario, a count out of range) is refused before anything is
    written. The scenario's severity and the rows per batch come from
    `params/monitoring.yaml`; `seed` overrides its seed.
    """
    if scenario not in SCENARIOS:
        raise BadInputError(
            f"unknown scenario {scenario!r}; known scenarios: {', '.join(SCENARIOS)}"
        )
    if not 1 <= n_batches <= MAX_BATCHES_AT_ONCE:
        raise BadInputError(
            f"--n-batches {n_batches} is out of range; give 1 to {MAX_BATCHES_AT_ONCE}"
        )
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise BadInputError(f"--seed {seed} is out of range; give 0 to {2**32 - 1}")
    monitoring = load_stage("monitoring", paths.root)
    prepare = load_stage("prepare", paths.root)
    seed = monitoring.seed if seed is None else seed
    with state_lock(paths):
        recover_interrupted(paths)
        first = max(batch_numbers(paths), default=0) + 1
        written: list[WrittenBatch] = []
        try:
            for number in range(first, first + n_batches):
                batch = make_batch(
                    scenario,
                    monitoring.scenarios[scenario],
                    number,
                    monitoring.batch_rows,
                    seed,
                    prepare.churn_rate,
                    prepare.signal_strength,
                    prepare.label_noise,
                )
                written.append(_write(paths, batch, seed))
            tracked = [
                str(p.relative_to(paths.root)) for w in written for p in (w.customers, w.labels)
            ]
            dvc(paths, "add", "--quiet", *tracked)
        except BaseException:
            # Nothing half-made stays: the files of every batch of this call go again.
            for number in range(first, first + n_batches):
                customers = batch_file(paths, number)
                for path in (customers, labels_file(paths, number), customers.with_suffix(".json")):
                    path.unlink(missing_ok=True)
                    Path(f"{path}.dvc").unlink(missing_ok=True)
            raise
    log.debug("batches %d to %d of %s written", first, first + n_batches - 1, scenario)
    return written


def _write(paths: ProjectPaths, batch: Batch, seed: int) -> WrittenBatch:
    made = WrittenBatch(
        batch.number,
        batch.scenario,
        batch.severity,
        len(batch.customers),
        batch_file(paths, batch.number),
        labels_file(paths, batch.number),
    )
    made.customers.parent.mkdir(parents=True, exist_ok=True)
    made.labels.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(made.customers, to_csv_bytes(batch.customers))
    atomic_write_bytes(made.labels, to_csv_bytes(batch.labels))
    record = {**made.to_dict(paths.root), "seed": seed}
    atomic_write_text(made.customers.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return made
