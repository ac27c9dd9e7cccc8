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
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mlvs._io import copy_verified, is_regular_file, sha256_file, write_file
from mlvs.backends.uris import safe_uri
from mlvs.boundary import md5_value
from mlvs.errors import BadInputError, ExternalToolError, IntegrityError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths

log = get_logger("dvcstore")


TEMP_SUFFIX = ".mlvs-tmp"


TEMP_DIR = ".mlvs-tmp"


def _read_dvc_config(root: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    for name in ("config", "config.local"):
        location = root / ".dvc" / name
        if location.is_file():
            try:
                parser.read(location, encoding="utf-8")
            except configparser.Error as error:
                raise BadInputError(
                    f"{location} is not a valid DVC config ({error}); fix it with `dvc config`"
                ) from None
    return parser


def _section(parser: configparser.ConfigParser, name: str) -> dict[str, str]:
    # DVC writes remote sections as ['remote "name"']; accept the unquoted form too.
    for candidate in (name, f"'{name}'"):
        if parser.has_section(candidate):
            return dict(parser.items(candidate))
    return {}


def object_relpath(md5: str, source: str = "DVC object name") -> str:
    """Where DVC 3 keeps the object `md5` inside a cache or remote.

    Every object location passes here, and `md5` may come from a file others wrote
    (`dvc.lock`, a `.dir` object, a manifest, the journal): only a digest may
    become a path, so `01/../../x` never names a file outside the store.
    """
    md5 = md5_value(md5, source)
    return f"files/md5/{md5[:2]}/{md5[2:]}"


@contextlib.contextmanager
def _dvc_kept_quiet() -> Iterator[None]:
    """DVC's own error lines held back while mlvs calls it in-process: mlvs says it in one line."""
    # DVC's libraries log through loggers of many names, with handlers DVC may have set up:
    # every record is held back for the call (mlvs's own included; it logs nothing meanwhile).
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


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
        # deferred: DVC (~0.4 s) is imported only when this runs
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo

        try:
            with _dvc_kept_quiet(), Repo(str(self.paths.root)) as repo:
                status = repo.cloud.status(
                    [HashInfo("md5", m) for m in wanted], remote=self.remote.name
                )
        except (
            Exception
        ) as error:  # DVC and its filesystems raise many kinds for a remote that is down
            raise self._unreachable("ask it which objects it holds", error) from None
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
        with contextlib.suppress(OSError):
            temporary.parent.rmdir()  # leave no empty `.mlvs-tmp` in DVC's directories

    @staticmethod
    def _install(temporary: Path, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temporary, 0o444)  # as DVC keeps its objects: read-only
        os.replace(temporary, destination)

    def put_bytes(self, md5: str, payload: bytes, to_remote: bool = False) -> None:
        """Store a small object (a `.dir` listing) in the cache, or the local remote."""
        store_root = self._store_root(to_remote)
        if hashlib.md5(payload, usedforsecurity=False).hexdigest() != md5.removesuffix(".dir"):
            raise IntegrityError(
                f"DVC object {md5} does not match its bytes; this is a bug in mlvs"
            )
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
        # deferred: DVC (~0.4 s) is imported only when this runs
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo

        wanted = [HashInfo("md5", m) for m in (*sorted(objects), *dir_objects)]
        try:
            with _dvc_kept_quiet(), Repo(str(self.paths.root)) as repo:
                result = repo.cloud.push(wanted, remote=self.remote.name)
        except (
            Exception
        ) as error:  # DVC and its filesystems raise many kinds for a remote that is down
            raise self._unreachable(f"push {len(wanted)} object(s) to it", error) from None
        if result.failed:
            raise ExternalToolError(
                f"could not push {len(result.failed)} of {len(wanted)} object(s) to the DVC remote "
                f"{self.remote.name!r} ({self.remote.url}); nothing was lost, and what was already sent "
                "is kept there. Check that the remote is reachable (`dvc push` shows DVC's own error), "
                "then run the command again"
            )

    def _unreachable(self, doing: str, error: BaseException) -> ExternalToolError:
        """One line for a network remote that failed mid-way: which remote, what failed, what to do.

        DVC's message may quote the remote's address with its user or a signed URL: only
        the kind of error is shown, beside the address without credentials.
        """
        assert self.remote is not None
        return ExternalToolError(
            f"could not {doing}: the DVC remote {self.remote.name!r} ({self.remote.url}) did not answer "
            f"({type(error).__name__}); nothing was lost, and what was already sent is kept there. "
            "Check that the remote is reachable (`dvc push` shows DVC's own error), then run the command again"
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
        return self._fetch_through_dvc(md5, lambda cached: sha256_file(cached) == sha256)

    def fetch_object(self, md5: str) -> bool:
        """Fetch object `md5` from a network remote into the cache, if the remote's copy has that MD5.

        Returns False when there is no network remote or it lacks a correct copy; the
        cache is then unchanged. (A local remote is read directly: `remote_path`.)
        """
        if self.remote is None or self.remote.directory is not None:
            return False

        def has_its_md5(cached: Path) -> bool:
            digest = hashlib.md5(usedforsecurity=False)
            with open(cached, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            return digest.hexdigest() == md5

        return self._fetch_through_dvc(md5, has_its_md5)

    def _fetch_through_dvc(self, md5: str, correct: Callable[[Path], bool]) -> bool:
        # deferred: DVC (~0.4 s) is imported only when this runs
        from dvc.repo import Repo
        from dvc_data.hashfile.hash_info import HashInfo

        assert self.remote is not None
        cached = self.cache_path(md5)
        # DVC skips objects the cache seems to have; move the bad one aside first.
        aside = cached.with_name(cached.name + TEMP_SUFFIX)
        if cached.exists():
            os.replace(cached, aside)
        try:
            with _dvc_kept_quiet(), Repo(str(self.paths.root)) as repo:
                repo.cloud.pull([HashInfo("md5", md5)], remote=self.remote.name)
            if cached.is_file() and correct(cached):
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
