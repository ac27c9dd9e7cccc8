"""The state lock that serialises state-changing commands, and the crash journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlvs.errors import IntegrityError, LockTimeoutError, MlvsError
from mlvs.paths import ProjectPaths
from mlvs.state.journal import Journal
from mlvs.state.lock import HOLDER_FILE, locked, state_lock

PROJECT_SOURCE = Path(__file__).resolve().parents[2]


@pytest.fixture
def paths(tmp_path: Path) -> ProjectPaths:
    return ProjectPaths(tmp_path / "project")


def hold_lock_in_thread(paths: ProjectPaths) -> tuple[threading.Thread, threading.Event]:
    """Start a thread that holds the lock until the returned event is set."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with state_lock(paths, timeout=5):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(5)
    return thread, release


# --- state_lock -------------------------------------------------------------------------


def test_state_lock_creates_the_state_directory(paths: ProjectPaths) -> None:
    with state_lock(paths):
        assert paths.state.is_dir()


def test_a_second_process_times_out_while_the_lock_is_held(paths: ProjectPaths) -> None:
    child = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from mlvs.paths import ProjectPaths
        from mlvs.state.lock import state_lock
        with state_lock(ProjectPaths(Path(sys.argv[1])), timeout=5):
            print("held", flush=True)
            sys.stdin.read()  # hold until the parent closes our stdin
        """
    )
    python_path = os.pathsep.join(filter(None, [str(PROJECT_SOURCE), os.environ.get("PYTHONPATH")]))
    holder = subprocess.Popen(
        [sys.executable, "-c", child, str(paths.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": python_path},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

        with pytest.raises(LockTimeoutError), state_lock(paths, timeout=0.2):
            pytest.fail("the lock was granted while another process held it")
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        assert holder.wait(10) == 0
        holder.stdout.close()


def test_a_second_thread_times_out_while_the_lock_is_held(paths: ProjectPaths) -> None:
    thread, release = hold_lock_in_thread(paths)
    try:
        with pytest.raises(LockTimeoutError), state_lock(paths, timeout=0.2):
            pytest.fail("the lock was granted while another thread held it")
    finally:
        release.set()
        thread.join(5)


def test_the_timeout_message_names_the_lock_and_what_to_do(paths: ProjectPaths) -> None:
    thread, release = hold_lock_in_thread(paths)
    try:
        with pytest.raises(LockTimeoutError) as caught, state_lock(paths, timeout=0.05):
            pass
    finally:
        release.set()
        thread.join(5)

    message = str(caught.value)
    assert "another mlvs command is changing this project" in message
    assert str(paths.state / "state.lock") in message
    assert "wait for it to finish or try again" in message


def test_the_lock_is_free_again_after_the_block(paths: ProjectPaths) -> None:
    with state_lock(paths):
        pass

    thread, release = hold_lock_in_thread(paths)  # would time out if still held
    release.set()
    thread.join(5)


def test_the_lock_is_released_when_the_block_raises(paths: ProjectPaths) -> None:
    with pytest.raises(ValueError), state_lock(paths):
        raise ValueError("boom")

    with state_lock(paths, timeout=0.2):
        pass


def test_nested_use_in_one_thread_reenters_the_lock(paths: ProjectPaths) -> None:
    with state_lock(paths, timeout=0.2):
        with state_lock(paths, timeout=0.2):
            pass
        # still held by the outer block
        thread_result: list[BaseException] = []

        def try_lock() -> None:
            try:
                with state_lock(paths, timeout=0.1):
                    pass
            except LockTimeoutError as error:
                thread_result.append(error)

        other = threading.Thread(target=try_lock)
        other.start()
        other.join(5)
        assert len(thread_result) == 1


# --- sharing the lock with the processes the holder starts -------------------------------

# Tries the lock for 0.2 s and prints what happened; with an argument, first starts itself again
# as a child and prints what that child saw (a grandchild of whoever started it).
TRY_LOCK = textwrap.dedent(
    """
    import subprocess, sys
    from pathlib import Path
    from mlvs.errors import LockTimeoutError
    from mlvs.paths import ProjectPaths
    from mlvs.state.lock import state_lock
    if len(sys.argv) > 2:
        print(subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], capture_output=True,
                             text=True).stdout.strip())
        sys.exit()
    try:
        with state_lock(ProjectPaths(Path(sys.argv[1])), timeout=0.2):
            with state_lock(ProjectPaths(Path(sys.argv[1])), timeout=0.2):
                print("inside")
    except LockTimeoutError:
        print("timed out")
    """
)

# Holds the lock and prints the token it shares, until its stdin closes.
HOLD_LOCK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from mlvs.paths import ProjectPaths
    from mlvs.state.lock import state_lock
    with state_lock(ProjectPaths(Path(sys.argv[1])), timeout=5):
        print(os.environ["MLVS_LOCK_TOKEN"], flush=True)
        sys.stdin.read()
    """
)


