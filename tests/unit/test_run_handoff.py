"""The MLflow run handed to a kernel that started before the run existed (`mlvs run`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mlvs.backends.mlflow.handoff import RunHandoff, handed_run_id
from mlvs.errors import ExternalToolError

RUN = "0123456789abcdef0123456789abcdef"


def test_the_kernel_waits_for_the_run_and_reads_its_id(tmp_path: Path) -> None:
    handoff = RunHandoff(tmp_path / "running" / "1.run")
    release = threading.Event()

    def create() -> tuple[str, str]:
        release.wait(5)
        return ("before", RUN)

    handoff.relay(create, lambda created: created[1])
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(handed_run_id(handoff.path)))
    reader.start()
    time.sleep(0.2)
    assert got == []  # still waiting: the run does not exist yet
    release.set()
    reader.join(5)
    assert got == [RUN]
    assert handoff.result() == ("before", RUN)
    handoff.close()
    assert not handoff.path.exists()


def test_a_run_that_could_not_be_created_fails_both_sides_with_its_reason(tmp_path: Path) -> None:
    handoff = RunHandoff(tmp_path / "1.run")

    def create() -> str:
        raise ExternalToolError("database is locked\nsecond line")

    handoff.relay(create, str)
    with pytest.raises(ExternalToolError, match="could not be created: database is locked second"):
        handed_run_id(handoff.path)
    with pytest.raises(ExternalToolError, match="database is locked"):
        handoff.result()
    handoff.close()


@pytest.mark.parametrize(
    "content",
    ["run 123\n", "run ../../etc\n", f"RUN {RUN}\n", f"run {RUN.upper()}\n", "\n", "\x00\xff\n"],
)
def test_anything_but_a_run_id_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "1.run"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ExternalToolError, match="does not name an MLflow run"):
        handed_run_id(path)


def test_a_stale_handoff_file_is_emptied_before_a_new_run(tmp_path: Path) -> None:
    path = tmp_path / "1.run"
    path.write_text(f"run {RUN}\n")
    RunHandoff(path)
    assert path.read_text() == ""


def test_a_handoff_file_gone_is_a_failure_not_a_wait(tmp_path: Path) -> None:
    # What the command does when not even the failure's reason can be written (a full disk).
    with pytest.raises(ExternalToolError, match="could not be created"):
        handed_run_id(tmp_path / "never-written.run")
