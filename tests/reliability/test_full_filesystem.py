"""A real full disk: the workspace on a small tmpfs filled to the brim, so writes fail with ENOSPC.

`test_disk_faults.py` gets a full disk from a file-size limit (EFBIG); here the
kernel's own "No space left on device" comes from a file system that has no room
left: a tmpfs a little larger than the workspace, mounted for the test, with a
filler file beside the workspace taking all but a few KiB. Where this machine
does not allow mounting, the tests skip, saying so in one line.

Each command ends in one `mlvs: error:` line naming the full disk, with no
traceback, and the project as it was (the same state `test_disk_faults.py`
compares). The pipeline is refused before it starts when the disk lacks the room
it reserves for undoing a failed stage; given that room and little more, a stage
runs out of space and is undone from the reserve.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import copy_workspace, mlvs
from reliability.test_disk_faults import (
    FULL_DISK,
    TRAIN_CSV,
    _append_rows,
    _damage,
    _new_data,
    state,
)

from mlvs.paths import ProjectPaths
from mlvs.state.room import room_needed


def _more_rows(root: Path) -> None:
    """New prepare params: the pipeline's first stage runs and writes new data at once."""
    params = root / "params" / "prepare.yaml"
    values = yaml.safe_load(params.read_text())
    values["n_rows"] += 50
    params.write_text(yaml.safe_dump(values, sort_keys=False))


# Left free once the disk is filled: room for the lock and the journal, not for a data or model file.
ROOM = 8 * 1024
# Left free beyond the room the pipeline reserves for its undo: the reservation succeeds, and a
# stage then runs out of space (its model and MLflow artifacts take more than this).
BEYOND_THE_RESERVE = 64 * 1024
CASES: dict[str, tuple[tuple[str, ...], str, Callable[[Path], None] | None]] = {
    # The new data leaves dvc.lock behind: the snapshot is asked for anyway, to reach its writes.
    "snapshot_create": (
        ("snapshot", "create", "new", "--allow-unhealthy"),
        "'new' was not created",
        _new_data,
    ),
    "rollback": (("rollback", "base"), "nothing was rolled back", None),
    "recover": (("recover",), "`mlvs recover` could not finish", _damage),
    "pipeline": (("pipeline",), "pipeline could not write", _more_rows),
}


# A failed stage keeps its executed notebook and its FAILED MLflow run, by contract (`mlvs run`
# exits 1, "its report is still kept"): for the pipeline, the registry is compared instead.
RUN_RECORDS = ("reports/", "mlflow.db", "mlartifacts/")


def pipeline_state(root: Path) -> dict[str, object]:
    kept = {k: v for k, v in state(root).items() if not k.startswith(RUN_RECORDS)}
    with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
        kept["(registry)"] = sorted(
            db.execute("SELECT name, alias, version FROM registered_model_aliases")
        ) + sorted(db.execute("SELECT name, version, status FROM model_versions"))
    return kept


def _size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def template(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained workspace plus snapshot `base`, as `test_disk_faults.py` builds it."""
    root = tmp_path_factory.mktemp("full-filesystem") / "ws"
    copy_workspace(_trained_template, root)
    original = (root / TRAIN_CSV).read_bytes()
    _append_rows(root)
    mlvs(root, "snapshot", "create", "base", "--allow-unhealthy", check=True)
    (root / TRAIN_CSV).write_bytes(original)
    return root


@pytest.fixture
def small_disk(tmp_path: Path, template: Path) -> Iterator[Path]:
    """A tmpfs mounted for this test, with room for the workspace and a few MiB; unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    size = _size(template) + (4 << 20)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"this machine does not allow mounting a small tmpfs ({mounted.stderr.strip()})"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(mount_point: Path, room: int) -> None:
    """Take all of the file system's free space but `room` bytes."""
    stats = os.statvfs(mount_point)
    free = stats.f_bavail * stats.f_frsize
    with open(mount_point / "filler", "wb") as out:
        out.truncate(0)
        block = b"\0" * (1 << 20)
        left = free - room
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    assert os.statvfs(mount_point).f_bavail * stats.f_frsize <= room + stats.f_frsize


def one_error_and_nothing_changed(
    root: Path,
    args: tuple[str, ...],
    capture: Callable[[Path], dict[str, object]],
    disk: Path,
    room: int,
) -> str:
    """Run `mlvs ARGS` with `room` bytes left on the disk; assert exit 1, one error line, no
    traceback and the state `capture` reads unchanged; return the error line."""
    before = capture(root)
    fill(disk, room)
    result = mlvs(root, *args)
    (disk / "filler").unlink()  # room again, so that reading the state afterwards cannot fail
    after = capture(root)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mlvs: error:")]
    assert len(errors) == 1, result.stderr
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"mlvs {' '.join(args)} changed {changed}"
    return errors[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_command_on_a_full_file_system_says_so_in_one_line_and_changes_nothing(
    name: str, template: Path, small_disk: Path
) -> None:
    args, says, prepare = CASES[name]
    root = copy_workspace(template, small_disk / "ws")
    capture = pipeline_state if name == "pipeline" else state
    if prepare is not None:
        prepare(root)
    error = one_error_and_nothing_changed(root, args, capture, small_disk, ROOM)
    assert says.lower() in error.lower(), error
    assert any(word in error.lower() for word in FULL_DISK[0].split("|")), error
    leftovers = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mlvs-tmp"))
    assert not leftovers, f"temporary files left behind: {leftovers}"
    shutil.rmtree(root)


def test_a_stage_that_fills_the_disk_is_undone_from_the_room_reserved_for_it(
    template: Path, small_disk: Path
) -> None:
    """The disk has the room the pipeline reserves, and little more: a stage runs out of
    space, and its undo, given the reserved room back, puts the last good outputs in place."""
    root = copy_workspace(template, small_disk / "ws")
    _more_rows(root)
    room = room_needed(ProjectPaths(root)) + BEYOND_THE_RESERVE
    error = one_error_and_nothing_changed(root, ("pipeline",), pipeline_state, small_disk, room)
    # A stage ran and failed for want of space (not the reservation, which was made).
    assert "pipeline could not write" in error and "no space left" in error, error
    assert "in reserve" not in error and "back in place" in error, error
    assert not (root / ".mlvs" / "journal.json").exists()
    assert not (root / ".mlvs" / "room").exists()
    shutil.rmtree(root)
