"""Hostile bytes in the files mlvs reads back from disk: the findings of `make fuzz`, kept.

Each finding of the fuzzer is replayed here as an example, and each file's checks
run on a few fresh hostile examples (the long run is `make fuzz`). The checks are
`tests/fuzz/hostile_files.py`'s: one clear line or a value that keeps the file's
invariants, and nothing changed inside the project or beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fuzz import hostile_files
from fuzz.hostile_files import VALID_JOURNAL, VALID_LOCK, Sandbox
from hypothesis import HealthCheck, example, given, settings

# A few fresh examples per file in the suite; `make fuzz` runs thousands.
FEW = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
# A hash cache example opens and writes a SQLite database (about 0.2 s): fewer of them.
FEWER = settings(FEW, max_examples=8)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


@FEW
@given(payload=hostile_files.JOURNALS)
# Found by the fuzzer: a journal that is not UTF-8 was a UnicodeDecodeError with a traceback.
@example(payload=b"\x80\n")
@example(payload=VALID_JOURNAL[:-1] + b"\xff\n")
def test_a_hostile_journal_is_read_checked_or_refused_in_one_line(
    sandbox: Sandbox, payload: bytes
) -> None:
    hostile_files.check_journal(sandbox, payload)


@FEW
@given(payload=hostile_files.MANIFESTS)
@example(payload=b"[" * 100_000)
@example(payload=b'{"format": "mlvs-snapshot/1", "files": {"../../outside/owned": {}}}')
def test_a_hostile_manifest_is_read_inside_the_project_or_refused_in_one_line(
    sandbox: Sandbox, payload: bytes
) -> None:
    hostile_files.check_manifest(sandbox, payload)


@FEW
@given(payload=hostile_files.LOCKS)
# Found by the fuzzer: a stage entry that is a list, not a mapping, was an AttributeError.
@example(payload=b"schema: '2.0'\nstages:\n  prepare:\n  - []\n")
@example(payload=b"schema: '2.0'\nstages:\n- prepare\n")
@example(payload=b"schema: '2.0'\nstages:\n  prepare:\n    outs: 7\n")
@example(payload=VALID_LOCK.replace(b"path: data/raw.csv", b"path: ../outside/owned"))
def test_a_hostile_dvc_lock_is_read_inside_the_project_or_refused_in_one_line(
    sandbox: Sandbox, payload: bytes
) -> None:
    hostile_files.check_lock(sandbox, payload)


@FEW
@given(payload=hostile_files.DIR_OBJECTS)
@example(payload=b'[{"md5": "00000000000000000000000000000000", "relpath": "../../outside/owned"}]')
@example(payload=b'[{"md5": "../../../outside/owned", "relpath": "x"}]')
@example(payload=b'{"relpath": "x"}')
def test_a_hostile_dir_object_is_read_inside_the_project_or_refused_in_one_line(
    sandbox: Sandbox, payload: bytes
) -> None:
    hostile_files.check_dir_object(sandbox, payload)


@FEWER
@given(record=hostile_files.HASH_RECORDS)
@example(record=("md5", "../../outside/owned", None))
@example(record=("both", 7, b"\x00" * 64))
def test_a_hostile_hash_cache_record_is_never_handed_on(
    sandbox: Sandbox, record: tuple[Any, Any, Any]
) -> None:
    hostile_files.check_hash_cache_record(sandbox, record)


@FEWER
@given(payload=hostile_files.st.binary(max_size=400))
@example(payload=b"SQLite format 3\x00" + b"\xff" * 200)
def test_a_hash_cache_that_is_not_a_database_still_gives_real_hashes(
    sandbox: Sandbox, payload: bytes
) -> None:
    hostile_files.check_hash_cache_file(sandbox, payload)