def python_env(**changes: str | None) -> dict[str, str]:
    """This process's environment with the project importable, and `changes` (None removes one)."""
    python_path = os.pathsep.join(filter(None, [str(PROJECT_SOURCE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    for name, value in changes.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def try_lock_in_child(paths: ProjectPaths, grandchild: bool = False, **env: str | None) -> str:
    """What a child process (or its child) saw when it tried the lock: "inside" or "timed out"."""
    args = [sys.executable, "-c", TRY_LOCK, str(paths.root)] + ([TRY_LOCK] if grandchild else [])
    done = subprocess.run(
        args, capture_output=True, text=True, env=python_env(**env), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def other_holder(paths: ProjectPaths) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Another process that holds the lock (not an ancestor of this one), and its token."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(paths.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(MLVS_LOCK_TOKEN=None),
    )
    assert holder.stdout is not None and holder.stdin is not None
    token = holder.stdout.readline().strip()
    assert token, "the holder shared no token"
    yield holder, token
    if holder.poll() is None:
        holder.stdin.close()
        holder.wait(10)


def test_a_process_started_by_the_holder_shares_the_lock(paths: ProjectPaths) -> None:
    with state_lock(paths, timeout=0.2):
        assert try_lock_in_child(paths) == "inside"


def test_a_process_started_by_a_process_the_holder_started_shares_it_too(
    paths: ProjectPaths,
) -> None:
    with state_lock(paths, timeout=0.2):
        assert try_lock_in_child(paths, grandchild=True) == "inside"


def test_a_child_without_the_token_waits_and_times_out(paths: ProjectPaths) -> None:
    with state_lock(paths, timeout=0.2):
        assert try_lock_in_child(paths, MLVS_LOCK_TOKEN=None) == "timed out"


def test_a_forged_token_does_not_open_the_lock(paths: ProjectPaths) -> None:
    with state_lock(paths, timeout=0.2):
        assert try_lock_in_child(paths, MLVS_LOCK_TOKEN="0" * 32) == "timed out"


def test_the_holders_token_does_not_open_it_for_a_process_the_holder_did_not_start(
    paths: ProjectPaths, other_holder: tuple[subprocess.Popen[str], str]
) -> None:
    _, token = other_holder

    assert try_lock_in_child(paths, MLVS_LOCK_TOKEN=token) == "timed out"
    with pytest.raises(LockTimeoutError):
        os.environ["MLVS_LOCK_TOKEN"] = token
        try:
            with state_lock(paths, timeout=0.2):
                pytest.fail("a copied token opened the lock of another process")
        finally:
            del os.environ["MLVS_LOCK_TOKEN"]


def test_the_token_of_a_killed_holder_opens_nothing_later(
    paths: ProjectPaths, other_holder: tuple[subprocess.Popen[str], str]
) -> None:
    holder, stale = other_holder
    holder.kill()
    holder.wait(10)

    with state_lock(paths, timeout=5):  # the kernel released the dead holder's lock
        assert try_lock_in_child(paths, MLVS_LOCK_TOKEN=stale) == "timed out"
    assert try_lock_in_child(paths, MLVS_LOCK_TOKEN=stale) == "inside"  # free: taken as usual


def test_the_token_is_withdrawn_when_the_lock_is_released(paths: ProjectPaths) -> None:
    os.environ.pop("MLVS_LOCK_TOKEN", None)
    with state_lock(paths):
        token = os.environ["MLVS_LOCK_TOKEN"]
        with state_lock(paths):
            assert os.environ["MLVS_LOCK_TOKEN"] == token  # re-entered: the same token
        assert token in (paths.state / HOLDER_FILE).read_text()

    assert "MLVS_LOCK_TOKEN" not in os.environ
    assert not (paths.state / HOLDER_FILE).exists()
    with state_lock(paths):
        assert os.environ["MLVS_LOCK_TOKEN"] != token  # every hold has a token of its own


def test_a_second_thread_of_the_holder_does_not_share_the_lock(paths: ProjectPaths) -> None:
    thread, release = hold_lock_in_thread(paths)
    try:
        assert os.environ.get("MLVS_LOCK_TOKEN")  # published process-wide, for children
        with pytest.raises(LockTimeoutError), state_lock(paths, timeout=0.2):
            pytest.fail("a thread that does not hold the lock entered it")
    finally:
        release.set()
        thread.join(5)


def test_an_operation_marked_locked_holds_the_lock_and_reenters_it(paths: ProjectPaths) -> None:
    @locked
    def operation(paths: ProjectPaths, depth: int) -> str:
        return try_lock_in_child(paths, MLVS_LOCK_TOKEN=None) if depth == 0 else operation(paths, 0)

    assert operation(paths, 1) == "timed out"
    assert try_lock_in_child(paths, MLVS_LOCK_TOKEN=None) == "inside"


# --- Journal -----------------------------------------------------------------------------


def test_a_project_without_a_journal_has_no_current_operation(paths: ProjectPaths) -> None:
    assert Journal(paths).current() is None


def test_a_begun_operation_is_read_back_by_a_fresh_journal(paths: ProjectPaths) -> None:
    Journal(paths).begin("rollback", {"snapshot": "baseline"})

    record = Journal(paths).current()

    assert record is not None
    assert (record["operation"], record["data"], record["step"], record["steps"]) == (
        "rollback",
        {"snapshot": "baseline"},
        None,
        [],
    )


def test_updates_record_the_steps_and_merge_the_data(paths: ProjectPaths) -> None:
    journal = Journal(paths)
    journal.begin("rollback", {"snapshot": "baseline"})

    journal.update("undo-snapshot-taken", undo_snapshot="auto-1")
    journal.update("files-restored", changed=["params/train.yaml"])

    record = Journal(paths).current()
    assert record is not None
    assert record["step"] == "files-restored"
    assert record["steps"] == ["undo-snapshot-taken", "files-restored"]
    assert record["data"] == {
        "snapshot": "baseline",
        "undo_snapshot": "auto-1",
        "changed": ["params/train.yaml"],
    }


def test_clear_forgets_the_operation(paths: ProjectPaths) -> None:
    journal = Journal(paths)
    journal.begin("snapshot", {"name": "baseline"})

    journal.clear()

    assert Journal(paths).current() is None
    journal.clear()  # clearing twice is harmless


def test_begin_refuses_while_an_interrupted_operation_is_recorded(paths: ProjectPaths) -> None:
    Journal(paths).begin("rollback", {"snapshot": "baseline"})

    with pytest.raises(MlvsError, match=r"interrupted 'rollback'.*mlvs recover"):
        Journal(paths).begin("snapshot", {"name": "other"})
    record = Journal(paths).current()
    assert record is not None and record["operation"] == "rollback"


def test_update_without_begin_is_a_programming_error(paths: ProjectPaths) -> None:
    with pytest.raises(RuntimeError):
        Journal(paths).update("files-restored")


def test_the_journal_is_json_lines_with_no_temporary_files_left(paths: ProjectPaths) -> None:
    journal = Journal(paths)
    journal.begin("rollback", {"snapshot": "baseline"})
    journal.update("files-restored", count=3)

    assert sorted(p.name for p in paths.state.iterdir()) == ["journal.json"]
    lines = [json.loads(line) for line in (paths.state / "journal.json").read_text().splitlines()]
    assert lines[0]["operation"] == "rollback" and lines[0]["data"] == {"snapshot": "baseline"}
    assert lines[1]["step"] == "files-restored" and lines[1]["data"] == {"count": 3}


def test_a_step_cut_short_by_a_power_cut_counts_as_not_reached(paths: ProjectPaths) -> None:
    journal = Journal(paths)
    journal.begin("rollback", {"snapshot": "baseline"})
    journal.update("staged", files=1)
    with open(paths.state / "journal.json", "a", encoding="utf-8") as log:
        log.write('{"data": {"files": 2}, "step": "appl')  # no newline: the write never finished

    record = journal.current()

    assert record is not None and record["step"] == "staged" and record["steps"] == ["staged"]
    assert record["data"] == {"snapshot": "baseline", "files": 1}


def test_a_damaged_line_before_the_last_makes_the_journal_unreadable(paths: ProjectPaths) -> None:
    journal = Journal(paths)
    journal.begin("rollback", {"snapshot": "baseline"})
    with open(paths.state / "journal.json", "a", encoding="utf-8") as log:
        log.write('{"step": "sta\n{"step": "applied", "data": {}}\n')

    with pytest.raises(IntegrityError, match=r"journal.*unreadable"):
        journal.current()


def test_an_unreadable_journal_raises_integrity_error(paths: ProjectPaths) -> None:
    paths.state.mkdir(parents=True)
    (paths.state / "journal.json").write_text('{"operation": "rollb')

    with pytest.raises(IntegrityError, match=r"journal.*unreadable"):
        Journal(paths).current()
