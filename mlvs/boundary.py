"""The workspace boundary: the one place that decides whether a path or a hash from outside is safe.

Paths and hashes that mlvs did not compute in this process come from files others
can write: a manifest in a fetched snapshot ref, `dvc.lock` and `.dvc` files of a
pulled commit, `.dir` objects on the shared remote, the journal and hash cache
under `.mlvs/`, the incident catalog in `params/`, the command line. Each of them
passes through a function here before it becomes a file name, so no such input
can make mlvs read, write, move or delete anything outside the workspace and its
configured stores.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path, PurePosixPath

from mlvs.errors import BadInputError

# Directories of the tools' and mlvs's own state: never restored from a snapshot,
# never the target of a drill, never named by a manifest.
PROTECTED_DIRS = frozenset({".git", ".dvc", ".mlvs"})

_MD5 = re.compile(r"[0-9a-f]{32}")
_MD5_DIR = re.compile(r"[0-9a-f]{32}\.dir")
_MAX_PATH = 4096


class UnsafeInputError(BadInputError):
    """Raised when a path or hash read from outside would leave the workspace or is malformed."""


def relative_path(value: object, source: str) -> str:
    """Return `value` as a normalised project-relative POSIX path, or refuse it.

    Lexical checks only (no file system access): a string, not empty, no NUL, not
    absolute, no `..` component, no drive or backslash. `source` names where the
    value came from, for the error line.
    """
    if not isinstance(value, str) or not value.strip():
        raise UnsafeInputError(f"{source}: path {value!r} is not a path; give a non-empty string")
    if len(value) > _MAX_PATH or "\x00" in value:
        raise UnsafeInputError(f"{source}: path {value[:80]!r}... is not a usable file name")
    text, problem = _lexical(value)
    if problem:
        raise UnsafeInputError(f"{source}: path {value!r} {problem}")
    return text


@functools.lru_cache(maxsize=8192)
def _lexical(value: str) -> tuple[str, str]:
    # (normalised path, what is wrong with it or ""). Cached: every manifest of a
    # project names the same few paths, and `snapshot list` reads all of them.
    if "\\" in value or re.match(r"^[A-Za-z]:", value):
        return "", "uses a drive or backslash; use '/' relative to the project root"
    pure = PurePosixPath(value)
    if pure.is_absolute():
        return "", "is absolute; only paths inside the project are allowed"
    if ".." in pure.parts:
        return "", "climbs out with '..'; only paths inside the project are allowed"
    parts = [part for part in pure.parts if part != "."]
    if not parts:
        return "", "names the project root itself"
    return "/".join(parts), ""


def inside(root: Path, relative: object, source: str) -> Path:
    """Return `root / relative` after checking it stays under `root` with symlinks followed.

    The path itself is returned unresolved (a caller that replaces a symlink
    replaces the link), but every existing link on the way is followed for the
    check, so a symlinked directory or file pointing outside is refused.
    """
    text = relative_path(relative, source)
    base = root.resolve()
    candidate = root / text
    resolved = Path(os.path.realpath(candidate))
    if resolved != base and base not in resolved.parents:
        raise UnsafeInputError(
            f"{source}: path {text!r} resolves to {resolved}, outside {base}; "
            "remove the symlink or keep the file inside the project"
        )
    return candidate


def project_path(value: object, source: str) -> str:
    """Like `relative_path`, and also refuse the tools' own state directories (.git, .dvc, .mlvs).

    Lexical only: for a record read before the workspace is at hand (a manifest);
    `workspace_file` adds the symlink check once it is.
    """
    text = relative_path(value, source)
    first = text.split("/", 1)[0]
    if first.casefold() in PROTECTED_DIRS:
        raise UnsafeInputError(
            f"{source}: path {value!r} lies in {first}/, which mlvs never restores or changes"
        )
    return text


def workspace_file(root: Path, relative: object, source: str) -> Path:
    """Like `inside`, and also refuse the tools' own state directories (.git, .dvc, .mlvs)."""
    project_path(relative, source)
    return inside(root, relative, source)


def md5_value(value: object, source: str, *, directory: bool | None = None) -> str:
    """Return `value` if it is an MD5 hex digest (32 lowercase hex, `.dir` for a directory).

    `directory`: True requires the `.dir` suffix, False forbids it, None allows either.
    A hash becomes a path in the cache and on the remote, so nothing else may pass.
    """
    text = value if isinstance(value, str) else ""
    plain = bool(_MD5.fullmatch(text))
    listing = bool(_MD5_DIR.fullmatch(text))
    allowed = (plain or listing) if directory is None else (listing if directory else plain)
    if not allowed:
        kind = {None: "an MD5 digest", True: "a directory digest", False: "an MD5 digest"}[
            directory
        ]
        shown = repr(value)[:80]
        raise UnsafeInputError(
            f"{source}: {shown} is not {kind} (32 hex digits"
            + ("" if directory is False else ", '.dir' for a directory")
            + "); the file is damaged or not from mlvs"
        )
    return text
