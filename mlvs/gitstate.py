"""The pure-git layer of whole-system snapshots.

A snapshot's code and params are one git commit of the whole working tree, made
through a throwaway index so that the user's branch, HEAD and index never move.
The commit is kept alive by a ref under `refs/mlvs/snapshots/`: `git log` of a
branch does not show it, but `git gc` keeps everything such a ref reaches.

`root` is always the top directory of a git working tree. Paths are relative to
it and written with '/'. Files that git ignores (the virtualenv, DVC's cache,
DVC-tracked data, MLflow's database) are never read, written or deleted here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from mlvs.errors import BadInputError, ExternalToolError, IntegrityError, UnknownSnapshotError

log = logging.getLogger(__name__)

SNAPSHOT_REF_PREFIX = "refs/mlvs/snapshots/"
MAX_NAME_LENGTH = 100
PROJECT_IDENTITY = ("mlvs", "mlvs@localhost")

_NAME_RULE = (
    f"use 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "with no '..' and not ending in '.' or '.lock'"
)
_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]")
_NAME_START = re.compile(r"[A-Za-z0-9]")

_REGULAR, _EXECUTABLE, _SYMLINK = "100644", "100755", "120000"
Entry = tuple[str, str]  # (git file mode, blob sha)

# Inherited from a git hook or a wrapper script, these would point git at another
# repository, index or namespace than the one at `root`.
_REDIRECTING_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


# --- running git -------------------------------------------------------------


def _git_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING_VARIABLES}
    # Paths we pass are file names, never patterns: 'a[1].csv' must mean that file.
    env["GIT_LITERAL_PATHSPECS"] = "1"
    env.update(extra or {})
    return env


def _run(
    root: Path, args: tuple[str, ...], input: bytes | None, env: Mapping[str, str] | None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, input=input, env=_git_env(env), capture_output=True, check=False
        )
    except FileNotFoundError as error:
        if not Path(root).is_dir():
            raise BadInputError(f"{root} is not a directory; point mlvs at the project root") from None
        raise ExternalToolError("git is not installed or not on PATH; install git and try again") from error


def exit_text(code: int) -> str:
    """How a child process ended, for a person: a signal by its name (SIGXFSZ: the file size limit)."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if name == "SIGXFSZ":
        return "killed by SIGXFSZ: a file grew past the file size limit (ulimit -f); raise the limit or free disk space"
    return f"killed by {name}"


