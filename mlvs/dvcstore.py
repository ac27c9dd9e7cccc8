"""DVC outputs as mlvs sees them: which files they are, their hashes, and their objects.

Snapshots and rollback work on DVC's own storage, without running DVC:

- the outputs are read from `dvc.yaml` and the `.dvc` files (DVC's Python API
  only when `dvc.yaml` uses templating, which plain parsing cannot expand);
- a file's MD5 is DVC's content address and its SHA-256 is what mlvs verifies;
  both are computed in one read and remembered in `.mlvs/hashes.sqlite`, keyed by
  path and trusted only while size, mtime, ctime, inode and device all hold, so a
  snapshot of unchanged data re-reads nothing;
- objects live in DVC 3's layout (`files/md5/XX/REST`, directories as
  `REST.dir` JSON lists), in the cache and in the default remote. A remote that is
  a local directory (the embedded default) is read and written directly; any other
  remote goes through DVC's data-cloud API.

Every object written is copied through a temporary file in `.mlvs-tmp/` under the
store's root while its hash is checked, then renamed into place: a crash leaves
either no object or a whole, correct one, and `remove_leftovers` deletes the rest.
"""

from __future__ import annotations

import configparser
import errno
import functools
import hashlib
import json
import mmap
import os
import secrets
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from mlvs.errors import BadInputError, ExternalToolError, IntegrityError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.registry import safe_uri

log = get_logger("dvcstore")

CHUNK = 4 << 20
TEMP_SUFFIX = ".mlvs-tmp"
TEMP_DIR = ".mlvs-tmp"
HASH_DB = "hashes.sqlite"
DATA, MODELS = "data", "models"
# A file changed within this many nanoseconds of being hashed may change again in
# the same timestamp tick without its stat changing, so its hash is not remembered.
RACY_NS = 50_000_000
# Below this many bytes, files just written are hashed again by the next command rather than waited for.
WRITTEN_BYTES_WORTH_WAITING_FOR = 32 << 20
# Passed deep checks remembered per check: enough for the states a project moves between.
PASSED_KEPT = 64


# --- outputs -------------------------------------------------------------------


