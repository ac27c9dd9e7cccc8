"""Hostile bytes for the files mlvs parses from disk: the journal, a snapshot manifest, the hash
cache, `dvc.lock` and DVC `.dir` objects.

Each `check_*` function puts one payload where mlvs would find that file in a small
sandbox project (with a directory beside it standing for the rest of the machine),
runs the code that reads it, and holds the outcome to the trust rules:

- either a value that keeps the file's invariants (every path it names stays inside
  the project, every object name is a digest, a hash is the file's real hash), or
  an `MlvsError` whose message is one line: never another exception (a traceback);
- nothing changed inside the sandbox or beside it (the file under test aside, and the
  hash cache's database, which a corrupt copy of is rebuilt by design).

`hostile(valid)` draws payloads from a valid file: random bytes, byte-level damage,
and structural damage (a value anywhere in the document swapped for a hostile one:
an escaping path, a huge number, deep nesting, the wrong type). `make fuzz` runs the
`fuzz_*` targets for a bounded time; `tests/reliability/test_fuzz_findings.py` runs a
few examples of each and replays every finding.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from hypothesis import strategies as st

from mlvs.backends.dvc.hashcache import HASH_DB, HashCache
from mlvs.backends.dvc.lockfile import lock_document
from mlvs.backends.dvc.objects import ObjectStore, object_relpath
from mlvs.backends.dvc.outputs import lock_hashes
from mlvs.errors import MlvsError
from mlvs.ops.recorded import recorded_files
from mlvs.ops.snapshot.manifest import Manifest
from mlvs.paths import ProjectPaths
from mlvs.state.journal import JOURNAL_FILE, Journal

DATA = b"id,churn\n1,0\n2,1\n"
DATA_MD5 = hashlib.md5(DATA, usedforsecurity=False).hexdigest()
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
DIR_LISTING = [{"md5": DATA_MD5, "relpath": "part.csv"}]

VALID_JOURNAL = (
    json.dumps(
        {
            "operation": "rollback",
            "data": {"target": "first", "kept": {"data/raw.csv": DATA_SHA256}},
            "step": None,
            "steps": [],
            "pid": 1,
            "started_at": "2026-01-01T00:00:00+00:00",
            "updated_at": "2026-01-01T00:00:00+00:00",
        }
    )
    + "\n"
    + json.dumps({"step": "staged", "data": {"added_cache": [DATA_MD5]}})
    + "\n"
).encode()

VALID_LOCK = yaml.safe_dump(
    {
        "schema": "2.0",
        "stages": {
            "prepare": {
                "cmd": "mlvs run notebooks/01_prepare.ipynb",
                "outs": [
                    {"path": "data/raw.csv", "hash": "md5", "md5": DATA_MD5, "size": len(DATA)},
                    {"path": "data/parts", "hash": "md5", "md5": "", "size": len(DATA)},
                ],
            }
        },
    },
    sort_keys=False,
).encode()

VALID_MANIFEST = (
    json.dumps(
        {
            "format": "mlvs-snapshot/1",
            "name": "first",
            "message": "",
            "created_at": "2026-01-01T00:00:00.000000Z",
            "automatic": False,
            "git": {"base_commit": "a" * 40, "branch": "main"},
            "outputs": {
                "data/raw.csv": {
                    "part": "data",
                    "stage": "prepare",
                    "cache": True,
                    "kind": "file",
                    "md5": DATA_MD5,
                    "size": len(DATA),
                }
            },
            "files": {
                "data/raw.csv": {
                    "md5": DATA_MD5,
                    "sha256": DATA_SHA256,
                    "size": len(DATA),
                    "output": "data/raw.csv",
                }
            },
            "params": {"prepare": {"n_rows": 3}},
            "metrics": {"test_f1": 0.5},
        }
    )
    + "\n"
).encode()

HOSTILE_TEXT = [
    "../../outside/owned",
    "../outside",
    "/etc/passwd",
    "..",
    ".",
    "",
    "data/../../outside/x",
    "C:\\Windows\\x",
    "~/x",
    "a\x00b",
    "x" * 5000,
    "\u202e\ufeff",
    "0" * 32,
    "0" * 31 + "/",
    DATA_MD5 + ".dir",
    "../" * 40 + "etc/passwd",
    "data/raw.csv\n",
    "!!python/object/apply:os.system",
]
HOSTILE_VALUES: list[Any] = [
    *HOSTILE_TEXT,
    None,
    True,
    0,
    -1,
    2**63,
    2**64 + 1,
    1e308,
    float("inf"),
    float("nan"),
    [],
    {},
    [None],
    {"": None},
    {"../x": "y"},
]


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUE = st.one_of(
    st.sampled_from(HOSTILE_VALUES),
    st.text(max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([60, 900, 5000]).map(_deep),
)


def _slots(node: Any, trail: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON-like document (the path of keys and indexes to it)."""
    found = [trail]
    if len(trail) > 12:  # deep enough to reach every field of a valid file; no deeper
        return found
    if isinstance(node, dict):
        for key, value in node.items():
            found += _slots(value, (*trail, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _slots(value, (*trail, index))
    return found


@st.composite
def damaged_document(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one to three values replaced, removed, or keys added, hostile ones."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        trail = draw(st.sampled_from(_slots(doc)))
        if not trail:
            doc = draw(HOSTILE_VALUE)
            continue
        parent = doc
        for step in trail[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove":
            del parent[trail[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(HOSTILE_TEXT))] = draw(HOSTILE_VALUE)
        else:
            parent[trail[-1]] = draw(HOSTILE_VALUE)
    return doc


def _json_bytes(document: Any) -> bytes:
    try:
        return json.dumps(document).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        return b"[" * 100_000


def _yaml_bytes(document: Any) -> bytes:
    try:
        return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (RecursionError, yaml.YAMLError, ValueError):
        return b"[" * 100_000


@st.composite
def damaged_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` cut short, with bytes flipped, a run of it repeated, or noise put in."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["truncate", "flip", "insert", "repeat", "delete"]))
        if action == "truncate":
            del data[where:]
        elif action == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[where:where] = draw(
                st.one_of(
                    st.binary(max_size=20),
                    st.sampled_from(
                        [b"\x00", b"\n", b"\xff\xfe", b"&a [*a, *a]", b"!!binary", b"[" * 3000]
                    ),
                )
            )
        elif action == "repeat":
            end = min(len(data), where + draw(st.integers(1, 64)))
            data[where:where] = bytes(data[where:end]) * draw(st.integers(2, 50))
        else:
            del data[where : where + draw(st.integers(1, 16))]
    return bytes(data)


def hostile(
    valid: bytes, document: Any, encode: Callable[[Any], bytes]
) -> st.SearchStrategy[bytes]:
    """Payloads drawn from a valid file: noise, damaged bytes, and damaged structure."""
    return st.one_of(
        st.binary(max_size=300),
        damaged_bytes(valid),
        damaged_document(document).map(encode),
    )


JOURNALS = st.one_of(
    hostile(VALID_JOURNAL, json.loads(VALID_JOURNAL.splitlines()[0]), _json_bytes).map(
        lambda first: first + b"\n"
    ),
    damaged_document(json.loads(VALID_JOURNAL.splitlines()[1])).map(
        lambda update: VALID_JOURNAL + _json_bytes(update) + b"\n"
    ),
    damaged_bytes(VALID_JOURNAL),
)
MANIFESTS = hostile(VALID_MANIFEST, json.loads(VALID_MANIFEST), _json_bytes)
LOCKS = hostile(VALID_LOCK, yaml.safe_load(VALID_LOCK), _yaml_bytes)
DIR_OBJECTS = hostile(json.dumps(DIR_LISTING).encode(), DIR_LISTING, _json_bytes)
# A hash cache record: the stat key of the real file (so the lookup hits), hostile digests.
HASH_RECORDS = st.tuples(
    st.one_of(st.sampled_from(["md5", "sha256", "both"]), st.none()),
    HOSTILE_VALUE,
    HOSTILE_VALUE,
)


# --- the sandbox -----------------------------------------------------------------------


class Sandbox:
    """A small project (`ws/`) and a directory beside it (`outside/`), in a temporary directory."""

    def __init__(self) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="mlvs-hostile-"))
        self.root = self.top / "ws"
        self.paths = ProjectPaths(self.root)
        (self.top / "outside").mkdir()
        (self.top / "outside" / "owned").write_text("the rest of the machine\n")
        (self.root / ".dvc" / "cache").mkdir(parents=True)
        (self.root / ".dvc" / "config").write_text(
            "[core]\n    remote = local\n['remote \"local\"']\n    url = ../.mlvs/dvc-remote\n"
        )
        (self.root / "data" / "parts").mkdir(parents=True)
        (self.root / "data" / "raw.csv").write_bytes(DATA)
        (self.root / "data" / "parts" / "part.csv").write_bytes(DATA)
        (self.root / "dvc.lock").write_bytes(VALID_LOCK)
        self.paths.state.mkdir(parents=True)
        cached = self.root / ".dvc" / "cache" / object_relpath(DATA_MD5)
        cached.parent.mkdir(parents=True)
        cached.write_bytes(DATA)

    def close(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)

    def hashes(self, leave_out: tuple[Path, ...]) -> dict[str, str]:
        """Every file of the sandbox (but `leave_out`), with its SHA-256 and mode."""
        found = {}
        for path in sorted(self.top.rglob("*")):
            if any(path == p or p in path.parents for p in leave_out):
                continue
            rel = path.relative_to(self.top).as_posix()
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                found[rel] = (
                    f"{hashlib.sha256(path.read_bytes()).hexdigest()}:{path.stat().st_mode:o}"
                )
            else:
                found[rel] = "dir"
        return found


def refused_in_one_line(error: MlvsError) -> None:
    """A refusal the CLI prints as one clear line."""
    message = str(error)
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "Traceback" not in message, message


def stays_inside(root: Path, relative: str) -> None:
    """A path a parser handed on: relative, and inside the project once resolved."""
    pure = PurePosixPath(relative)
    assert not pure.is_absolute() and ".." not in pure.parts, relative
    assert (root / relative).resolve().is_relative_to(root.resolve()), relative


def _unchanged(sandbox: Sandbox, leave_out: tuple[Path, ...], run: Callable[[], None]) -> None:
    before = sandbox.hashes(leave_out)
    try:
        run()
    except MlvsError as error:
        refused_in_one_line(error)
    assert sandbox.hashes(leave_out) == before, "the parser changed files"


# --- one check per file ---------------------------------------------------------------


def check_journal(sandbox: Sandbox, payload: bytes) -> None:
    """The journal under `.mlvs/`: read as a checked record, or refused in one line."""
    location = sandbox.paths.state / JOURNAL_FILE
    location.write_bytes(payload)

    def read() -> None:
        record = Journal(sandbox.paths).current()
        if record is None:
            return
        assert isinstance(record["operation"], str) and isinstance(record["data"], dict)
        assert all(isinstance(step, str) for step in record["steps"])

    _unchanged(sandbox, (location,), read)


def check_manifest(sandbox: Sandbox, payload: bytes) -> None:
    """A snapshot's `.mlvs-snapshot.json`: every path it names stays inside the project."""

    def read() -> None:
        manifest = Manifest.from_bytes(payload, commit="c" * 40)
        for relative, entry in manifest.files.items():
            stays_inside(sandbox.root, relative)
            object_relpath(entry.md5)  # a digest, or this raises
            assert isinstance(entry.size, int) and entry.size >= 0, entry
        for relative in manifest.outputs:
            stays_inside(sandbox.root, relative)

    _unchanged(sandbox, (), read)


def check_lock(sandbox: Sandbox, payload: bytes) -> None:
    """`dvc.lock`: each recorded output inside the project, each hash a digest."""
    location = sandbox.root / "dvc.lock"
    location.write_bytes(payload)
    store = ObjectStore(sandbox.paths)

    def read() -> None:
        lock_document(payload, "dvc.lock")
        for relative, md5 in lock_hashes(sandbox.paths).items():
            stays_inside(sandbox.root, relative)
            object_relpath(md5)
        files, _ = recorded_files(sandbox.paths, store)
        for relative, md5 in files.items():
            stays_inside(sandbox.root, relative)
            object_relpath(md5)

    try:
        _unchanged(sandbox, (location,), read)
    finally:
        location.write_bytes(VALID_LOCK)


def check_dir_object(sandbox: Sandbox, payload: bytes) -> None:
    """A `.dir` object (a listing of a directory output) as the cache holds it, under its real MD5."""
    md5 = hashlib.md5(payload, usedforsecurity=False).hexdigest() + ".dir"
    cached = sandbox.root / ".dvc" / "cache" / object_relpath(md5)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(payload)
    location = sandbox.root / "dvc.lock"
    location.write_bytes(VALID_LOCK.replace(b"md5: ''", f"md5: {md5}".encode()))
    store = ObjectStore(sandbox.paths)

    def read() -> None:
        files, _ = recorded_files(sandbox.paths, store)
        for relative, entry_md5 in files.items():
            stays_inside(sandbox.root, relative)
            object_relpath(entry_md5)

    try:
        _unchanged(sandbox, (location, cached), read)
    finally:
        cached.unlink()
        location.write_bytes(VALID_LOCK)


def check_hash_cache_file(sandbox: Sandbox, payload: bytes) -> None:
    """`.mlvs/hashes.sqlite` replaced by other bytes: a file's hash is still its real hash."""
    location = sandbox.paths.state / HASH_DB
    location.write_bytes(payload)
    _hash_is_real(sandbox, location)


def check_hash_cache_record(sandbox: Sandbox, record: tuple[Any, Any, Any]) -> None:
    """A hash cache record that matches the file's stat but holds hostile digests: never passed on."""
    which, md5, sha256 = record
    location = sandbox.paths.state / HASH_DB
    location.unlink(missing_ok=True)
    HashCache(sandbox.paths).close()  # the tables, as mlvs creates them
    info = (sandbox.root / "data" / "raw.csv").stat()
    md5 = DATA_MD5 if which in ("sha256", None) else md5
    sha256 = DATA_SHA256 if which in ("md5", None) else sha256
    with sqlite3.connect(location) as db:
        db.execute(
            "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "data/raw.csv",
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
                info.st_ino,
                info.st_dev,
                _sqlite_value(md5),
                _sqlite_value(sha256),
            ),
        )
    db.close()
    _hash_is_real(sandbox, location)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, (str, bytes, float, type(None))):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    try:
        return json.dumps(value, default=str)[:1000]
    except (RecursionError, ValueError):
        return "[" * 1000


def _hash_is_real(sandbox: Sandbox, location: Path) -> None:
    def read() -> None:
        cache = HashCache(sandbox.paths)
        try:
            hashed = cache.file_hash("data/raw.csv")
        finally:
            cache.close()
        # A record whose digests are well-formed but wrong is trusted by design (stat unchanged);
        # anything else must never be handed on.
        if hashed.md5 != DATA_MD5 or hashed.sha256 != DATA_SHA256:
            assert len(hashed.md5) == 32 and len(hashed.sha256) == 64, hashed
            int(hashed.md5, 16), int(hashed.sha256, 16)

    # A database that is not one is rebuilt (`HashCache._open`): the cache itself may change.
    _unchanged(
        sandbox,
        (
            location,
            location.with_name(location.name + "-journal"),
            location.with_name(location.name + "-wal"),
        ),
        read,
    )
