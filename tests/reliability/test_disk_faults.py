"""A full disk, a read-only directory, a missing directory: every command that writes fails cleanly.

Each case runs one real command in its own copy of a trained workspace with one
fault in place, and asserts one `mlvs: error:` line that names the problem, a
non-zero exit, no traceback, and a project left as it was: every file hashed by
the test before and after, and the snapshot refs and git index compared.

The faults are real, as the kernel produces them for root too:
- full disk: a file-size limit on the command (`RLIMIT_FSIZE`, inherited by git,
  DVC and the notebook kernel), with SIGXFSZ ignored so that a write past the
  limit fails with EFBIG as a full disk fails with ENOSPC;
- read-only directory: the immutable attribute (`chattr +i`), which stops root;
  always removed again, even when the test fails;
- missing directory: the directory deleted.

Not compared, because they are records and caches rather than state: mlvs's log
and hash cache, DVC's lock files, git's loose objects (unreferenced ones are
invisible; the refs are compared) and the stat data of git's index (its entries
are compared). SQLite rolls back its own interrupted write the next time the
MLflow database is opened, so the test opens it before hashing.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, clean_env, copy_workspace, git, mlvs, tree_hashes

NOT_STATE = (".mlvs/logs/", ".mlvs/hashes.sqlite", ".git/objects/", ".git/index", ".dvc/tmp/")
TRAIN_CSV = "data/processed/train.csv"
# Smaller than every data and model file, larger than the journal and the refs.
SMALL = 10_000
# Larger than the data and model files, smaller than the MLflow database.
BELOW_DATABASE = 100_000


def _chattr_works(directory: Path) -> bool:
    probe = directory / "probe"
    probe.write_text("x")
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True)
        if done.returncode != 0:
            return False
        try:
            probe.write_text("y")
        except PermissionError:
            return True
        return False
    except FileNotFoundError:
        return False
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.unlink()


@contextlib.contextmanager
def immutable(root: Path, relatives: tuple[str, ...]) -> Iterator[None]:
    """Make these directories (and what is in them) immutable for the body; always undo it."""
    targets = [str(root / r) for r in relatives]
    try:
        subprocess.run(["chattr", "-R", "+i", *targets], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", *targets], capture_output=True)


def run_limited(root: Path, limit: int | None, *args: str) -> subprocess.CompletedProcess[str]:
    """`mlvs ARGS` in `root`; with `limit`, no file it (or a child) writes may grow past `limit` bytes."""

    def fill_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=fill_disk if limit else None,
    )


def state(root: Path) -> dict[str, str]:
    """What must not change: every file's hash, the snapshot refs, the git index's entries."""
    if (root / "mlflow.db").exists():
        with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls back a hot journal
    hashes = tree_hashes(root, skip=NOT_STATE)
    hashes["(refs)"] = git(root, "for-each-ref", "--format=%(refname) %(objectname)")
    hashes["(index)"] = git(root, "ls-files", "-s")
    return hashes


def _append_rows(root: Path, copies: int = 2) -> None:
    path = root / TRAIN_CSV
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *rows * copies]) + "\n")


def _new_data(root: Path) -> None:
    _append_rows(root, copies=3)  # bytes no snapshot has: the snapshot must store them


def _damage(root: Path) -> None:
    (root / TRAIN_CSV).write_text("customer_id\n1\n")


def _more_trees(root: Path) -> None:
    params = root / "params" / "train.yaml"
    values = yaml.safe_load(params.read_text())
    values["hyperparameters"]["random_forest"]["n_estimators"] += 1
    params.write_text(yaml.safe_dump(values, sort_keys=False))


def _remove(*relatives: str) -> Callable[[Path], None]:
    def remove(root: Path) -> None:
        for relative in relatives:
            shutil.rmtree(root / relative)

    return remove


@dataclass(frozen=True)
class Fault:
    """One command under one fault, and the words its one error line must contain."""

    args: tuple[str, ...]
    says: tuple[str, ...]
    limit: int | None = None
    frozen: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    code: int = 1


FULL_DISK = ("file size limit|disk",)  # `|`: either words will do
READ_ONLY = ("not permitted",)
FAULTS: dict[str, Fault] = {
    # --- a full disk ---------------------------------------------------------------
    "full_disk_snapshot_create": Fault(
        # The new data leaves dvc.lock behind: the snapshot is asked for anyway, to reach its writes.
        ("snapshot", "create", "new", "--allow-unhealthy"),
        ("'new' was not created", *FULL_DISK),
        limit=SMALL,
        prepare=_new_data,
    ),
    "full_disk_rollback": Fault(
        ("rollback", "base"), ("nothing was rolled back", *FULL_DISK), limit=SMALL
    ),
    "full_disk_recover": Fault(
        ("recover",), ("`mlvs recover` could not finish", *FULL_DISK), limit=SMALL, prepare=_damage
    ),
    "full_disk_pipeline": Fault(
        ("pipeline",),
        ("pipeline could not write", *FULL_DISK),
        limit=BELOW_DATABASE,
        prepare=_more_trees,
    ),
    "full_disk_run": Fault(
        ("run", "01_prepare"), ("`mlvs run` could not finish", *FULL_DISK), limit=BELOW_DATABASE
    ),
    "full_disk_drill": Fault(
        ("drill", "data_deleted_file"),
        ("`mlvs drill` could not finish", *FULL_DISK),
        limit=BELOW_DATABASE,
    ),
    # --- a read-only (immutable) directory ------------------------------------------
    "read_only_git_objects_snapshot_create": Fault(
        ("snapshot", "create", "new"), ("git", READ_ONLY[0]), frozen=(".git/objects",)
    ),
    "read_only_data_rollback": Fault(
        ("rollback", "base"),
        (
            "could not be completed",
            READ_ONLY[0],
            TRAIN_CSV,
            "the state before it was restored and verified",
        ),
        frozen=("data/processed",),
    ),
    "read_only_data_recover": Fault(
        ("recover",),
        ("`mlvs recover` could not finish", *READ_ONLY, "data/processed"),
        frozen=("data/processed",),
        prepare=_damage,
    ),
    "read_only_models_pipeline": Fault(
        ("pipeline",),
        ("pipeline could not write", *READ_ONLY, "models/"),
        frozen=("models",),
        prepare=_more_trees,
    ),
    # --- a missing directory --------------------------------------------------------
    "missing_cache_and_remote_rollback": Fault(
        ("rollback", "base"),
        ("missing or corrupt in both", "nothing was changed"),
        prepare=_remove(".dvc/cache", ".mlvs/dvc-remote"),
    ),
    "missing_dvc_pipeline": Fault(
        ("pipeline",), ("not a DVC repository", "dvc init"), prepare=_remove(".dvc"), code=2
    ),
    "missing_notebooks_run": Fault(
        ("run", "01_prepare"),
        ("not one of this project's notebooks",),
        prepare=_remove("notebooks"),
        code=2,
    ),
    "missing_notebooks_drill": Fault(
        ("drill", "data_deleted_file"),
        ("not one of this project's notebooks",),
        prepare=_remove("notebooks"),
        code=2,
    ),
    "missing_git_snapshot_create": Fault(
        ("snapshot", "create", "new"),
        ("not a git repository", "git init"),
        prepare=_remove(".git"),
        code=2,
    ),
}


@pytest.fixture(scope="module")
def template(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained workspace plus snapshot `base`, whose training data differs from the current data."""
    root = tmp_path_factory.mktemp("disk-faults") / "ws"
    copy_workspace(_trained_template, root)
    original = (root / TRAIN_CSV).read_bytes()
    _append_rows(root)
    mlvs(root, "snapshot", "create", "base", "--allow-unhealthy", check=True)
    (root / TRAIN_CSV).write_bytes(original)
    return root


