"""Snapshot names and the refs under `refs/mlvs/snapshots/` that keep them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlvs.backends.git.run import _COMMITS, _resolve_commit, _run, run_git
from mlvs.errors import BadInputError, ExternalToolError, UnknownSnapshotError

SNAPSHOT_REF_PREFIX = "refs/mlvs/snapshots/"


MAX_NAME_LENGTH = 100


_NAME_RULE = (
    f"use 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "with no '..' and not ending in '.' or '.lock'"
)


_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]")


_NAME_START = re.compile(r"[A-Za-z0-9]")


def _shown(name: object) -> str:
    if isinstance(name, str) and len(name) > 40:
        return repr(name[:40] + "...")
    return repr(name)


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return "it is not text"
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it has {len(name)} characters"
    # git check-ref-format forbids '..' anywhere and a component ending in '.' or
    # '.lock' (the latter is git's own lock-file suffix).
    if ".." in name:
        return "it contains '..'"
    for char in name:
        if not _NAME_CHARS.fullmatch(char):
            return f"it contains {char!r}"
    if not _NAME_START.fullmatch(name[0]):
        return f"it starts with {name[0]!r}"
    if name.endswith(".lock"):
        return "it ends in '.lock'"
    if name.endswith("."):
        return "it ends in '.'"
    return None


def validate_snapshot_name(name: str) -> str:
    """Return `name` if it is a safe snapshot name, else raise BadInputError.

    Safe means usable as one git ref component and as one file name on every
    platform: no path separators, no '..', no whitespace or shell characters.
    """
    problem = _name_problem(name)
    if problem:
        raise BadInputError(
            f"snapshot name {_shown(name)} is not allowed ({problem}): {_NAME_RULE}"
        )
    return name


def _ref(name: str) -> str:
    return SNAPSHOT_REF_PREFIX + validate_snapshot_name(name)


def list_snapshot_refs(root: Path) -> list[tuple[str, str]]:
    """Return (name, commit sha) of every snapshot ref, sorted by name."""
    out = run_git(root, "for-each-ref", "--format=%(refname)%00%(objectname)", SNAPSHOT_REF_PREFIX)
    refs = []
    for line in out.splitlines():
        refname, _, sha = line.partition("\0")
        refs.append((refname[len(SNAPSHOT_REF_PREFIX) :], sha))
    return sorted(refs)


def snapshot_ref(root: Path, name: str) -> str | None:
    """Return the commit sha of snapshot `name`, or None when there is none."""
    done = _run(root, ("rev-parse", "--verify", "-q", _ref(name) + "^{commit}"), None, None)
    if done.returncode == 0:
        commit = done.stdout.decode().strip()
        _COMMITS[(os.path.realpath(root), commit)] = commit  # git has just shown it is a commit
        return commit
    if done.returncode == 1:
        return None
    raise ExternalToolError(
        f"git rev-parse failed in {root}: {done.stderr.decode('utf-8', 'replace').strip()}"
    )


def save_snapshot_ref(root: Path, name: str, sha: str) -> None:
    """Create the ref of snapshot `name` at commit `sha`; refuse to overwrite one."""
    ref = _ref(name)
    for existing, _ in list_snapshot_refs(root):
        # Loose refs are files: on a case-insensitive disk 'Best' and 'best' collide.
        if existing.casefold() == name.casefold():
            if existing == name:
                raise BadInputError(f"snapshot {name!r} exists already; choose another name")
            raise BadInputError(
                f"snapshot {name!r} differs from the existing snapshot {existing!r} only in case; "
                "choose another name"
            )
    commit = _resolve_commit(root, sha)
    # The empty old value makes git refuse if a concurrent command created the ref.
    done = _run(root, ("update-ref", "-m", f"mlvs snapshot {name}", ref, commit, ""), None, None)
    if done.returncode != 0:
        if snapshot_ref(root, name) is not None:
            raise BadInputError(f"snapshot {name!r} exists already; choose another name")
        raise ExternalToolError(
            f"git update-ref failed in {root}: {done.stderr.decode('utf-8', 'replace').strip()}"
        )


def remove_stale_ref_locks(root: Path) -> list[str]:
    """Delete the lock files a killed `git update-ref` left on mlvs's own refs; name them.

    Call only under the state lock: mlvs alone writes refs under `refs/mlvs/`, and only
    while it holds that lock, so any `.lock` there belongs to a git process that died
    with a killed command. Left in place, it would refuse every later write of that ref.
    """
    common = Path(run_git(root, "rev-parse", "--git-common-dir").strip())
    namespace = (common if common.is_absolute() else root / common) / "refs" / "mlvs"
    removed = []
    for lock in sorted(namespace.rglob("*.lock")) if namespace.is_dir() else []:
        if lock.is_file():
            lock.unlink(missing_ok=True)
            removed.append(lock.relative_to(namespace.parent.parent).as_posix())
    return removed


def delete_snapshot_ref(root: Path, name: str) -> None:
    """Delete the ref of snapshot `name`; its commit stays until `git gc` prunes it."""
    sha = snapshot_ref(root, name)
    if sha is None:
        raise UnknownSnapshotError(
            f"there is no snapshot named {name!r}; run `mlvs snapshot list` to see the snapshots"
        )
    run_git(root, "update-ref", "-d", _ref(name), sha)
