"""Comparing two snapshots, or a snapshot with the current state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlvs.backends.git.tree import tree_files, worktree_blob_hashes
from mlvs.mappings import flatten
from mlvs.ops.snapshot.capture import capture_state
from mlvs.ops.snapshot.manifest import MANIFEST_PATH, Manifest
from mlvs.ops.snapshot.read import show_snapshot
from mlvs.paths import ProjectPaths

Change = tuple[Any, Any]


@dataclass
class SnapshotDiff:
    """What differs from snapshot `a` to `b` (None: the current state), by kind."""

    a: str
    b: str | None
    params: dict[str, Change]
    metrics: dict[str, Change]
    outputs: dict[str, Change]
    files: dict[str, Change]
    registry: dict[str, Change]
    code: list[str]
    # `python`, `packages.NAME`, `uv_lock_sha256` (see `Environment.changes_to`)
    environment: dict[str, Change] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing differs."""
        return not (
            self.params
            or self.metrics
            or self.outputs
            or self.files
            or self.registry
            or self.code
            or self.environment
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every change as [old, new]."""
        pairs = lambda d: {k: list(v) for k, v in sorted(d.items())}  # noqa: E731
        return {
            "a": self.a,
            "b": self.b if self.b is not None else "(current)",
            "params": pairs(self.params),
            "metrics": pairs(self.metrics),
            "outputs": pairs(self.outputs),
            "files": pairs(self.files),
            "registry": pairs(self.registry),
            "code": self.code,
            "environment": pairs(self.environment),
        }


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Change]:
    return {
        k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }


def _code_paths(files: dict[str, str], a: Manifest, b: Manifest) -> dict[str, str]:
    def is_code(path: str) -> bool:
        return (
            path != MANIFEST_PATH
            and not path.startswith("params/")
            and a.part_of(path) is None
            and b.part_of(path) is None
        )

    return {p: oid for p, oid in files.items() if is_code(p)}


def diff_snapshots(paths: ProjectPaths, a: str, b: str | None = None) -> SnapshotDiff:
    """Compare snapshot `a` with snapshot `b`, or with the current state when `b` is None."""
    first = show_snapshot(paths, a)
    second = show_snapshot(paths, b) if b is not None else capture_state(paths)
    assert first.commit is not None
    old_tree = tree_files(paths.root, first.commit)
    new_tree = (
        tree_files(paths.root, second.commit) if second.commit else worktree_blob_hashes(paths.root)
    )
    old_code, new_code = _code_paths(old_tree, first, second), _code_paths(new_tree, first, second)
    code = sorted(p for p in set(old_code) | set(new_code) if old_code.get(p) != new_code.get(p))
    registry = _changes(
        {
            "model_version": first.model_version,
            **{f"alias.{k}": v for k, v in first.registry.alias_versions().items()},
        },
        {
            "model_version": second.model_version,
            **{f"alias.{k}": v for k, v in second.registry.alias_versions().items()},
        },
    )
    return SnapshotDiff(
        a=a,
        b=b,
        params=_changes(flatten(first.params), flatten(second.params)),
        metrics=_changes(flatten(first.metrics), flatten(second.metrics)),
        outputs=_changes(
            {p: o.md5 for p, o in first.outputs.items() if o.cache},
            {p: o.md5 for p, o in second.outputs.items() if o.cache},
        ),
        files=_changes(
            {p: f.sha256 for p, f in first.files.items()},
            {p: f.sha256 for p, f in second.files.items()},
        ),
        registry=registry,
        code=code,
        environment=first.environment.changes_to(second.environment),
    )