@pytest.fixture(scope="module")
def chattr(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not _chattr_works(tmp_path_factory.mktemp("chattr")):
        pytest.skip("this file system or user cannot set the immutable attribute (chattr +i)")


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_a_command_that_cannot_write_fails_cleanly_and_changes_nothing(
    name: str, template: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fault = FAULTS[name]
    if fault.frozen:
        request.getfixturevalue("chattr")
    root = copy_workspace(template, tmp_path / "ws")
    if fault.prepare is not None:
        fault.prepare(root)
    before = state(root) if (root / ".git").is_dir() else tree_hashes(root, skip=NOT_STATE)
    with immutable(root, fault.frozen) if fault.frozen else contextlib.nullcontext():
        result = run_limited(root, fault.limit, *fault.args)
    after = state(root) if (root / ".git").is_dir() else tree_hashes(root, skip=NOT_STATE)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == fault.code, output
    errors = [
        line for line in result.stderr.splitlines() if line.startswith(("mlvs: error:", "Error:"))
    ]
    assert len(errors) == 1, result.stderr
    for words in fault.says:
        assert any(alternative.lower() in errors[0].lower() for alternative in words.split("|")), (
            errors[0]
        )
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the command changed {changed}"
    leftovers = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mlvs-tmp"))
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_the_faults_cover_every_command_that_writes() -> None:
    commands = {
        fault.args[0] if fault.args[0] != "snapshot" else "snapshot create"
        for fault in FAULTS.values()
    }
    assert commands >= {"run", "pipeline", "snapshot create", "rollback", "recover", "drill"}
    kinds = {name.split("_")[0] + "_" + name.split("_")[1] for name in FAULTS}
    assert {"full_disk", "read_only", "missing_cache"} <= kinds
