"""A journal under `.mlvs/` is read back as untrusted input: a bad one is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlvs.errors import IntegrityError
from mlvs.paths import ProjectPaths
from mlvs.state.journal import Journal

GOOD = {
    "operation": "rollback",
    "data": {"target": "A"},
    "step": None,
    "steps": [],
    "pid": 1,
    "started_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:00:00+00:00",
}


def _write(tmp_path: Path, *lines: str) -> Journal:
    paths = ProjectPaths(tmp_path)
    paths.state.mkdir(parents=True)
    (paths.state / "journal.json").write_text("".join(line + "\n" for line in lines))
    return Journal(paths)


def test_a_good_journal_is_read_with_its_steps(tmp_path: Path) -> None:
    journal = _write(tmp_path, json.dumps(GOOD), json.dumps({"step": "staged", "data": {"n": 1}}))
    record = journal.current()
    assert record is not None
    assert record["steps"] == ["staged"] and record["data"] == {"target": "A", "n": 1}


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        ([json.dumps({k: v for k, v in GOOD.items() if k != "steps"})], "field 'steps'"),
        ([json.dumps(GOOD | {"steps": "staged"})], "field 'steps'"),
        ([json.dumps(GOOD | {"steps": [1]})], "field 'steps'"),
        ([json.dumps(GOOD | {"data": []})], "field 'data'"),
        ([json.dumps(GOOD | {"operation": 7})], "field 'operation'"),
        ([json.dumps([GOOD])], "first line is not an object"),
        ([json.dumps(GOOD), json.dumps({"data": {}})], "line 2"),
        ([json.dumps(GOOD), json.dumps({"step": "x", "data": [1]})], "line 2 field 'data'"),
        (["[" * 100_000], "unreadable"),
        (["{not json"], "unreadable"),
    ],
)
def test_a_malformed_journal_is_one_error_naming_what_is_wrong(
    tmp_path: Path, lines: list[str], named: str
) -> None:
    journal = _write(tmp_path, *lines)
    with pytest.raises(IntegrityError) as refused:
        journal.current()
    message = str(refused.value)
    assert named in message and "delete it and run `mlvs verify`" in message
    assert "\n" not in message
