"""`mlvs reproduce`: a snapshot's pipeline re-run in isolation must give the recorded bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git, mlvs, tree_hashes

pytestmark = pytest.mark.slow


def test_reproduce_names_exactly_the_tampered_file_and_leaves_the_workspace_alone(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    raw = root / "data/raw/customer_data.csv"
    # Tamper with the recorded data: the snapshot records these bytes, the pipeline cannot make them.
    raw.write_bytes(raw.read_bytes().replace(b"Month-to-month", b"Month-to-Month", 1))
    assert mlvs(root, "snapshot", "create", "tampered", "--allow-unhealthy").returncode == 0
    before, status = tree_hashes(root, skip=(".git/", ".mlvs/")), git(root, "status", "--porcelain")

    result = mlvs(root, "reproduce", "tampered", "--json")

    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["reproduces"] is False
    assert len(report["differences"]) == 1
    assert report["differences"][0].startswith("data/raw/customer_data.csv")
    assert report["compared_files"] >= 7 and report["compared_metrics"] >= 10
    assert tree_hashes(root, skip=(".git/", ".mlvs/")) == before
    assert git(root, "status", "--porcelain") == status


def test_reproduce_refuses_an_unknown_snapshot(trained_workspace: Path) -> None:
    result = mlvs(trained_workspace, "reproduce", "nope")
    assert result.returncode == 2
    assert "no snapshot named 'nope'" in result.stderr
