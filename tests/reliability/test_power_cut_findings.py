"""What the power-cut harness found, each kept as a small regression test of its own."""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from _crashfs import STRACE, CrashModel, Meta, Trace, record
from conftest import BIN, clean_env

from mlvs.backends.mlflow.store import settle_hot_journal


def _ro_value(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT sum(x) FROM t").fetchone()[0])


def test_a_write_cut_short_in_the_mlflow_database_is_rolled_back_before_a_read(
    tmp_path: Path,
) -> None:
    """Found in a rollback's alias move: a read-only open failed on the hot journal, and the aliases stayed old."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()
    crashed.mkdir()
    database = live / "mlflow.db"
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute("CREATE TABLE t (x INTEGER, padding BLOB)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (1, zeroblob(1000))", [()] * 500)
        db.execute("COMMIT")
        writer = sqlite3.connect(database, isolation_level=None)
        writer.execute(
            "PRAGMA cache_size = 5"
        )  # a small cache spills pages to the database mid-transaction
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE t SET x = 2")
        # What a power cut in the middle of this transaction leaves on disk: the database and its journal.
        shutil.copy(database, crashed / "mlflow.db")
        shutil.copy(live / "mlflow.db-journal", crashed / "mlflow.db-journal")
        writer.execute("ROLLBACK")
        writer.close()
    with pytest.raises(sqlite3.OperationalError):
        _ro_value(crashed / "mlflow.db")  # the hazard: a read-only reader cannot settle it
    settle_hot_journal(crashed / "mlflow.db")
    assert _ro_value(crashed / "mlflow.db") == 500
    assert not (crashed / "mlflow.db-journal").exists()


def recorded_program(root: Path, program: str, tmp_path: Path) -> tuple[Trace, CrashModel]:
    """`python -c PROGRAM ROOT` recorded under strace, with a copy of `root` as it was before."""
    before = tmp_path / "before"
    shutil.copytree(root, before)
    trace = record(
        root, [str(BIN / "python"), "-c", program, str(root)], clean_env(root), tmp_path / "log"
    )
    return trace, CrashModel(trace, before)


@pytest.mark.skipif(not Path(STRACE).exists(), reason="needs strace (.ci/system-deps)")
def test_git_run_by_mlvs_flushes_an_object_before_its_name_exists(tmp_path: Path) -> None:
    """Found in `snapshot create`: the ref survived a power cut, the commit object it names did not."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=clean_env(root))
    (root / "file.txt").write_text("bytes a snapshot keeps\n")
    program = (
        "import sys; from pathlib import Path; from mlvs.backends.git.run import run_git;"
        "oid = run_git(Path(sys.argv[1]), 'hash-object', '-w', 'file.txt').strip();"
        "run_git(Path(sys.argv[1]), 'update-ref', 'refs/mlvs/snapshots/s', oid)"
    )
    trace, model = recorded_program(root, program, tmp_path)
    named = [e for e in trace.events if isinstance(e, Meta) and e.kind in ("link", "rename")]
    assert any(e.path.startswith(".git/objects/") for e in named)
    assert any(e.path == ".git/refs/mlvs/snapshots/s" for e in named)
    finished = model.tree(model.variants(len(trace.events), random.Random(0))[0]).files
    for _, tree in model.distinct_states(300, random.Random(7)):
        for path, content in tree.files.items():
            final = path.startswith(".git/objects/") and "tmp_obj" not in path
            if (final or path == ".git/refs/mlvs/snapshots/s") and path not in trace.initial:
                assert content == finished[path], (
                    f"{path} is there, its bytes are not, in a crash state"
                )


@pytest.mark.skipif(not Path(STRACE).exists(), reason="needs strace (.ci/system-deps)")
def test_what_dvc_wrote_is_flushed_before_the_pipeline_records_it_done(tmp_path: Path) -> None:
    """Found in `pipeline`: the journal said the stages were done, and dvc.lock (DVC writes it without fsync) was torn."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "dvc.lock").write_text("old record\n")
    program = (
        "import os, sys; from pathlib import Path; from mlvs._io import atomic_write_text, sync_file_system;"
        "root = Path(sys.argv[1]);"
        "(root / 'dvc.lock').write_text('the new record of every stage\\n' * 200);"  # as DVC: no fsync
        "sync_file_system(root);"
        "atomic_write_text(root / 'journal', 'reproduced')"
    )
    _, model = recorded_program(root, program, tmp_path)
    new = b"the new record of every stage\n" * 200
    marked = 0
    for _, tree in model.distinct_states(300, random.Random(11)):
        if tree.files.get("journal") == b"reproduced":
            marked += 1
            assert tree.files["dvc.lock"] == new, "the journal is durable, dvc.lock is not"
    assert marked, "no crash state after the journal was written"
