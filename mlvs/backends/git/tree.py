"""Committing the working tree through a throwaway index, and reading commits and the tree."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from mlvs.backends.git.run import (
    _COMMITS,
    _EXECUTABLE,
    _REGULAR,
    _SYMLINK,
    _TREES,
    Entry,
    _current_head_index,
    _head,
    _head_index,
    _identity_env,
    _require_toplevel,
    _resolve_commit,
    run_git,
    run_git_bytes,
)
from mlvs.errors import BadInputError

# What each commit made in this process saw untracked, so `snapshot create` can name it,
# and which working-tree files it holds that differ from HEAD, so a rollback can name them.
_UNTRACKED: dict[tuple[str, str], list[str]] = {}
_CHANGED: dict[tuple[str, str], list[str]] = {}
# The extra files each commit made in this process holds (a commit's bytes never change),
# so reading one back (a snapshot's manifest, for the reports index) asks git nothing.
_EXTRA: dict[tuple[str, str, str], bytes] = {}

# Untracked files that look like secrets never go into a snapshot commit: snapshot refs
# are pushed to teammates, and an untracked `.env` or key is there precisely because it
# must not be shared. Matched against every component of the path, case-insensitively.
SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.kdbx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "credentials*",
    "secrets.*",
    ".netrc",
    ".pypirc",
    ".git-credentials",
    ".ssh",
    ".aws",
)


def looks_secret(path: str) -> bool:
    """Tell whether a project-relative path matches one of `SECRET_PATTERNS`."""
    return any(
        fnmatch.fnmatchcase(part.casefold(), pattern)
        for part in path.split("/")
        for pattern in SECRET_PATTERNS
    )


def commit_worktree(
    root: Path,
    message: str,
    parent: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> str:
    """Commit the whole working tree without moving HEAD, the branch or the index.

    The commit holds every tracked file as it is on disk (deletions included) and
    every untracked file that git does not ignore, except those that look like
    secrets (`SECRET_PATTERNS`). Its parent is `parent`, else
    HEAD, else none (a repository without commits). `extra_files` (path -> bytes)
    are added to the commit only, never to the working tree; they replace a
    working-tree file of the same path. Returns the commit sha.
    """
    root = Path(root)
    _require_toplevel(root)
    head = _head(root)
    parents = [_resolve_commit(root, parent)] if parent else ([head] if head else [])
    with _head_index(root, head) as env:
        # Seeding from HEAD keeps tracked files that match an ignore pattern, as
        # `git commit -a` would; `add -A` then records edits, deletions and new files.
        run_git(root, "add", "-A", env=env)
        # What `add -A` changed against HEAD: an added path is one git saw untracked.
        changes = _index_changes(root, env, head)
        others = sorted(path for path, status in changes.items() if status == "A")
        withheld = [name for name in others if looks_secret(name)]
        if withheld:
            run_git(
                root,
                "update-index",
                "-z",
                "--force-remove",
                "--stdin",
                input=b"".join(os.fsencode(name) + b"\0" for name in withheld),
                env=env,
            )
        for path, content in (extra_files or {}).items():
            relative = _relative_path(path)
            if not relative or not _is_safe_tree_path(relative):
                raise BadInputError(
                    f"extra file path {path!r} is not allowed: give a plain relative path"
                )
            oid = run_git(root, "hash-object", "-w", "--stdin", input=content).strip()
            run_git(
                root,
                "update-index",
                "--add",
                "--cacheinfo",
                f"{_REGULAR},{oid},{relative}",
                env=env,
            )
        tree = run_git(root, "write-tree", env=env).strip()
    args = ["commit-tree", "--no-gpg-sign"]
    for sha in parents:
        args += ["-p", sha]
    text = message if message.endswith("\n") else message + "\n"
    commit = run_git(
        root, *args, "-F", "-", tree, input=text.encode(), env=_identity_env(root)
    ).strip()
    _COMMITS[(os.path.realpath(root), commit)] = commit
    key = (os.path.realpath(root), commit)
    for path, content in (extra_files or {}).items():
        _EXTRA[(*key, _relative_path(path))] = content
    _UNTRACKED[key] = others
    if parents == ([head] if head else []):
        secret = set(withheld)
        _CHANGED[key] = sorted(path for path in changes if path not in secret)
    return commit


def _index_changes(root: Path, env: Mapping[str, str], head: str | None) -> dict[str, str]:
    """Path -> status letter (A, M, D, T) of each index entry that differs from HEAD."""
    if head is None:  # no commit yet: every entry is new
        listed = run_git_bytes(root, "ls-files", "-z", env=env)
        return {os.fsdecode(raw): "A" for raw in listed.split(b"\0") if raw}
    out = run_git_bytes(
        root, "diff-index", "-z", "--cached", "--no-renames", "--name-status", head, env=env
    )
    fields = [os.fsdecode(raw) for raw in out.split(b"\0")]
    return {fields[i + 1]: fields[i][:1] for i in range(0, len(fields) - 1, 2) if fields[i]}


def _tree_entries(root: Path, sha: str) -> dict[str, Entry]:
    commit = _resolve_commit(root, sha)
    key = (os.path.realpath(root), commit)
    if key in _TREES:
        return dict(_TREES[key])
    out = run_git_bytes(root, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries: dict[str, Entry] = {}
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split(" ")
        if kind == "blob":  # submodules ('commit') are not files of this repository
            # Old gits wrote modes like 100664; git itself reads them as 100644.
            normal = mode if mode in (_EXECUTABLE, _SYMLINK) else _REGULAR
            entries[os.fsdecode(path)] = (normal, oid)
    if len(_TREES) > 16:
        _TREES.clear()
    _TREES[key] = entries
    return dict(entries)


def tree_files(root: Path, sha: str) -> dict[str, str]:
    """Return path -> blob sha of every file in commit `sha`, recursively."""
    return {path: oid for path, (_, oid) in _tree_entries(root, sha).items()}


def read_file_at(root: Path, sha: str, path: str) -> bytes | None:
    """Return the bytes of `path` in commit `sha`, or None when it holds no such file."""
    relative = _relative_path(path)
    if not relative:
        return None
    out = run_git_bytes(
        root, "ls-tree", "-z", "--full-tree", _resolve_commit(root, sha), "--", relative
    )
    record = out.split(b"\0")[0]
    if not record:
        return None
    _, kind, oid = record.partition(b"\t")[0].decode().split(" ")
    if kind != "blob":
        return None
    return run_git_bytes(root, "cat-file", "blob", oid)


def read_files_at(root: Path, items: list[tuple[str, str]]) -> list[bytes | None]:
    """Return the bytes of each (commit sha, path), None where there is no such file.

    One `git cat-file --batch` process reads them all, so listing many snapshots stays cheap.
    """
    if not items:
        return []
    requests = []
    known: dict[int, bytes] = {}
    real = os.path.realpath(root)
    for position, (sha, path) in enumerate(items):
        relative = _relative_path(path)
        if "\n" in relative or not re.fullmatch(r"[0-9a-fA-F]{4,64}", sha):
            raise BadInputError(
                f"cannot read {path!r} at {sha!r}: give a commit sha and a one-line path"
            )
        committed = _EXTRA.get((real, sha, relative))
        if committed is not None:
            known[position] = committed
        else:
            requests.append(f"{sha}:{relative}\n")
    if len(known) == len(items):
        return [known[i] for i in range(len(items))]
    out = run_git_bytes(root, "cat-file", "--batch", input="".join(requests).encode())
    found: list[bytes | None] = []
    position = 0
    for index in range(len(items)):
        if index in known:
            found.append(known[index])
            continue
        end = out.index(b"\n", position)
        header = out[position:end].decode("utf-8", "surrogateescape").split(" ")
        if len(header) == 3 and header[1] == "blob":
            size = int(header[2])
            found.append(out[end + 1 : end + 1 + size])
            position = end + 1 + size + 1
        elif len(header) == 3:  # a tree or other object at that path: not a file
            position = end + 1 + int(header[2]) + 1
            found.append(None)
        else:  # "<request> missing"
            position = end + 1
            found.append(None)
    return found


def _listing(root: Path) -> list[str]:
    """Every file git lists in the working tree, untracked secrets left out."""
    root = Path(root)
    _require_toplevel(root)
    with _current_head_index(root) as env:
        # Against a HEAD-seeded index, --cached is what HEAD tracks and --others is
        # exactly the untracked files that git does not ignore; -t tags the latter '?'.
        out = run_git_bytes(
            root, "ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard", env=env
        )
    listed = []
    for raw in out.split(b"\0"):
        if not raw:
            continue
        tag, _, name = raw.partition(b" ")
        path = os.fsdecode(name)
        if tag == b"?" and looks_secret(path):
            continue
        listed.append(path)
    return listed


def untracked_files(root: Path, commit: str | None = None) -> tuple[list[str], list[str]]:
    """(included, withheld): the untracked files a snapshot commit takes, and the secrets it leaves out.

    Given the `commit` that `commit_worktree` just made in this process, the answer is
    what that commit saw, without asking git again.
    """
    root = Path(root)
    names = _UNTRACKED.get((os.path.realpath(root), commit)) if commit else None
    if names is None:
        _require_toplevel(root)
        with _current_head_index(root) as env:
            names = _others(root, env)
    return [n for n in names if not looks_secret(n)], [n for n in names if looks_secret(n)]


def _others(root: Path, env: Mapping[str, str]) -> list[str]:
    out = run_git_bytes(root, "ls-files", "-z", "--others", "--exclude-standard", env=env)
    return [os.fsdecode(raw) for raw in out.split(b"\0") if raw]


def _worktree_files(root: Path) -> dict[str, str]:
    """Return path -> git mode of every file `commit_worktree` would include."""
    root = Path(root)
    files: dict[str, str] = {}
    symlinked: dict[str, bool] = {}
    for path in _listing(root):
        if _behind_symlink(root, path, symlinked):
            continue  # git sees a file beyond a symlink as deleted
        try:
            info = os.lstat(root / path)
        except (FileNotFoundError, NotADirectoryError):
            continue  # tracked but deleted on disk
        if stat.S_ISLNK(info.st_mode):
            files[path] = _SYMLINK
        elif stat.S_ISREG(info.st_mode):
            files[path] = _EXECUTABLE if info.st_mode & stat.S_IXUSR else _REGULAR
        # anything else is a nested repository or submodule: not a file of ours
    return files


def _behind_symlink(root: Path, path: str, cache: dict[str, bool] | None = None) -> bool:
    """Tell whether a directory on the way to `path` is a symlink."""
    cache = {} if cache is None else cache
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        directory = "/".join(parts[:depth])
        if directory not in cache:
            cache[directory] = (root / directory).is_symlink()
        if cache[directory]:
            return True
    return False


def _blob_sha(content: bytes, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    digest.update(b"blob %d\0" % len(content) + content)
    return digest.hexdigest()


def _symlink_blob_sha(root: Path, path: str, algorithm: str) -> str:
    # `git hash-object` follows symlinks; git stores the link text itself.
    return _blob_sha(os.fsencode(os.readlink(root / path)), algorithm)


def file_at_or_known(root: Path, sha: str, path: str, known: bytes | None) -> bytes | None:
    """`read_file_at`, answered without reading the blob when it is `known`, the bytes the caller holds.

    The commit's listing gives the blob's id; `known` bytes whose git blob id is that
    id are that blob, byte for byte. Otherwise git reads it.
    """
    oid = tree_files(root, sha).get(_relative_path(path))
    if oid is None:
        return None
    if known is not None and _blob_sha(known, "sha1" if len(oid) == 40 else "sha256") == oid:
        return known
    return run_git_bytes(root, "cat-file", "blob", oid)


def worktree_entries(root: Path) -> dict[str, Entry]:
    """Return path -> (git mode, blob sha) of every file `commit_worktree` would include now.

    Reads only: no object is written and the index is left alone.
    """
    root = Path(root)
    files = _worktree_files(root)
    regular = [p for p, mode in files.items() if mode != _SYMLINK]
    # --stdin-paths reads lines and C-unquotes a line that starts with '"'.
    one_by_one = [p for p in regular if "\n" in p or p.startswith('"')]
    batch = [p for p in regular if p not in one_by_one]
    shas: dict[str, str] = {}
    if batch:
        # One process hashes every file, applying the same clean filters as `git add`.
        out = run_git(
            root,
            "hash-object",
            "--stdin-paths",
            input=b"".join(os.fsencode(p) + b"\n" for p in batch),
        )
        shas.update(zip(batch, out.split(), strict=True))
    for path in one_by_one:
        shas[path] = run_git(root, "hash-object", "--", path).strip()
    links = [p for p, mode in files.items() if mode == _SYMLINK]
    if links:
        algorithm = run_git(root, "rev-parse", "--show-object-format").strip() or "sha1"
        for path in links:
            shas[path] = _symlink_blob_sha(root, path, algorithm)
    return {path: (mode, shas[path]) for path, mode in files.items()}


def uncommitted_files(root: Path, commit: str | None = None) -> list[str]:
    """The files whose working-tree state differs from HEAD: edited, new or deleted.

    Given `commit`, a `commit_worktree` commit of that working tree (whose parent
    is HEAD), the answer is what that commit saw when this process made it, else
    git compares it with its parent in one process; the working tree is not hashed
    again. Files the commit holds that are not in the working tree (its manifest)
    may be named too.
    """
    if commit:
        remembered = _CHANGED.get((os.path.realpath(root), commit))
        if remembered is not None:
            return list(remembered)
        out = run_git_bytes(
            root,
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            "--no-commit-id",
            "--name-only",
            "--root",
            _resolve_commit(root, commit),
        )
        return sorted(os.fsdecode(name) for name in out.split(b"\0") if name)
    present = worktree_blob_hashes(root)
    head = _head(Path(root))
    committed = tree_files(root, head) if head else {}
    changed = {p for p, oid in present.items() if committed.get(p) != oid}
    return sorted(changed | (committed.keys() - present.keys()))


def worktree_blob_hashes(root: Path) -> dict[str, str]:
    """Return path -> blob sha of every file `commit_worktree` would include now.

    Reads only: no object is written and the index is left alone.
    """
    return {path: oid for path, (_, oid) in worktree_entries(root).items()}


def _relative_path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path).replace("\\", "/")
    pure = PurePosixPath(text)
    if pure.is_absolute() or ".." in pure.parts:
        raise BadInputError(
            f"path {text!r} is not allowed: give a path relative to the project root, without '..'"
        )
    return "" if str(pure) == "." else str(pure)


def _is_safe_tree_path(path: str) -> bool:
    parts = path.split("/")
    return all(part not in ("", ".", "..") and part.casefold() != ".git" for part in parts)