def load_yaml(text: str) -> Any:
    """Parse YAML safely, with libyaml when it is there (ten times faster on `dvc.lock`)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)


def _dvc_yaml_file(path: Path, root: Path) -> dict[str, Any]:
    """A DVC file (`dvc.yaml`, `dvc.lock`, `*.dvc`) as a mapping; a broken one is bad input."""
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        where = path.relative_to(root).as_posix()
        raise BadInputError(f"{where} cannot be read as YAML ({type(error).__name__}); fix or restore it (e.g. from git)") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise BadInputError(f"{path.relative_to(root).as_posix()} is not a YAML mapping; fix or restore it")
    return document


@dataclass(frozen=True)
class Output:
    """One DVC output: a file or directory that a stage writes or a `.dvc` file tracks."""

    path: str  # relative to the project root, with '/'
    stage: str | None  # None for a `.dvc` file
    cache: bool  # False: git keeps it (metrics), not DVC's cache
    part: str  # DATA or MODELS: what `mlvs rollback --only` calls it


def _entries(items: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in items or []:
        if isinstance(item, str):
            yield item, {}
        elif isinstance(item, dict):
            for path, options in item.items():
                yield str(path), dict(options or {})


def _join(base: str, path: str) -> str:
    joined = PurePosixPath(base) / path if base not in ("", ".") else PurePosixPath(path)
    parts: list[str] = []
    for part in joined.parts:
        if part == "..":
            if not parts:
                raise BadInputError(f"DVC output {path!r} lies outside the project; keep outputs inside it")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _uses_templating(document: Any) -> bool:
    text = json.dumps(document, default=str)
    return "${" in text or '"foreach"' in text or '"matrix"' in text


def _outputs_from_dvc_api(root: Path) -> list[tuple[str, str | None, bool]]:
    from dvc.repo import Repo

    found = []
    with Repo(str(root)) as repo:
        for out in repo.index.outs:
            stage = getattr(out.stage, "name", None)
            found.append((Path(out.fs_path).relative_to(root).as_posix(), stage, bool(out.use_cache)))
    return found


def dvc_files(root: Path) -> list[str]:
    """The `.dvc` files of the project (tracked or untracked, not ignored)."""
    from mlvs.gitstate import run_git

    out = run_git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted(p for p in out.split("\0") if p.endswith(".dvc") and (root / p).is_file())


def dvc_outputs(paths: ProjectPaths, tracking_files: list[str] | None = None) -> list[Output]:
    """Every output of `dvc.yaml`'s stages and of the project's `.dvc` files (`tracking_files` if known)."""
    root = paths.root
    found: list[tuple[str, str | None, bool]] = []
    pipeline_file = root / "dvc.yaml"
    document = _dvc_yaml_file(pipeline_file, root) if pipeline_file.is_file() else {}
    if _uses_templating(document):
        found = _outputs_from_dvc_api(root)
    else:
        for stage, spec in ((document or {}).get("stages") or {}).items():
            wdir = str((spec or {}).get("wdir", "."))
            for section in ("outs", "metrics", "plots"):
                for path, options in _entries((spec or {}).get(section)):
                    found.append((_join(wdir, path), str(stage), bool(options.get("cache", True))))
        for dvc_file in dvc_files(root) if tracking_files is None else tracking_files:
            spec = _dvc_yaml_file(root / dvc_file, root)
            base = str(PurePosixPath(dvc_file).parent)
            for path, options in _entries([{o["path"]: o} for o in spec.get("outs") or [] if "path" in o]):
                found.append((_join(base, path), None, bool(options.get("cache", True))))
    models_dir = paths.models.relative_to(root).as_posix()

    def under_models(path: str) -> bool:
        return path == models_dir or path.startswith(models_dir + "/")

    # A stage that writes a model owns its metrics too: they describe that model.
    model_stages = {stage for path, stage, _ in found if stage and under_models(path)}
    outputs = {}
    for path, stage, cache in found:
        part = MODELS if under_models(path) or (stage in model_stages) else DATA
        outputs[path] = Output(path, stage, cache, part)
    return [outputs[p] for p in sorted(outputs)]


def lock_hashes(paths: ProjectPaths, tracking_files: list[str] | None = None) -> dict[str, str]:
    """Output path -> MD5 as `dvc.lock` and the `.dvc` files (`tracking_files` if known) record them."""
    recorded: dict[str, str] = {}
    lock_file = paths.root / "dvc.lock"
    if lock_file.is_file():
        document = _dvc_yaml_file(lock_file, paths.root)
        for spec in (document.get("stages") or {}).values():
            for out in (spec or {}).get("outs") or []:
                if isinstance(out, dict) and "path" in out and "md5" in out:
                    recorded[_join(".", str(out["path"]))] = str(out["md5"])
    for dvc_file in dvc_files(paths.root) if tracking_files is None else tracking_files:
        spec = _dvc_yaml_file(paths.root / dvc_file, paths.root)
        base = str(PurePosixPath(dvc_file).parent)
        for out in spec.get("outs") or []:
            if isinstance(out, dict) and "path" in out and "md5" in out:
                recorded[_join(base, str(out["path"]))] = str(out["md5"])
    return recorded


def output_files(root: Path, output: str) -> list[str]:
    """The files an output holds now (itself for a file output), relative to the root, sorted."""
    top = root / output
    if top.is_file():
        return [output]
    if not top.is_dir():
        return []
    files = []
    for directory, subdirectories, names in os.walk(top):
        subdirectories.sort()
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                continue  # a leftover of an interrupted mlvs write, never data
            full = os.path.join(directory, name)
            if os.path.isfile(full):
                files.append(Path(full).relative_to(root).as_posix())
    return sorted(files)


def dir_object(files: dict[str, str]) -> tuple[str, bytes]:
    """DVC's `.dir` object for relpath -> MD5: its name (`<md5>.dir`) and its bytes."""
    listing = [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(files.items())]
    payload = json.dumps(listing, sort_keys=True).encode("utf-8")
    return hashlib.md5(payload, usedforsecurity=False).hexdigest() + ".dir", payload


# --- hashing, remembered --------------------------------------------------------


@dataclass(frozen=True)
class FileHash:
    """The two hashes of one file's bytes: DVC's address and mlvs's check."""

    md5: str
    sha256: str
    size: int


def _stat_key(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)


