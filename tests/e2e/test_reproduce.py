"""`mlvs reproduce`: a snapshot's pipeline re-run in isolation must give the recorded bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import git, mlvs, tree_hashes

MANIFEST = ".mlvs-snapshot.json"
REF = "refs/mlvs/snapshots/"

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


def record_another_environment(root: Path, name: str, environment: dict) -> None:
    """Make snapshot `name` look taken elsewhere: its commit again, its manifest's environment replaced.

    As a snapshot fetched from a teammate whose interpreter had other packages would be.
    """
    commit = git(root, "rev-parse", REF + name).strip()
    document = json.loads(git(root, "show", f"{commit}:{MANIFEST}"))
    document["environment"].update(environment)

    def plumbing(*args: str, text: str | None = None) -> str:
        return git(root, *args, input=text).strip()

    blob = plumbing("hash-object", "-w", "--stdin", text=json.dumps(document, indent=2))
    entries = [
        f"100644 blob {blob}\t{MANIFEST}" if line.endswith(f"\t{MANIFEST}") else line
        for line in plumbing("ls-tree", commit).splitlines()
    ]
    tree = plumbing("mktree", text="\n".join(entries) + "\n")
    parents = [arg for sha in plumbing("rev-parse", f"{commit}^@").split() for arg in ("-p", sha)]
    plumbing("update-ref", REF + name, plumbing("commit-tree", tree, *parents, "-m", "elsewhere"))


def test_snapshot_diff_shows_a_changed_uv_lock_in_text_and_json(trained_workspace: Path) -> None:
    root = trained_workspace
    lock = root / "uv.lock"
    before = hashlib.sha256(lock.read_bytes()).hexdigest()
    assert mlvs(root, "snapshot", "create", "before").returncode == 0
    lock.write_bytes(lock.read_bytes() + b"# upgraded\n")
    after = hashlib.sha256(lock.read_bytes()).hexdigest()
    assert mlvs(root, "snapshot", "create", "after").returncode == 0

    recorded = json.loads(mlvs(root, "snapshot", "show", "after", "--json").stdout)
    assert recorded["environment"]["uv_lock_sha256"] == after
    diff = json.loads(mlvs(root, "snapshot", "diff", "before", "after", "--json").stdout)
    assert diff["environment"] == {"uv_lock_sha256": [before, after]}
    assert diff["code"] == ["uv.lock"]  # the keys that were there before are all still there
    text = mlvs(root, "snapshot", "diff", "before").stdout  # against the current state
    assert "environment:" in text
    assert f"uv.lock sha256  {before[:16]}… -> {after[:16]}…" in text


def test_reproduce_names_each_package_that_differs_first_and_lets_the_results_decide(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    assert mlvs(root, "snapshot", "create", "elsewhere").returncode == 0
    shown = json.loads(mlvs(root, "snapshot", "show", "elsewhere", "--json").stdout)
    installed = shown["environment"]["packages"]
    record_another_environment(
        root,
        "elsewhere",
        {
            "python": "3.99.0",
            "packages": {**installed, "numpy": "1.0.0", "pandas": None},
            "uv_lock_sha256": "0" * 64,
        },
    )

    result = mlvs(root, "reproduce", "elsewhere", "--json")

    assert result.returncode == 0, result.stderr[-2000:]  # the bytes reproduce: that decides
    report = json.loads(result.stdout)
    assert report["reproduces"] is True and report["differences"] == []
    assert report["environment_differs"] is True
    assert report["environment"] == {
        "python": ["3.99.0", shown["environment"]["python"]],
        "packages.numpy": ["1.0.0", installed["numpy"]],
        "packages.pandas": [None, installed["pandas"]],
        "uv_lock_sha256": ["0" * 64, hashlib.sha256((root / "uv.lock").read_bytes()).hexdigest()],
    }
    # Said on stderr before the pipeline re-ran, not only in the final document.
    assert "numpy 1.0.0 -> " + installed["numpy"] in result.stderr
