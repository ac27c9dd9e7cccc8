"""Bytes on disk: hashing, atomic and durable writes, checked copies.

The primitives every integrity promise rests on, one of each: SHA-256 (and MD5)
of a file or a stream, an atomic replace, a directory flush, and a copy that
hashes the bytes that landed."""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import mmap
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlvs.errors import IntegrityError
from mlvs.settings import FSYNC


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks so large files stay cheap on memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Text flavour of `atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(directory: Path) -> None:
    """Make a rename or a deletion in `directory` durable (only POSIX can open a directory for it)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directories(directories: Iterable[Path]) -> None:
    """`fsync_dir` on each of `directories`, best effort: one that cannot be opened is skipped."""
    for directory in directories:
        try:
            fsync_dir(directory)
        except OSError:
            continue


def sync_file_system(path: Path) -> None:
    """Flush every write on the file system holding `path` to disk, the other tools' writes too.

    DVC, git and the notebooks' kernels write without fsync; before mlvs records that
    their work is done, what they wrote must survive a power cut. `syncfs` (Linux)
    flushes one file system; elsewhere `sync` flushes them all. `MLVS_FSYNC=0` skips it.
    """
    if not durable_writes():
        return
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()  # syncfs refused (an old kernel): the global flush gives the same promise
    finally:
        os.close(fd)


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


CHUNK = 4 << 20


@dataclass(frozen=True)
class FileHash:
    """The two hashes of one file's bytes: DVC's address and mlvs's check."""

    md5: str
    sha256: str
    size: int


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


def hash_file(path: Path) -> FileHash:
    """MD5 and SHA-256 of a file's bytes, read once."""
    return hash_stream(read_chunks(path))


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the open file `fd` (`os.write` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_file(destination: Path, chunks: Iterable[bytes], mode: int = 0o666) -> None:
    """Write chunks to a new file and flush them to disk (the file must not exist).

    The file gets `mode` less the umask, as a file created by any program would.
    """
    fd = os.open(
        destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode
    )
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_writes() -> bool:
    """Whether data copies are flushed to disk before they count (`MLVS_FSYNC=0` turns it off).

    Off, a killed process still leaves exactly the old or the new state (the page
    cache outlives processes); only a power cut could then lose recent copies.
    """
    return FSYNC.get()


def _copy_range(source_fd: int, destination_fd: int, offset: int, count: int) -> int:
    """Copy `count` bytes at `offset`, in the kernel when it can; return how many were copied."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            return int(copy_file_range(source_fd, destination_fd, count, offset, offset))
        except OSError as error:
            if error.errno not in (
                errno.EXDEV,
                errno.ENOSYS,
                errno.EINVAL,
                errno.EOPNOTSUPP,
                errno.EPERM,
            ):
                raise
    chunk = os.pread(source_fd, min(count, CHUNK), offset)
    view = memoryview(chunk)
    written = 0
    while written < len(chunk):
        written += os.pwrite(destination_fd, view[written:], offset + written)
    return len(chunk)


def copy_verified(
    source: Path, destination: Path, durable: bool | None = None, overwrite: bool = False
) -> str:
    """Copy `source` to the new file `destination`; return the SHA-256 of the destination, read back."""
    return copy_checked(source, destination, durable, overwrite=overwrite).sha256


@functools.cache
def _default_mode() -> int:
    """The mode a new file gets (0o666 less the umask); read once, as setting the umask is process-wide."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def copy_checked(
    source: Path,
    destination: Path,
    durable: bool | None = None,
    with_md5: bool = False,
    overwrite: bool = False,
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
                        with (
                            mmap.mmap(
                                reader_fd, end - base, offset=base, access=mmap.ACCESS_READ
                            ) as mapped,
                            memoryview(mapped) as view,
                        ):
                            digest.update(view[start - base : end - base])
                        return
                    except (OSError, ValueError):
                        pass  # a file system that cannot map: read it
                    position = start
                    while position < end:
                        chunk = os.pread(reader_fd, min(CHUNK, end - position), position)
                        if not chunk:
                            raise IntegrityError(
                                f"{destination} is shorter than what was written to it"
                            )
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
                            for hasher, digest in zip(hashers, digests, strict=True):
                                jobs.append(
                                    hasher.submit(hash_back, digest, offset, offset + copied)
                                )
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


def is_regular_file(path: Path) -> bool:
    """Tell whether `path` is a regular file (following symlinks, as DVC's link caches need)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
