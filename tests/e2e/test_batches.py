"""`mlvs batches generate`: the next batches of a scenario, on disk and tracked by DVC, or nothing at all."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import mlvs, tree_hashes

from mlvs.ml.data import FEATURES, TARGET


def test_batches_are_written_numbered_on_and_tracked_by_dvc(workspace: Path) -> None:
    first = mlvs(workspace, "batches", "generate", "--scenario", "price_rise", "--n-batches", "2")
    assert first.returncode == 0, first.stderr
    then = mlvs(workspace, "batches", "generate", "--json")
    assert then.returncode == 0, then.stderr
    (third,) = json.loads(then.stdout)["batches"]
    assert (third["number"], third["scenario"]) == (3, "none")

    for number in (1, 2, 3):
        customers = workspace / "data" / "batches" / f"batch-{number:04d}.csv"
        labels = workspace / "data" / "labels" / f"batch-{number:04d}.csv"
        frame, truth = pd.read_csv(customers), pd.read_csv(labels)
        assert set(FEATURES) <= set(frame.columns) and TARGET not in frame.columns
        assert list(truth.columns) == ["customer_id", TARGET]
        assert list(truth["customer_id"]) == list(frame["customer_id"])
        for tracked in (customers, labels):
            entry = yaml.safe_load(Path(f"{tracked}.dvc").read_text())["outs"][0]
            assert entry["path"] == tracked.name and len(entry["md5"]) == 32
    record = json.loads((workspace / "data" / "batches" / "batch-0002.json").read_text())
    assert (record["scenario"], record["severity"], record["rows"]) == ("price_rise", 0.15, 1000)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--scenario", "meteor_strike"], "unknown scenario 'meteor_strike'"),
        (["--n-batches", "0"], "--n-batches 0 is out of range"),
        (["--seed", "-1"], "--seed -1 is out of range"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    workspace: Path, args: list[str], named: str
) -> None:
    before = tree_hashes(workspace)
    result = mlvs(workspace, "batches", "generate", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert named in result.stderr
    assert tree_hashes(workspace) == before


def test_a_scenario_missing_from_the_params_is_named(workspace: Path) -> None:
    params = workspace / "params" / "monitoring.yaml"
    document = yaml.safe_load(params.read_text())
    del document["scenarios"]["gradual"]
    params.write_text(yaml.safe_dump(document))
    before = tree_hashes(workspace)
    result = mlvs(workspace, "batches", "generate")
    assert result.returncode == 2
    assert "params/monitoring.yaml" in result.stderr and "gradual" in result.stderr
    assert tree_hashes(workspace) == before
