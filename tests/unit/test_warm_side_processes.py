"""Side processes forked warm: one process imports once, each `mlvs run` below gets a fork of it.

The warm process is started here as `mlvs pipeline` starts it, and asked through the same
variable; what the side process sees (its directory, its environment, its parent) is read
back from inside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlvs.backends.kernel import template_directory
from mlvs.sidecar import (
    WARM_IDENTITY,
    Sidecar,
    WarmSideProcesses,
    warm_side_processes_supported,
)

pytestmark = pytest.mark.skipif(
    not warm_side_processes_supported(), reason="side processes are forked warm on Linux only"
)


@pytest.fixture
def warm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WarmSideProcesses]:
    """A warm process, and this process set up as a stage `mlvs pipeline` runs."""
    with template_directory() as directory, WarmSideProcesses(directory, ("wave",)) as process:
        for name, value in process.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        yield process


def _ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_side_process_forked_warm_works_in_the_askers_directory_and_environment(
    warm: WarmSideProcesses,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLVS_TEST_MARKER", "only-in-the-asker")
    with Sidecar() as side:
        assert side.call(os.getcwd) == str(tmp_path)
        # Its warnings reach the asker's stderr, as a spawned side process's do.
        side.call(os.write, 2, b"said by the side process\n")
        assert "said by the side process" in capfd.readouterr().err
        assert side.call(os.getenv, "MLVS_TEST_MARKER") == "only-in-the-asker"
        pid = side.call(os.getpid)
        # A fork of the warm process, not a process this one spawned.
        assert side.call(os.getppid) == warm._process.pid != os.getpid()
        assert pid != warm._process.pid
    deadline = time.monotonic() + 10
    while not _ended(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ended(pid), "the side process outlived its Sidecar"


def test_each_stage_gets_a_side_process_of_its_own_from_one_warm_process(
    warm: WarmSideProcesses,
) -> None:
    pids = []
    for _ in range(2):
        with Sidecar() as side:
            pids.append((side.call(os.getpid), side.call(os.getppid)))
    (first, parent_1), (second, parent_2) = pids
    assert first != second and parent_1 == parent_2 == warm._process.pid


def test_a_failing_call_raises_in_the_asker_as_from_a_spawned_side_process(
    warm: WarmSideProcesses,
) -> None:
    with Sidecar() as side, pytest.raises(FileNotFoundError):
        side.call(os.stat, "/nonexistent/mlvs-warm")


def test_a_warm_process_of_another_interpreter_is_not_asked(warm: WarmSideProcesses) -> None:
    identity = Path(warm.directory) / WARM_IDENTITY
    recorded = json.loads(identity.read_text())
    recorded["interpreter"]["executable"] = "/opt/other/python3"
    identity.write_text(json.dumps(recorded))
    with Sidecar() as side:
        assert side.call(os.getppid) == os.getpid()  # spawned, as without a warm process


def test_a_directory_other_users_can_enter_is_not_trusted(warm: WarmSideProcesses) -> None:
    os.chmod(warm.directory, 0o755)
    try:
        with Sidecar() as side:
            assert side.call(os.getppid) == os.getpid()
    finally:
        os.chmod(warm.directory, 0o700)


def test_a_stopped_warm_process_leaves_the_asker_spawning_its_own(
    warm: WarmSideProcesses, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    warm.close()
    with Sidecar() as side:
        assert side.call(os.getppid) == os.getpid()
        assert side.call(os.getcwd) == str(tmp_path)


def test_the_warm_process_ends_with_the_command_that_started_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from mlvs.sidecar import WarmSideProcesses
        warm = WarmSideProcesses(sys.argv[1], ())
        print(warm._process.pid, flush=True)
        time.sleep(600)
        """
    )
    directory = tmp_path / "warm"
    directory.mkdir(mode=0o700)
    command = subprocess.Popen(
        [sys.executable, "-c", script, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert command.stdout is not None
        warm_pid = int(command.stdout.readline())
        assert not _ended(warm_pid)
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()
    deadline = time.monotonic() + 10
    while not _ended(warm_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ended(warm_pid), "the warm process outlived the command that started it"


def _importing_leaves_a_mark(modules: Path, mark: Path) -> str:
    """A module, importable by the warm process, that creates `mark` when imported."""
    (modules / "leaves_a_mark.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    return "leaves_a_mark"


@pytest.mark.parametrize("eager", [True, False])
def test_an_eager_warm_process_imports_before_anyone_asks_and_a_lazy_one_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, eager: bool
) -> None:
    mark = tmp_path / "imported"
    module = _importing_leaves_a_mark(tmp_path, mark)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned warm process starts with this path
    with template_directory() as directory, WarmSideProcesses(directory, (module,), eager=eager):
        deadline = time.monotonic() + (30 if eager else 3)
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists() is eager
