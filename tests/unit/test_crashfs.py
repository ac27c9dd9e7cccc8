"""The power-cut model of `tests/_crashfs.py`, on small recorded programs: what it keeps, what it may lose."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest
from _crashfs import STRACE, CrashModel, Trace, Workbench, record
from conftest import clean_env

pytestmark = pytest.mark.skipif(not Path(STRACE).exists(), reason="needs strace (.ci/system-deps)")

ATOMIC_WRITE = """
import os
fd = os.open("f.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"new bytes " * 100)
{flush}
os.close(fd)
os.rename("f.tmp", "f")
d = os.open(".", os.O_RDONLY)
os.fsync(d)
os.close(d)
"""


def recorded(tmp_path: Path, program: str) -> tuple[Trace, CrashModel]:
    root, before = tmp_path / "ws", tmp_path / "before"
    root.mkdir()
    (root / "f").write_bytes(b"old bytes")
    shutil.copytree(root, before)
    trace = record(root, [sys.executable, "-c", program], clean_env(root), tmp_path / "log")
    return trace, CrashModel(trace, before)


def files_after_every_cut(model: CrashModel) -> set[bytes]:
    """What `f` may hold after a power cut anywhere in the program (b"" when it is missing)."""
    found = set()
    for _, tree in model.distinct_states(500, random.Random(1)):
        content = tree.files.get("f", b"")
        if isinstance(content, int):
            content = model._base(content)
        found.add(content)
    return found


def test_a_rename_without_an_fsync_of_the_data_may_leave_a_short_file(tmp_path: Path) -> None:
    _, model = recorded(tmp_path, ATOMIC_WRITE.format(flush=""))
    seen = files_after_every_cut(model)
    assert {b"old bytes", b"new bytes " * 100} <= seen
    assert b"" in seen  # the rename on disk, the data not yet


def test_an_fsync_before_the_rename_leaves_exactly_old_or_new(tmp_path: Path) -> None:
    _, model = recorded(tmp_path, ATOMIC_WRITE.format(flush="os.fsync(fd)"))
    assert files_after_every_cut(model) == {b"old bytes", b"new bytes " * 100}


def test_an_append_is_kept_whole_once_flushed_and_may_be_torn_before(tmp_path: Path) -> None:
    program = """
import os
with open("f", "ab") as handle:
    handle.write(b" first")
    handle.flush()
    os.fsync(handle.fileno())
    handle.write(b" second")
"""
    _, model = recorded(tmp_path, program)
    seen = files_after_every_cut(model)
    allowed = {b"old bytes" + b" first"[:n] for n in range(7)} | {
        b"old bytes first" + b" second"[:n] for n in range(8)
    }
    assert seen <= allowed
    assert {b"old bytes", b"old bytes first second"} <= seen
    assert seen - {b"old bytes", b"old bytes first", b"old bytes first second"}  # a torn write


def test_a_crash_state_is_built_in_the_workspace_and_reset_to_before(tmp_path: Path) -> None:
    trace, model = recorded(tmp_path, ATOMIC_WRITE.format(flush="os.fsync(fd)"))
    bench = Workbench(trace.root, model.before)
    states = list(model.distinct_states(10, random.Random(2)))
    new = next(tree for _, tree in states if tree.files.get("f") == b"new bytes " * 100)
    bench.build(model, new)
    assert (trace.root / "f").read_bytes() == b"new bytes " * 100
    bench.reset()
    assert sorted(p.name for p in trace.root.iterdir()) == ["f"]
    assert (trace.root / "f").read_bytes() == b"old bytes"


PAGED_WRITES = """
import os
fd = os.open("f", os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"a" * 4096)
os.fsync(fd)
os.write(fd, b"b" * 4096)
os.write(fd, b"c" * 4096)
os.close(fd)
"""


def test_unsynced_pages_may_reach_the_disk_out_of_order(tmp_path: Path) -> None:
    _, model = recorded(tmp_path, PAGED_WRITES)
    seen = files_after_every_cut(model)
    a, b, c, hole = b"a" * 4096, b"b" * 4096, b"c" * 4096, b"\0" * 4096
    assert a + hole + c in seen  # the third write's page on disk, the second's not yet
    assert {a, a + b, a + b + c} <= seen  # and the prefixes
    # Before the fsync: the old file, or the first write torn. After it, the first page stays.
    allowed = {b"old bytes"} | {a[:n] for n in range(4097)} | {a + b[:n] for n in range(4097)}
    allowed |= {a + p + q for p in (b, hole) for q in (c, hole)}
    allowed |= {a + b + c[:n] for n in range(4097)}
    assert seen <= allowed, sorted(len(s) for s in seen - allowed)


def test_a_truncation_keeps_the_writes_around_it_in_order(tmp_path: Path) -> None:
    program = """
import os
fd = os.open("f", os.O_WRONLY)
os.write(fd, b"x" * 8192)
os.ftruncate(fd, 4096)
os.write(fd, b"y" * 4096)
os.close(fd)
"""
    _, model = recorded(tmp_path, program)
    for crash, _ in model.distinct_states(200, random.Random(3)):
        assert crash.pages == ()


def test_fallocate_extends_the_file_with_zeros(tmp_path: Path) -> None:
    program = """
import os
fd = os.open("f", os.O_WRONLY)
os.posix_fallocate(fd, 0, 10000)
os.fsync(fd)
os.close(fd)
"""
    trace, model = recorded(tmp_path, program)
    assert any("Truncate" in repr(e) for e in trace.events), trace.events
    assert b"old bytes".ljust(10000, b"\0") in files_after_every_cut(model)