def file_identity(path: Path) -> tuple[int, int, int]:
    """Inode, size and mtime: unchanged (a rename keeps them), the file still holds the bytes it held."""
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def hash_stream(chunks: Iterable[bytes]) -> FileHash:
    """MD5 and SHA-256 of a stream of chunks, the two digests on two threads."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    size = 0
    # hashlib releases the GIL on large buffers, so MD5 (the slower) runs beside SHA-256.
    with ThreadPoolExecutor(max_workers=1) as pool:
        for chunk in chunks:
            pending = pool.submit(md5.update, chunk)
            sha.update(chunk)
            size += len(chunk)
            pending.result()
    return FileHash(md5.hexdigest(), sha.hexdigest(), size)


def read_chunks(path: Path) -> Iterator[bytes]:
    """The bytes of a file, in chunks."""
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class HashCache:
    """File hashes remembered across commands in `.mlvs/hashes.sqlite`.

    An entry is used only while the file's size, mtime, ctime, inode and device
    are those it was hashed with. ctime cannot be set by a user, so a file edited
    and given its old mtime back is still re-hashed. A missing or broken database
    only costs speed: hashing then happens every time. It also remembers which
    deep checks passed, by the fingerprint of the file hashes they read.
    """

    def __init__(self, paths: ProjectPaths) -> None:
        self.root = paths.root
        self._db: sqlite3.Connection | None = None
        try:
            paths.state.mkdir(parents=True, exist_ok=True)
            self._db = self._open(paths.state / HASH_DB)
        except (OSError, sqlite3.Error) as error:
            log.debug("hash cache unavailable (%s); hashing every file", error)
            self._db = None

    @staticmethod
    def _open(location: Path) -> sqlite3.Connection:
        for attempt in range(2):
            try:
                db = sqlite3.connect(location, timeout=10, isolation_level=None)
                db.execute(
                    "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
                    " ctime_ns INTEGER, ino INTEGER, dev INTEGER, md5 TEXT, sha256 TEXT)"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS passed (fingerprint TEXT PRIMARY KEY, check_name TEXT, at_ns INTEGER)"
                )
                db.execute("CREATE TABLE IF NOT EXISTS objects (md5 TEXT PRIMARY KEY, sha256 TEXT, size INTEGER)")
                return db
            except sqlite3.DatabaseError:
                if attempt:
                    raise
                location.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _lookup(self, relative: str, key: tuple[int, ...]) -> FileHash | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT size, mtime_ns, ctime_ns, ino, dev, md5, sha256 FROM hashes WHERE path = ?", (relative,)
            ).fetchone()
        except sqlite3.Error:
            return None
        if row is None or tuple(row[:5]) != key:
            return None
        return FileHash(row[5], row[6], row[0])

    def remember(self, relative: str, info: os.stat_result, hashed: FileHash, hashed_at_ns: int) -> None:
        """Remember `hashed` for the file at `relative` while its stat stays `info`."""
        if self._db is None or info.st_ctime_ns > hashed_at_ns - RACY_NS or info.st_mtime_ns > hashed_at_ns - RACY_NS:
            return
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (relative, *_stat_key(info), hashed.md5, hashed.sha256),
            )
        except sqlite3.Error as error:
            log.debug("could not remember the hash of %s: %s", relative, error)

    def remember_object(self, hashed: FileHash) -> None:
        """Remember that bytes with MD5 `hashed.md5` have SHA-256 `hashed.sha256` (both digests of one read).

        Two different contents seen with one MD5 (a collision, which MD5 allows) make
        that MD5 ambiguous for good: its copies are then proved by MD5 again.
        """
        if self._db is None or not hashed.md5 or not hashed.sha256:
            return
        try:
            self._db.execute(
                "INSERT INTO objects VALUES (?, ?, ?) ON CONFLICT(md5) DO UPDATE SET"
                " sha256 = CASE WHEN sha256 = excluded.sha256 AND size = excluded.size THEN sha256 ELSE '' END",
                (hashed.md5, hashed.sha256, hashed.size),
            )
        except sqlite3.Error as error:
            log.debug("could not remember object %s: %s", hashed.md5, error)

    def known_object(self, md5: str) -> FileHash | None:
        """Both hashes of the bytes whose MD5 is `md5`, if mlvs has hashed such bytes before.

        With it, a copy of DVC object `md5` is proved by its SHA-256 alone (the faster
        digest, and collision-resistant where MD5 is not).
        """
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT sha256, size FROM objects WHERE md5 = ?", (md5,)).fetchone()
        except sqlite3.Error:
            return None
        return FileHash(md5, row[0], row[1]) if row and row[0] else None

    def remember_written(self, written: list[tuple[str, FileHash, tuple[int, int, int]]]) -> None:
        """Remember the hashes of files mlvs just wrote and verified: (relative path, hashes, identity then).

        A file changed within the racy window is not trusted by its stat. When the
        written bytes are many, wait out that window once (a few hundredths of a
        second) rather than have the next command read them all again; a few small
        files are cheaper to hash again. A file whose identity changed since it was
        verified (someone wrote to it) is not remembered.
        """
        if not written or sum(hashed.size for _, hashed, _ in written) < WRITTEN_BYTES_WORTH_WAITING_FOR:
            return
        try:
            newest = max(os.stat(self.root / relative).st_ctime_ns for relative, _, _ in written)
        except OSError:
            return  # one of them is gone already: nothing to vouch for
        wait = (newest + RACY_NS - time.time_ns()) / 1e9
        if 0 < wait <= RACY_NS / 1e9:
            time.sleep(wait)
        now = time.time_ns()
        for relative, hashed, identity in written:
            try:
                current = os.stat(self.root / relative)
            except OSError:
                continue
            if (current.st_ino, current.st_size, current.st_mtime_ns) == identity:
                self.remember(relative, current, hashed, now)

    def check_passed(self, fingerprint: str) -> bool:
        """Whether a deep check passed on the inputs `fingerprint` stands for (see `verify.PassedChecks`)."""
        if self._db is None:
            return False
        try:
            return self._db.execute("SELECT 1 FROM passed WHERE fingerprint = ?", (fingerprint,)).fetchone() is not None
        except sqlite3.Error:
            return False

    def remember_passed(self, check: str, fingerprint: str) -> None:
        """Remember that `check` passed on the inputs `fingerprint` stands for; keep the newest few per check."""
        if self._db is None:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO passed VALUES (?, ?, ?)", (fingerprint, check, time.time_ns()))
            self._db.execute(
                "DELETE FROM passed WHERE check_name = ? AND fingerprint NOT IN"
                " (SELECT fingerprint FROM passed WHERE check_name = ? ORDER BY at_ns DESC LIMIT ?)",
                (check, check, PASSED_KEPT),
            )
        except sqlite3.Error as error:
            log.debug("could not remember that %s passed: %s", check, error)

    def file_hash(self, relative: str, trust_cache: bool = True) -> FileHash:
        """The hashes of the file at `relative` now; read again only if it changed."""
        path = self.root / relative
        before = os.stat(path)
        if trust_cache:
            known = self._lookup(relative, _stat_key(before))
            if known is not None:
                return known
        started = time.time_ns()
        hashed = hash_stream(read_chunks(path))
        self.remember_object(hashed)  # both digests of the same bytes, whatever happened to the file since
        after = os.stat(path)
        if _stat_key(after) == _stat_key(before) and hashed.size == before.st_size:
            self.remember(relative, after, hashed, started)
        return hashed


# --- DVC's object storage ------------------------------------------------------


def _read_dvc_config(root: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    for name in ("config", "config.local"):
        location = root / ".dvc" / name
        if location.is_file():
            try:
                parser.read(location, encoding="utf-8")
            except configparser.Error as error:
                raise BadInputError(f"{location} is not a valid DVC config ({error}); fix it with `dvc config`") from None
    return parser


def _section(parser: configparser.ConfigParser, name: str) -> dict[str, str]:
    # DVC writes remote sections as ['remote "name"']; accept the unquoted form too.
    for candidate in (name, f"'{name}'"):
        if parser.has_section(candidate):
            return dict(parser.items(candidate))
    return {}


def object_relpath(md5: str) -> str:
    """Where DVC 3 keeps the object `md5` inside a cache or remote."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