def _git_bytes(
    root: Path, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> bytes:
    done = _run(root, args, input, env)
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise ExternalToolError(
            f"git {args[0]} failed in {root}: {stderr or exit_text(done.returncode)}"
        )
    return done.stdout


def run_git(
    root: Path, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Run `git ARGS` in `root` and return its stdout.

    `env` adds to (and overrides) the inherited environment. Raises ExternalToolError
    carrying git's stderr when git fails.
    """
    return _git_bytes(root, *args, input=input, env=env).decode("utf-8", "surrogateescape")


# Within one command a checked answer stays true while `.git` is the same entry; a git
# process costs milliseconds, and a rollback would otherwise ask the same thing many times.
_TOPLEVELS: set[tuple[str, int, int]] = set()
_COMMITS: dict[tuple[str, str], str] = {}
_TREES: dict[tuple[str, str], dict[str, Entry]] = {}
_FULL_ID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def is_object_id(rev: str) -> bool:
    """Whether `rev` is a full object id (SHA-1 or SHA-256), which names the same object for good."""
    return _FULL_ID.fullmatch(rev) is not None


def _toplevel_key(root: Path) -> tuple[str, int, int] | None:
    try:
        info = os.stat(Path(root) / ".git")
    except OSError:
        return None
    return (os.path.realpath(root), info.st_dev, info.st_ino)


def _require_toplevel(root: Path) -> None:
    # Every path here is relative to the top of the working tree; from a
    # subdirectory, `ls-files` and `hash-object` would silently use other bases.
    if known_toplevel(root):
        return
    done = _run(root, ("rev-parse", "--show-toplevel", "--show-prefix"), None, None)
    if done.returncode != 0:
        raise BadInputError(
            f"{root} is not inside a git working tree; run `git init` there first"
        )
    lines = done.stdout.decode("utf-8", "surrogateescape").splitlines()
    if len(lines) > 1 and lines[1]:
        raise BadInputError(
            f"{root} is inside the git repository at {lines[0]} but is not its top directory; "
            "keep the mlvs project at the top of its git working tree"
        )
    remember_toplevel(root)


def known_toplevel(root: Path) -> bool:
    """Whether this process has already seen `root` to be the top of its git working tree."""
    key = _toplevel_key(root)
    return key is not None and key in _TOPLEVELS


def remember_toplevel(root: Path) -> None:
    """Record that `root` was checked to be the top of its git working tree."""
    key = _toplevel_key(root)
    if key is not None:
        _TOPLEVELS.add(key)


def _head(root: Path) -> str | None:
    """Return HEAD's commit, or None in a repository with no commit yet."""
    done = _run(root, ("rev-parse", "--verify", "-q", "HEAD^{commit}"), None, None)
    if done.returncode == 0:
        return done.stdout.decode().strip()
    if done.returncode == 1:  # unborn branch: --verify -q fails quietly
        return None
    raise ExternalToolError(f"git rev-parse failed in {root}: {done.stderr.decode('utf-8', 'replace').strip()}")


def _resolve_commit(root: Path, rev: str) -> str:
    key = (os.path.realpath(root), rev)
    if key in _COMMITS:
        return _COMMITS[key]
    done = _run(root, ("rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}"), None, None)
    if done.returncode != 0:
        raise ExternalToolError(f"{rev!r} is not a commit in the git repository at {root}")
    commit = done.stdout.decode().strip()
    if is_object_id(rev):
        _COMMITS[key] = commit
    return commit


@contextmanager
def _head_index(root: Path, head: str | None) -> Iterator[dict[str, str]]:
    """Yield the env of a throwaway index that holds HEAD's tree (empty with no HEAD)."""
    with tempfile.TemporaryDirectory(prefix="mlvs-index-") as tmp:
        # The file must not exist yet: git reads an empty file as a corrupt index.
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if head is not None:
            run_git(root, "read-tree", head, env=env)
        yield env


def _identity_env(root: Path) -> dict[str, str]:
    """Return GIT_AUTHOR_*/GIT_COMMITTER_* values for whatever identity git lacks.

    Git refuses to commit without a name and email; a fresh CI machine or
    container often has neither, and mlvs must never write the user's config.
    """
    done = _run(root, ("config", "-z", "--get-regexp", r"^(user|author|committer)\.(name|email)$"), None, None)
    configured = set()
    for item in done.stdout.decode("utf-8", "surrogateescape").split("\0"):
        key, _, value = item.partition("\n")
        if value.strip():
            configured.add(key.lower())
    env: dict[str, str] = {}
    name, email = PROJECT_IDENTITY
    for role in ("author", "committer"):
        upper = role.upper()
        if not os.environ.get(f"GIT_{upper}_NAME") and not {"user.name", f"{role}.name"} & configured:
            env[f"GIT_{upper}_NAME"] = name
        has_email = os.environ.get(f"GIT_{upper}_EMAIL") or os.environ.get("EMAIL")
        if not has_email and not {"user.email", f"{role}.email"} & configured:
            env[f"GIT_{upper}_EMAIL"] = email
    return env


# --- snapshot names and refs ---------------------------------------------------


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
        raise BadInputError(f"snapshot name {_shown(name)} is not allowed ({problem}): {_NAME_RULE}")
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
        return done.stdout.decode().strip()
    if done.returncode == 1:
        return None
    raise ExternalToolError(f"git rev-parse failed in {root}: {done.stderr.decode('utf-8', 'replace').strip()}")


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


def delete_snapshot_ref(root: Path, name: str) -> None:
    """Delete the ref of snapshot `name`; its commit stays until `git gc` prunes it."""
    sha = snapshot_ref(root, name)
    if sha is None:
        raise UnknownSnapshotError(
            f"there is no snapshot named {name!r}; run `mlvs snapshot list` to see the snapshots"
        )
    run_git(root, "update-ref", "-d", _ref(name), sha)


# --- committing the working tree ----------------------------------------------


def commit_worktree(
    root: Path, message: str, parent: str | None = None, extra_files: Mapping[str, bytes] | None = None
) -> str:
    """Commit the whole working tree without moving HEAD, the branch or the index.

    The commit holds every tracked file as it is on disk (deletions included) and
    every untracked file that git does not ignore. Its parent is `parent`, else
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
        for path, content in (extra_files or {}).items():
            relative = _relative_path(path)
            if not relative or not _is_safe_tree_path(relative):
                raise BadInputError(f"extra file path {path!r} is not allowed: give a plain relative path")
            oid = run_git(root, "hash-object", "-w", "--stdin", input=content).strip()
            run_git(root, "update-index", "--add", "--cacheinfo", f"{_REGULAR},{oid},{relative}", env=env)
        tree = run_git(root, "write-tree", env=env).strip()
    args = ["commit-tree", "--no-gpg-sign"]
    for sha in parents:
        args += ["-p", sha]
    text = message if message.endswith("\n") else message + "\n"
    commit = run_git(root, *args, "-F", "-", tree, input=text.encode(), env=_identity_env(root)).strip()
    _COMMITS[(os.path.realpath(root), commit)] = commit
    return commit


# --- reading commits and the working tree --------------------------------------


def _tree_entries(root: Path, sha: str) -> dict[str, Entry]:
    commit = _resolve_commit(root, sha)
    key = (os.path.realpath(root), commit)
    if key in _TREES:
        return dict(_TREES[key])
    out = _git_bytes(root, "ls-tree", "-r", "-z", "--full-tree", commit)
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
    out = _git_bytes(root, "ls-tree", "-z", "--full-tree", _resolve_commit(root, sha), "--", relative)
    record = out.split(b"\0")[0]
    if not record:
        return None
    _, kind, oid = record.partition(b"\t")[0].decode().split(" ")
    if kind != "blob":
        return None
    return _git_bytes(root, "cat-file", "blob", oid)


def read_files_at(root: Path, items: list[tuple[str, str]]) -> list[bytes | None]:
    """Return the bytes of each (commit sha, path), None where there is no such file.

    One `git cat-file --batch` process reads them all, so listing many snapshots stays cheap.
    """
    if not items:
        return []
    requests = []
    for sha, path in items:
        relative = _relative_path(path)
        if "\n" in relative or not re.fullmatch(r"[0-9a-fA-F]{4,64}", sha):
            raise BadInputError(f"cannot read {path!r} at {sha!r}: give a commit sha and a one-line path")
        requests.append(f"{sha}:{relative}\n")
    out = _git_bytes(root, "cat-file", "--batch", input="".join(requests).encode())
    found: list[bytes | None] = []
    position = 0
    for _ in items:
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


def _worktree_files(root: Path) -> dict[str, str]:
    """Return path -> git mode of every file `commit_worktree` would include."""
    root = Path(root)
    _require_toplevel(root)
    with _head_index(root, _head(root)) as env:
        # Against a HEAD-seeded index, --cached is what HEAD tracks and --others is
        # exactly the untracked files that git does not ignore.
        out = _git_bytes(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", env=env)
    files: dict[str, str] = {}
    symlinked: dict[str, bool] = {}
    for raw in out.split(b"\0"):
        if not raw:
            continue
        path = os.fsdecode(raw)
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


def _symlink_blob_sha(root: Path, path: str, algorithm: str) -> str:
    # `git hash-object` follows symlinks; git stores the link text itself.
    target = os.fsencode(os.readlink(root / path))
    digest = hashlib.new(algorithm)
    digest.update(b"blob %d\0" % len(target) + target)
    return digest.hexdigest()


def _worktree_entries(root: Path) -> dict[str, Entry]:
    root = Path(root)
    files = _worktree_files(root)
    regular = [p for p, mode in files.items() if mode != _SYMLINK]
    # --stdin-paths reads lines and C-unquotes a line that starts with '"'.
    one_by_one = [p for p in regular if "\n" in p or p.startswith('"')]
    batch = [p for p in regular if p not in one_by_one]
    shas: dict[str, str] = {}
    if batch:
        # One process hashes every file, applying the same clean filters as `git add`.
        out = run_git(root, "hash-object", "--stdin-paths", input=b"".join(os.fsencode(p) + b"\n" for p in batch))
        shas.update(zip(batch, out.split(), strict=True))
    for path in one_by_one:
        shas[path] = run_git(root, "hash-object", "--", path).strip()
    links = [p for p, mode in files.items() if mode == _SYMLINK]
    if links:
        algorithm = run_git(root, "rev-parse", "--show-object-format").strip() or "sha1"
        for path in links:
            shas[path] = _symlink_blob_sha(root, path, algorithm)
    return {path: (mode, shas[path]) for path, mode in files.items()}


def worktree_blob_hashes(root: Path) -> dict[str, str]:
    """Return path -> blob sha of every file `commit_worktree` would include now.

    Reads only: no object is written and the index is left alone.
    """
    return {path: oid for path, (_, oid) in _worktree_entries(root).items()}


# --- restoring the working tree ------------------------------------------------


def _relative_path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path).replace("\\", "/")
    pure = PurePosixPath(text)
    if pure.is_absolute() or ".." in pure.parts:
        raise BadInputError(
            f"path {text!r} is not allowed: give a path relative to the project root, without '..'"
        )
    return "" if str(pure) == "." else str(pure)


def _read_blobs(root: Path, oids: set[str]) -> dict[str, bytes]:
    """Read many blobs through one `git cat-file --batch` process."""
    if not oids:
        return {}
    order = sorted(oids)
    out = _git_bytes(root, "cat-file", "--batch", input="".join(f"{oid}\n" for oid in order).encode())
    blobs: dict[str, bytes] = {}
    position = 0
    for oid in order:
        end = out.index(b"\n", position)
        header = out[position:end].decode().split(" ")
        if len(header) != 3 or header[1] != "blob":
            raise IntegrityError(
                f"git object {oid} is missing or not a file in the repository at {root}; "
                "the snapshot cannot be restored from git (run `git fsck` to inspect the damage)"
            )
        size = int(header[2])
        blobs[oid] = out[end + 1 : end + 1 + size]
        position = end + 1 + size + 1  # content is followed by a newline
    return blobs


def _in_scope(path: str, scope: list[str] | None) -> bool:
    if scope is None:
        return True
    return any(not s or path == s or path.startswith(s + "/") for s in scope)


def _is_safe_tree_path(path: str) -> bool:
    parts = path.split("/")
    return all(part not in ("", ".", "..") and part.casefold() != ".git" for part in parts)


def _remove_empty_parents(root: Path, path: Path) -> None:
    parent = path.parent
    while parent != root:
        try:
            parent.rmdir()
        except OSError:  # not empty (e.g. ignored files live there) or already gone
            return
        parent = parent.parent


def _temporary_sibling(destination: Path) -> Path:
    # Next to the destination so that os.replace stays on one file system.
    return destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.mlvs-tmp")


def _write_entry(destination: Path, mode: str, content: bytes) -> None:
    """Replace `destination` atomically with a file (or symlink) of git mode `mode`."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(destination)
    try:
        if mode == _SYMLINK:
            os.symlink(os.fsdecode(content), temporary)
        else:
            # Like git checkout: 0777 or 0666, less the umask that os.open applies.
            permissions = 0o777 if mode == _EXECUTABLE else 0o666
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), permissions)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _set_executable(destination: Path, executable: bool) -> None:
    current = stat.S_IMODE(os.lstat(destination).st_mode)
    # Grant execute exactly where read is granted, as git's 0777-less-umask would.
    wanted = current | ((current & 0o444) >> 2) if executable else current & ~0o111
    os.chmod(destination, wanted)


