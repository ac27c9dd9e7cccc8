"""Reading snapshots back: one manifest, the list, one by name."""

from __future__ import annotations

import os

from mlvs.backends.git.refs import (
    SNAPSHOT_REF_PREFIX,
    list_snapshot_refs,
    snapshot_ref,
    validate_snapshot_name,
)
from mlvs.backends.git.run import is_object_id
from mlvs.backends.git.tree import read_files_at
from mlvs.boundary import UnsafeInputError
from mlvs.errors import IntegrityError, UnknownSnapshotError
from mlvs.logs import get_logger
from mlvs.ops.snapshot.create import require_git
from mlvs.ops.snapshot.manifest import MANIFEST_PATH, Manifest
from mlvs.paths import ProjectPaths

log = get_logger("snapshots")


# A commit's bytes never change: a command that reads the same manifest twice asks git once.
_MANIFEST_PAYLOADS: dict[tuple[str, str], bytes] = {}


def manifest_at(paths: ProjectPaths, commit: str) -> Manifest:
    """The manifest held by snapshot commit `commit`."""
    key = (os.path.realpath(paths.root), commit)
    payload = _MANIFEST_PAYLOADS.get(key)
    if payload is None:
        payload = read_files_at(paths.root, [(commit, MANIFEST_PATH)])[0]
        if payload is not None and is_object_id(commit):
            _MANIFEST_PAYLOADS[key] = payload
    if payload is None:
        raise IntegrityError(f"commit {commit} holds no mlvs manifest; it is not an mlvs snapshot")
    return Manifest.from_bytes(payload, commit=commit)


def list_snapshots(paths: ProjectPaths) -> list[Manifest]:
    """Every snapshot, oldest first. Reads only: no lock, no journal."""
    require_git(paths)
    return read_snapshots(paths, list_snapshot_refs(paths.root))


def read_snapshots(paths: ProjectPaths, refs: list[tuple[str, str]]) -> list[Manifest]:
    """The snapshots of `refs` (name, commit), oldest first; a ref without a readable manifest of its name is skipped with a warning."""
    payloads = read_files_at(paths.root, [(sha, MANIFEST_PATH) for _, sha in refs])
    manifests = []
    for (name, sha), payload in zip(refs, payloads, strict=True):
        if payload is None:
            log.warning("snapshot ref %s has no manifest; skipped", name)
            continue
        try:
            manifests.append(_named(name, Manifest.from_bytes(payload, commit=sha)))
        except (IntegrityError, UnsafeInputError) as error:
            log.warning("snapshot %s has an unreadable manifest (%s); skipped", name, error)
    return sorted(manifests, key=lambda m: (m.created_at, m.name))


def _named(ref: str, manifest: Manifest) -> Manifest:
    """`manifest` if it names the ref it was read from; a fetched ref must not pose as another snapshot."""
    if manifest.name != ref:
        raise UnsafeInputError(
            f"snapshot ref {ref!r} holds a manifest named {manifest.name!r}; delete that ref "
            f"(git update-ref -d {SNAPSHOT_REF_PREFIX}{ref}) or fetch it again from whoever made it"
        )
    return manifest


def _unknown(name: str) -> UnknownSnapshotError:
    return UnknownSnapshotError(
        f"there is no snapshot named {name!r}; run `mlvs snapshot list` to see the snapshots"
    )


def show_snapshot(paths: ProjectPaths, name: str) -> Manifest:
    """The manifest of snapshot `name`; UnknownSnapshotError when there is none."""
    validate_snapshot_name(name)
    require_git(paths)
    commit = snapshot_ref(paths.root, name)
    if commit is None:
        raise _unknown(name)
    return _named(name, manifest_at(paths, commit))