@dataclass(frozen=True)
class Remote:
    """The project's default DVC remote, with credentials left out of `url`."""

    name: str
    url: str
    directory: Path | None  # set when the remote is a local directory


class ObjectStore:
    """The project's DVC cache and default remote, read and written object by object."""

    def __init__(self, paths: ProjectPaths) -> None:
        self.paths = paths
        config = _read_dvc_config(paths.root)
        dvc_dir = paths.root / ".dvc"
        cache_dir = _section(config, "cache").get("dir")
        self.cache = (dvc_dir / cache_dir).resolve() if cache_dir else dvc_dir / "cache"
        name = _section(config, "core").get("remote")
        self.remote: Remote | None = None
        if name:
            url = _section(config, f'remote "{name}"').get("url")
            if not url:
                raise BadInputError(
                    f"the default DVC remote {name!r} has no url in .dvc/config; set one with `dvc remote modify`"
                )
            scheme = urlsplit(url).scheme
            directory = None
            if not scheme or len(scheme) == 1 or scheme == "file":
                local = urlsplit(url).path if scheme == "file" else url
                directory = (dvc_dir / local).resolve()
            self.remote = Remote(name, safe_uri(url), directory)

    # -- locations

    def cache_path(self, md5: str) -> Path:
        """The cache file of object `md5`."""
        return self.cache / object_relpath(md5)

    def remote_path(self, md5: str) -> Path | None:
        """The remote file of object `md5` when the remote is a local directory."""
        if self.remote is None or self.remote.directory is None:
            return None
        return self.remote.directory / object_relpath(md5)

    def in_cache(self, md5: str) -> bool:
        """Tell whether the cache holds object `md5` (by name: its bytes are checked on use)."""
        return self.cache_path(md5).is_file()

    def missing_in_remote(self, md5s: Iterable[str]) -> list[str]:
        """The objects the default remote lacks (all of them when it cannot be asked cheaply)."""
        wanted = sorted(set(md5s))
        if self.remote is None:
            return []
        if self.remote.directory is not None:
            return [m for m in wanted if not (self.remote.directory / object_relpath(m)).is_file()]
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo

        with Repo(str(self.paths.root)) as repo:
            status = repo.cloud.status([HashInfo("md5", m) for m in wanted], remote=self.remote.name)
        missing = {h.value for h in (*status.new, *status.missing)}
        return [m for m in wanted if m in missing]

    # -- writing

    def _temporary(self, store_root: Path) -> Path:
        directory = store_root / TEMP_DIR
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"

    @staticmethod
    def _tidy(temporary: Path) -> None:
        temporary.unlink(missing_ok=True)
        try:
            temporary.parent.rmdir()  # leave no empty `.mlvs-tmp` in DVC's directories
        except OSError:
            pass

    @staticmethod
    def _install(temporary: Path, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temporary, 0o444)  # as DVC keeps its objects: read-only
        os.replace(temporary, destination)

    def put_bytes(self, md5: str, payload: bytes, to_remote: bool = False) -> None:
        """Store a small object (a `.dir` listing) in the cache, or the local remote."""
        store_root = self._store_root(to_remote)
        if hashlib.md5(payload, usedforsecurity=False).hexdigest() != md5.removesuffix(".dir"):
            raise IntegrityError(f"DVC object {md5} does not match its bytes; this is a bug in mlvs")
        temporary = self._temporary(store_root)
        try:
            write_file(temporary, [payload])
            self._install(temporary, store_root / object_relpath(md5))
        finally:
            self._tidy(temporary)

    def put_file(self, md5: str, sha256: str, sources: list[Path], to_remote: bool = False) -> None:
        """Store object `md5` from the first of `sources` whose bytes have `sha256`."""
        store_root = self._store_root(to_remote)
        destination = store_root / object_relpath(md5)
        for source in sources:
            if not is_regular_file(source):
                continue
            temporary = self._temporary(store_root)
            try:
                if copy_verified(source, temporary) == sha256:
                    self._install(temporary, destination)
                    return
            finally:
                self._tidy(temporary)
        raise IntegrityError(
            f"no copy of DVC object {md5} with the recorded bytes was found (looked at "
            f"{', '.join(str(s) for s in sources)}); the file changed while it was being saved: try again"
        )

    def _store_root(self, to_remote: bool) -> Path:
        if not to_remote:
            return self.cache
        if self.remote is None or self.remote.directory is None:
            raise AssertionError("direct writes go to a local remote only")
        return self.remote.directory

    def push(self, objects: dict[str, tuple[str, list[Path]]], dir_objects: list[str]) -> None:
        """Copy objects to the default remote: md5 -> (sha256, other sources), and `.dir` objects.

        Each file object is copied from the cache, else from the other sources,
        whichever has the recorded bytes; `.dir` objects are checked by their MD5.
        """
        if self.remote is None or not (objects or dir_objects):
            return
        if self.remote.directory is not None:
            for md5, (sha256, sources) in sorted(objects.items()):
                self.put_file(md5, sha256, [self.cache_path(md5), *sources], to_remote=True)
            for md5 in dir_objects:
                self.put_bytes(md5, self.cache_path(md5).read_bytes(), to_remote=True)
            return
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo

        wanted = [HashInfo("md5", m) for m in (*sorted(objects), *dir_objects)]
        with Repo(str(self.paths.root)) as repo:
            result = repo.cloud.push(wanted, remote=self.remote.name)
        if result.failed:
            raise ExternalToolError(
                f"could not push {len(result.failed)} object(s) to the DVC remote {self.remote.name!r}; "
                "check the remote with `dvc push` and try again"
            )

    def fetch_to_cache(self, md5: str, sha256: str) -> bool:
        """Replace the cache's object `md5` with the remote's, if the remote's has `sha256`.

        Returns False when the remote lacks a correct copy; the cache is then unchanged.
        """
        if self.remote is None:
            return False
        if self.remote.directory is not None:
            source = self.remote.directory / object_relpath(md5)
            if not source.is_file():
                return False
            temporary = self._temporary(self.cache)
            try:
                if copy_verified(source, temporary) != sha256:
                    log.warning("the DVC remote's copy of object %s is corrupt too", md5)
                    return False
                self._install(temporary, self.cache_path(md5))
                return True
            finally:
                self._tidy(temporary)
        return self._fetch_through_dvc(md5, sha256)

    def _fetch_through_dvc(self, md5: str, sha256: str) -> bool:
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo

        assert self.remote is not None
        cached = self.cache_path(md5)
        # DVC skips objects the cache seems to have; move the bad one aside first.
        aside = cached.with_name(cached.name + TEMP_SUFFIX)
        if cached.exists():
            os.replace(cached, aside)
        try:
            with Repo(str(self.paths.root)) as repo:
                repo.cloud.pull([HashInfo("md5", md5)], remote=self.remote.name)
            if cached.is_file() and sha256_only(cached) == sha256:
                aside.unlink(missing_ok=True)
                return True
        except Exception as error:  # DVC raises many kinds for an unreachable remote
            log.warning("could not fetch object %s from the DVC remote: %s", md5, error)
        if aside.exists():
            os.replace(aside, cached)
        return False

    def remove_objects(self, md5s: Iterable[str], from_remote: bool = False) -> None:
        """Delete objects this operation added (used to undo an interrupted snapshot)."""
        for md5 in md5s:
            target = self.remote_path(md5) if from_remote else self.cache_path(md5)
            if target is not None:
                target.unlink(missing_ok=True)

    def remove_leftovers(self) -> None:
        """Delete the temporary files an interrupted copy left in the cache and remote."""
        roots = [self.cache]
        if self.remote is not None and self.remote.directory is not None:
            roots.append(self.remote.directory)
        for store_root in roots:
            shutil.rmtree(store_root / TEMP_DIR, ignore_errors=True)
            for aside in (store_root / "files" / "md5").glob(f"*/*{TEMP_SUFFIX}"):
                stem = aside.with_name(aside.name.removesuffix(TEMP_SUFFIX))
                if stem.exists():
                    aside.unlink(missing_ok=True)
                else:  # a bad object moved aside by an interrupted fetch: put it back
                    os.replace(aside, stem)


