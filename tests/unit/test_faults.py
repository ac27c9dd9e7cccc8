"""Fault points: one name per place, armed by one environment variable per effect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mlvs.testing.faults import InjectedFault, armed, fault_point

PROJECT_SOURCE = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def unarmed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLVS_FAILPOINT", "MLVS_FAULT", "MLVS_PAUSE", "MLVS_PAUSE_RELEASE"):
        monkeypatch.delenv(name, raising=False)


def test_an_unarmed_point_does_nothing() -> None:
    fault_point("train:evaluate")


def test_a_point_armed_with_mlvs_fault_raises_an_injected_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in armed("train:evaluate").items():
        monkeypatch.setenv(name, value)

    fault_point("train:train")  # another point stays quiet
    with pytest.raises(InjectedFault, match="injected fault at 'train:evaluate'"):
        fault_point("train:evaluate")


def test_a_paused_point_waits_until_its_release_file_appears(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    monkeypatch.setenv("MLVS_PAUSE", "rollback:staged")
    monkeypatch.setenv("MLVS_PAUSE_RELEASE", str(release))
    monkeypatch.setenv("MLVS_PAUSE_SECONDS", "30")
    timer = threading.Timer(0.3, release.touch)
    timer.start()

    started = time.monotonic()
    fault_point("rollback:staged")
    waited = time.monotonic() - started

    timer.join()
    assert 0.25 <= waited < 10


def test_a_paused_point_says_that_it_waits_beside_its_release_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    monkeypatch.setenv("MLVS_PAUSE", "deploy:gated")
    monkeypatch.setenv("MLVS_PAUSE_RELEASE", str(release))
    monkeypatch.setenv("MLVS_PAUSE_SECONDS", "30")
    seen: list[list[str]] = []

    def look_then_release() -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        release.touch()

    timer = threading.Timer(0.3, look_then_release)
    timer.start()
    fault_point("deploy:gated")
    timer.join()

    assert seen == [[f"release.{os.getpid()}.waiting"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]  # gone once released


def test_a_paused_point_gives_up_after_its_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLVS_PAUSE", "snapshot:stored")
    monkeypatch.setenv("MLVS_PAUSE_SECONDS", "0.2")

    started = time.monotonic()
    fault_point("snapshot:stored")

    assert 0.15 <= time.monotonic() - started < 5


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_failpoint_kills_the_process_at_once() -> None:
    child = textwrap.dedent(
        """
        from mlvs.testing.faults import fault_point
        fault_point("snapshot:captured")
        print("before", flush=True)
        fault_point("snapshot:committed")
        print("after", flush=True)
        """
    )
    python_path = os.pathsep.join(filter(None, [str(PROJECT_SOURCE), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": python_path, "MLVS_FAILPOINT": "snapshot:committed"},
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["before"]
