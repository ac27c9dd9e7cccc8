"""Spare blocks: a rollback keeps the large file it replaced and writes the next restore into its blocks.

One workspace per module: the trained workspace plus `data/blob.bin`, 64 MiB of seeded
random bytes tracked by DVC (the smallest size kept as a spare); snapshot A; the blob
rewritten, snapshot B. Each test works on its own copy of B, with the hashes of A's and
B's blob computed here, by the test itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, clean_env, copy_workspace, git, mlvs, tree_hashes

pytestmark = pytest.mark.slow

BLOB = "data/blob.bin"
SIZE = 64 << 20


def write_blob(path: Path, seed: int) -> str:
    payload = np.random.default_rng(seed).bytes(SIZE)
    path.write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spares(root: Path) -> list[Path]:
    directory = root / ".mlvs" / "spare"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def rollback(root: Path, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = clean_env(root)
    environment.update(env)
    return subprocess.run(
        [str(BIN / "mlvs"), "rollback", name, "--json"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def rolled_back(root: Path, name: str, **env: str) -> dict:
    result = rollback(root, name, **env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["verified"] is True and report["findings"] == []
    return report


def wait_until_empty(directory: Path, seconds: float = 30) -> list[Path]:
    """Large retired files are freed by a detached process: give it time."""
    deadline = time.monotonic() + seconds
    while True:
        left = sorted(directory.iterdir()) if directory.is_dir() else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@dataclass(frozen=True)
class Blobs:
    template: Path
    a: str
    b: str


@pytest.fixture(scope="module")
def blobs(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Blobs:
    root = tmp_path_factory.mktemp("spares") / "ws"
    copy_workspace(_trained_template, root)
    env = clean_env(root)
    digests = []
    for name, seed in (("A", 1), ("B", 2)):
        digests.append(write_blob(root / BLOB, seed))
        added = subprocess.run(
            [str(BIN / "dvc"), "add", "-q", BLOB], cwd=root, env=env, capture_output=True, text=True
        )
        assert added.returncode == 0, added.stderr
        created = mlvs(root, "snapshot", "create", name)
        assert created.returncode == 0, created.stderr
    git(root, "add", "-A")
    git(root, "commit", "-qm", "blob B")
    return Blobs(root, *digests)


@pytest.fixture
def ws(blobs: Blobs, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    copy_workspace(blobs.template, root)
    return root


def test_the_replaced_file_becomes_a_spare_and_the_next_restore_is_written_into_its_blocks(
    blobs: Blobs, ws: Path
) -> None:
    replaced_inode = (ws / BLOB).stat().st_ino
    rolled_back(ws, "A")
    assert sha256_of(ws / BLOB) == blobs.a
    kept = spares(ws)
    assert [p.stat().st_ino for p in kept] == [replaced_inode]
    assert kept[0].stat().st_size == SIZE

    a_inode = (ws / BLOB).stat().st_ino
    rolled_back(ws, "B")
    assert (ws / BLOB).stat().st_ino == replaced_inode  # B's bytes, back in the blocks B's file had
    assert sha256_of(ws / BLOB) == blobs.b
    assert [p.stat().st_ino for p in spares(ws)] == [a_inode]
    assert (ws / BLOB).stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert mlvs(ws, "verify", "--only", "file_hash").returncode == 0


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_file_another_process_holds_open_is_not_reused(blobs: Blobs, ws: Path) -> None:
    with open(ws / BLOB, "rb") as reader:  # a notebook still reading B's data
        rolled_back(ws, "A")
        assert spares(ws) == []
        rolled_back(ws, "B")
        rolled_back(ws, "A")
        assert (
            hashlib.sha256(reader.read()).hexdigest() == blobs.b
        )  # its bytes never changed under it
    assert sha256_of(ws / BLOB) == blobs.a


def test_a_file_with_another_name_is_not_reused(blobs: Blobs, ws: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "blob-link.bin"
    os.link(ws / BLOB, elsewhere)  # as a DVC cache of type hardlink would
    rolled_back(ws, "A")
    assert spares(ws) == []
    rolled_back(ws, "B")
    rolled_back(ws, "A")
    assert sha256_of(elsewhere) == blobs.b


def test_a_zero_budget_keeps_no_spare_and_frees_the_ones_kept(blobs: Blobs, ws: Path) -> None:
    rolled_back(ws, "A")
    assert len(spares(ws)) == 1
    rolled_back(ws, "B", MLVS_SPARE_BYTES="0")
    assert sha256_of(ws / BLOB) == blobs.b
    assert wait_until_empty(ws / ".mlvs" / "spare") == []
    assert wait_until_empty(ws / ".mlvs" / "retired") == []


@pytest.mark.parametrize("value", ["lots", "-1", "1.5"])
def test_a_bad_spare_budget_is_refused_in_one_line_and_changes_nothing(
    ws: Path, value: str
) -> None:
    before = tree_hashes(ws, skip=(".git/", ".mlvs/logs/"))
    result = rollback(ws, "A", MLVS_SPARE_BYTES=value)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MLVS_SPARE_BYTES" in lines[0] and repr(value) in lines[0], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert tree_hashes(ws, skip=(".git/", ".mlvs/logs/")) == before
