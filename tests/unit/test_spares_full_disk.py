"""On a full disk, a rollback gives back the spare blocks it kept before it gives up."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.ops.rollback import apply as rollback
from mlvs.ops.rollback.plan import CACHE, FileChange
from mlvs.ops.snapshot.manifest import FileEntry
from mlvs.paths import ProjectPaths


def staging_setup(
    tmp_path: Path,
) -> tuple[ProjectPaths, SimpleNamespace, SimpleNamespace, SimpleNamespace, bytes]:
    paths = ProjectPaths(tmp_path)
    payload = b"restored bytes\n" * 1000
    cached = tmp_path / "cache-object"
    cached.write_bytes(payload)
    entry = FileEntry("0" * 32, hashlib.sha256(payload).hexdigest(), len(payload), "data/raw")
    target = SimpleNamespace(name="A", files={"data/raw/a.csv": entry})
    plan = SimpleNamespace(writes=[FileChange("data/raw/a.csv", "data", "write", CACHE)])
    store = SimpleNamespace(cache_path=lambda md5: cached, fetch_to_cache=lambda md5, sha256: False)
    return paths, target, plan, store, payload


def full_disk_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    real, calls = rollback.copy_verified, []

    def copy(
        source: Path, destination: Path, durable: bool | None = None, overwrite: bool = False
    ) -> str:
        calls.append(1)
        if len(calls) == 1:
            destination.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(source, destination, durable, overwrite=overwrite)

    monkeypatch.setattr(rollback, "copy_verified", copy)
    return calls


def test_a_full_disk_frees_the_spares_and_copies_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    paths, target, plan, store, payload = staging_setup(tmp_path)
    spares = paths.state / "spare"
    spares.mkdir(parents=True)
    for name in ("a.mlvs-tmp", "b.mlvs-tmp"):
        (spares / name).write_bytes(os.urandom(4096))
    calls = full_disk_once(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="mlvs"):
        staged, sources = rollback._stage(paths, target, plan, store, HashCache(paths))

    assert len(calls) == 2
    assert staged["data/raw/a.csv"].temporary.read_bytes() == payload
    assert [s.source for s in sources] == [CACHE]
    assert list(spares.iterdir()) == []
    assert "freed the 8192 bytes of spare blocks" in caplog.text


def test_a_full_disk_without_spares_is_reported_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, target, plan, store, _ = staging_setup(tmp_path)
    calls = full_disk_once(monkeypatch)

    with pytest.raises(OSError) as raised:
        rollback._stage(paths, target, plan, store, HashCache(paths))

    assert raised.value.errno == errno.ENOSPC and len(calls) == 1
    assert [p.name for p in (paths.state / "staging").iterdir()] == []  # the partial copy is gone