def fsync_directories(directories: set[Path]) -> None:
    """Make renames and deletions in these directories durable (best effort, POSIX only)."""
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    for directory in directories:
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def restore_worktree(root: Path, sha: str, paths: list[str] | None = None) -> list[str]:
    """Make the working tree's files equal to commit `sha`'s, for `paths` (all when None).

    A path names a file or a directory. Only files that differ are written (each
    one atomically); files that `commit_worktree` would include but the commit
    lacks are deleted. Ignored files are never touched, so a target file whose
    place an ignored file or directory occupies is skipped with a warning. HEAD,
    the branch and the index do not move. Returns the changed paths, sorted.
    """
    root = Path(root)
    scope = None if paths is None else [_relative_path(p) for p in paths]
    target = _tree_entries(root, sha)
    unsafe = sorted(p for p in target if not _is_safe_tree_path(p))
    if unsafe:
        raise IntegrityError(
            f"commit {sha} holds the unsafe path {unsafe[0]!r}; refusing to restore it into the working tree"
        )
    current = _worktree_entries(root)

    to_delete = sorted(p for p in current if p not in target and _in_scope(p, scope))
    to_write = sorted(p for p, entry in target.items() if _in_scope(p, scope) and current.get(p) != entry)
    # Read every blob before changing anything: a missing object refuses the whole restore.
    blobs = _read_blobs(root, {target[p][1] for p in to_write})

    changed: list[str] = []
    touched: set[Path] = set()
    for path in to_delete:
        destination = root / path
        destination.unlink(missing_ok=True)
        _remove_empty_parents(root, destination)
        touched.add(destination.parent)
        changed.append(path)

    for path in to_write:
        mode, oid = target[path]
        destination = root / path
        existing = current.get(path)
        # Writing through a symlinked directory would change files outside the tree.
        if existing is None and (os.path.lexists(destination) or _behind_symlink(root, path)):
            log.warning("left %s alone: git ignores what is at its place in the working tree", path)
            continue
        if existing is not None and existing[1] == oid and _SYMLINK not in (mode, existing[0]):
            _set_executable(destination, mode == _EXECUTABLE)
        else:
            try:
                _write_entry(destination, mode, blobs[oid])
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                log.warning("left %s alone: an ignored file or directory is in its way", path)
                continue
        touched.add(destination.parent)
        changed.append(path)

    fsync_directories({d for d in touched if d.is_dir()})
    return sorted(changed)
