"""File hashes remembered across commands, trusted only while the file's stat holds."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

from mlvs._io import FileHash, hash_file
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths

log = get_logger("dvcstore")


HASH_DB = "hashes.sqlite"


# A file changed within this many nanoseconds of being hashed may change again in
# the same timestamp tick without its stat changing, so its hash is not remembered.
RACY_NS = 50_000_000


# Below this many bytes, files just written are hashed again by the next command rather than waited for.
WRITTEN_BYTES_WORTH_WAITING_FOR = 32 << 20


# Passed deep checks remembered per check: enough for the states a project moves between.
PASSED_KEPT = 64


def _stat_key(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)


Identity = tuple[int, int, int, int, int]

_MD5_RECORD = re.compile(r"[0-9a-f]{32}")
_SHA256_RECORD = re.compile(r"[0-9a-f]{64}")


def file_identity(path: Path) -> Identity:
    """Size, mtime, ctime, inode and device: while all five hold, the file holds the bytes it held.

    ctime cannot be set back by a user, so bytes rewritten in place with the old mtime
    restored still change it. A rename changes ctime too: take the identity of a file
    after it has been put in place.
    """
    return _stat_key(os.stat(path))


def landed_identity(path: Path, verified: os.stat_result) -> Identity | None:
    """The identity of `path` just after a verified copy was renamed there; None if it is another file.

    The copy was hashed as `verified`; a rename keeps its inode, size and mtime (and
    changes its ctime), so only a file that still has those three is that copy.
    """
    info = os.stat(path)
    if (info.st_ino, info.st_size, info.st_mtime_ns) != (
        verified.st_ino,
        verified.st_size,
        verified.st_mtime_ns,
    ):
        return None
    return _stat_key(info)


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
                db.execute(
                    "CREATE TABLE IF NOT EXISTS objects (md5 TEXT PRIMARY KEY, sha256 TEXT, size INTEGER)"
                )
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
                "SELECT size, mtime_ns, ctime_ns, ino, dev, md5, sha256 FROM hashes WHERE path = ?",
                (relative,),
            ).fetchone()
        except sqlite3.Error:
            return None
        if row is None or tuple(row[:5]) != key:
            return None
        size, md5, sha256 = row[0], row[5], row[6]
        # The database is a file under `.mlvs/` that anything may have written: a record that
        # is not two digests is a miss (the file is hashed again), never a value passed on.
        if not (
            isinstance(md5, str)
            and isinstance(sha256, str)
            and _MD5_RECORD.fullmatch(md5)
            and _SHA256_RECORD.fullmatch(sha256)
        ):
            log.debug("ignoring a malformed hash cache record for %s", relative)
            return None
        return FileHash(md5, sha256, size)

    def remember(
        self, relative: str, info: os.stat_result, hashed: FileHash, hashed_at_ns: int
    ) -> None:
        """Remember `hashed` for the file at `relative` while its stat stays `info`."""
        if (
            self._db is None
            or info.st_ctime_ns > hashed_at_ns - RACY_NS
            or info.st_mtime_ns > hashed_at_ns - RACY_NS
        ):
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
            row = self._db.execute(
                "SELECT sha256, size FROM objects WHERE md5 = ?", (md5,)
            ).fetchone()
        except sqlite3.Error:
            return None
        if not row or not isinstance(row[0], str) or not _SHA256_RECORD.fullmatch(row[0]):
            return None  # unknown, or a malformed record: proved by MD5 as if never seen
        return FileHash(md5, row[0], row[1]) if isinstance(row[1], int) else None

    def remember_written(self, written: list[tuple[str, FileHash, Identity]]) -> None:
        """Remember the hashes of files mlvs just wrote and verified: (relative path, hashes, identity then).

        A file changed within the racy window is not trusted by its stat. When the
        written bytes are many, wait out that window once (a few hundredths of a
        second) rather than have the next command read them all again; a few small
        files are cheaper to hash again. A file whose identity changed since it was
        verified (someone wrote to it) is not remembered.
        """
        if (
            not written
            or sum(hashed.size for _, hashed, _ in written) < WRITTEN_BYTES_WORTH_WAITING_FOR
        ):
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
            if _stat_key(current) == identity:
                self.remember(relative, current, hashed, now)

    def check_passed(self, fingerprint: str) -> bool:
        """Whether a deep check passed on the inputs `fingerprint` stands for (see `verify.PassedChecks`)."""
        if self._db is None:
            return False
        try:
            return (
                self._db.execute(
                    "SELECT 1 FROM passed WHERE fingerprint = ?", (fingerprint,)
                ).fetchone()
                is not None
            )
        except sqlite3.Error:
            return False

    def remember_passed(self, check: str, fingerprint: str) -> None:
        """Remember that `check` passed on the inputs `fingerprint` stands for; keep the newest few per check."""
        if self._db is None:
            return
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO passed VALUES (?, ?, ?)",
                (fingerprint, check, time.time_ns()),
            )
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
        hashed = hash_file(path)
        self.remember_object(
            hashed
        )  # both digests of the same bytes, whatever happened to the file since
        after = os.stat(path)
        if _stat_key(after) == _stat_key(before) and hashed.size == before.st_size:
            self.remember(relative, after, hashed, started)
        return hashed
