"""What a drill compares to call its recovery byte-identical."""

from __future__ import annotations

from pathlib import Path

from mlvs.ops.drill.drill import tracked_hashes


def test_bytecode_and_the_virtual_environment_are_not_project_content(tmp_path: Path) -> None:
    for relative in (
        "mlvs/core.py",
        "data/raw/a.csv",
        "mlvs/__pycache__/core.cpython-311.pyc",
        ".venv/lib/site.py",
        "notebooks/__pycache__/x.pyc",
        ".mlvs/journal.json",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(relative.encode())

    before = tracked_hashes(tmp_path)
    (tmp_path / "mlvs" / "__pycache__" / "runner.cpython-311.pyc").write_bytes(
        b"compiled on first import"
    )
    (tmp_path / "data" / "raw" / "a.csv").write_bytes(b"changed")

    assert sorted(before) == ["data/raw/a.csv", "mlvs/core.py"]
    after = tracked_hashes(tmp_path)
    assert sorted(after) == ["data/raw/a.csv", "mlvs/core.py"]
    assert (
        after["data/raw/a.csv"] != before["data/raw/a.csv"]
        and after["mlvs/core.py"] == before["mlvs/core.py"]
    )
