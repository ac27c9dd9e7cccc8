"""The room the pipeline reserves for undoing a failed stage (`mlvs.state.room`)."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

from mlvs.paths import ProjectPaths
from mlvs.state.room import reserve_room, room_path


def test_the_room_is_allocated_up_front_and_released_once(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    stale = room_path(paths)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a killed pipeline")
    room = reserve_room(paths, needed=3 << 20)
    held = room_path(paths).stat()
    assert held.st_size == 3 << 20
    assert held.st_blocks * 512 >= 3 << 20  # blocks taken, not a sparse file
    room.release()
    room.release()
    assert not room_path(paths).exists()


def test_a_file_size_limit_is_not_a_full_disk_and_reserves_nothing(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from mlvs.paths import ProjectPaths; "
        "from mlvs.state.room import reserve_room; "
        "room = reserve_room(ProjectPaths(Path(sys.argv[1])), needed=4 << 20); "
        "print(room.path)"
    )

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        preexec_fn=limited,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    assert not room_path(ProjectPaths(tmp_path)).exists()