# --- copying with hashes --------------------------------------------------------


def write_file(destination: Path, chunks: Iterable[bytes]) -> None:
    """Write chunks to a new file and flush them to disk (the file must not exist)."""
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_writes() -> bool:
    """Whether data copies are flushed to disk before they count (`MLVS_FSYNC=0` turns it off).

    Off, a killed process still leaves exactly the old or the new state (the page
    cache outlives processes); only a power cut could then lose recent copies.
    """
    return os.environ.get("MLVS_FSYNC", "1").strip().lower() not in ("0", "false", "no", "off")


def _copy_range(source_fd: int, destination_fd: int, offset: int, count: int) -> int:
    """Copy `count` bytes at `offset`, in the kernel when it can; return how many were copied."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            return int(copy_file_range(source_fd, destination_fd, count, offset, offset))
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
    chunk = os.pread(source_fd, min(count, CHUNK), offset)
    view = memoryview(chunk)
    written = 0
    while written < len(chunk):
        written += os.pwrite(destination_fd, view[written:], offset + written)
    return len(chunk)


def copy_verified(source: Path, destination: Path, durable: bool | None = None, overwrite: bool = False) -> str:
    """Copy `source` to the new file `destination`; return the SHA-256 of the destination, read back."""
    return copy_checked(source, destination, durable, overwrite=overwrite).sha256


@functools.cache
def _default_mode() -> int:
    """The mode a new file gets (0o666 less the umask); read once, as setting the umask is process-wide."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def copy_checked(
    source: Path, destination: Path, durable: bool | None = None, with_md5: bool = False, overwrite: bool = False
) -> FileHash:
    """Copy `source` to the new file `destination`; return the hashes of the destination's bytes, read back.

    `overwrite` writes over the existing file `destination` instead (its blocks are
    reused, then it is cut to size and given a new file's mode).

    A pipeline in big chunks: the kernel copies chunk i (no copy through Python)
    while another thread reads chunk i-1 back from the destination and hashes it,
    and, when `durable` (default: `durable_writes()`), a third flushes it to disk.
    The hash is therefore of the bytes that landed, not of the bytes meant.
    `with_md5` adds DVC's address, on a thread of its own (MD5 is the slower digest).
    """
    durable = durable_writes() if durable is None else durable
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
    source_fd = os.open(source, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        flags = os.O_WRONLY if overwrite else os.O_WRONLY | os.O_CREAT | os.O_EXCL
        destination_fd = os.open(destination, flags | getattr(os, "O_BINARY", 0), 0o666)
        try:
            if overwrite:
                os.fchmod(destination_fd, _default_mode())
            reader_fd = os.open(destination, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:

                def hash_back(digest: Any, start: int, end: int) -> None:
                    # Mapped, the page cache is hashed in place: no copy into Python objects.
                    base = start - start % mmap.ALLOCATIONGRANULARITY
                    try:
                        with mmap.mmap(reader_fd, end - base, offset=base, access=mmap.ACCESS_READ) as mapped:
                            with memoryview(mapped) as view:
                                digest.update(view[start - base : end - base])
                        return
                    except (OSError, ValueError):
                        pass  # a file system that cannot map: read it
                    position = start
                    while position < end:
                        chunk = os.pread(reader_fd, min(CHUNK, end - position), position)
                        if not chunk:
                            raise IntegrityError(f"{destination} is shorter than what was written to it")
                        digest.update(chunk)
                        position += len(chunk)

                # One worker per digest keeps its hashing in order and lets the copy run ahead.
                digests = [d for d in (sha, md5) if d is not None]
                hashers = [ThreadPoolExecutor(max_workers=1) for _ in digests]
                try:
                    with ThreadPoolExecutor(max_workers=1) as flusher:
                        jobs = []
                        flush = os.fdatasync if hasattr(os, "fdatasync") else os.fsync
                        flushing = None
                        offset = 0
                        while True:
                            copied = _copy_range(source_fd, destination_fd, offset, 64 << 20)
                            if copied == 0:
                                break
                            for hasher, digest in zip(hashers, digests):
                                jobs.append(hasher.submit(hash_back, digest, offset, offset + copied))
                            # Start writing back what is copied so far, unless a flush is still running.
                            if durable and (flushing is None or flushing.done()):
                                flushing = flusher.submit(flush, destination_fd)
                                jobs.append(flushing)
                            offset += copied
                        for job in jobs:
                            job.result()
                finally:
                    for hasher in hashers:
                        hasher.shutdown(wait=True)
                if overwrite:
                    os.ftruncate(destination_fd, offset)
                if durable:
                    os.fsync(destination_fd)
            finally:
                os.close(reader_fd)
        finally:
            os.close(destination_fd)
    finally:
        os.close(source_fd)
    return FileHash(md5.hexdigest() if md5 is not None else "", sha.hexdigest(), offset)


def sha256_only(path: Path) -> str:
    """SHA-256 of a file, for verifying bytes whose expected hash is known."""
    sha = hashlib.sha256()
    for chunk in read_chunks(path):
        sha.update(chunk)
    return sha.hexdigest()


def is_regular_file(path: Path) -> bool:
    """Tell whether `path` is a regular file (following symlinks, as DVC's link caches need)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
