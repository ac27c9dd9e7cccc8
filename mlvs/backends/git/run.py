"""Running git: the environment it runs in, its errors, answers cached per command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlvs.errors import BadInputError, ExternalToolError

PROJECT_IDENTITY = ("mlvs", "mlvs@localhost")


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


def _git_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING_VARIABLES}
    # Paths we pass are file names, never patterns: 'a[1].csv' must mean that file.
    env["GIT_LITERAL_PATHSPECS"] = "1"
    env.update(extra or {})
    return env


# git flushes neither loose objects nor refs by default (`core.fsync` leaves them out): after
# a power cut a snapshot's ref could name a commit whose object is empty, or be empty itself,
# while mlvs's journal, flushed later, says the snapshot was saved. So every git that mlvs
# runs flushes the objects and refs it writes (and the index) before renaming them into place
# (git 2.36 and later; older gits ignore the setting).
DURABLE = ("-c", "core.fsync=committed,index", "-c", "core.fsyncMethod=fsync")


def _run(
    root: Path, args: tuple[str, ...], input: bytes | None, env: Mapping[str, str] | None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *DURABLE, *args],
            cwd=root,
            input=input,
            env=_git_env(env),
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as error:
        if not Path(root).is_dir():
            raise BadInputError(
                f"{root} is not a directory; point mlvs at the project root"
            ) from None
        raise ExternalToolError(
            "git is not installed or not on PATH; install git and try again"
        ) from error


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


def run_git_bytes(
    root: Path, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> bytes:
    """Run `git ARGS` in `root` and return its stdout as bytes (as `run_git`, for binary answers)."""
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
    return run_git_bytes(root, *args, input=input, env=env).decode("utf-8", "surrogateescape")


def git_answer(root: Path, *args: str) -> str:
    """The stripped stdout of `git ARGS` in `root`, or "" when git fails: for optional answers."""
    done = _run(root, args, None, None)
    if done.returncode != 0:
        return ""
    return done.stdout.decode("utf-8", "surrogateescape").strip()


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
        raise BadInputError(f"{root} is not inside a git working tree; run `git init` there first")
    lines = done.stdout.decode("utf-8", "surrogateescape").splitlines()
    if len(lines) > 1 and lines[1]:
        raise BadInputError(
            f"{root} is inside the git repository at {lines[0]} but is not its top directory; "
            "keep the mlvs project at the top of its git working tree"
        )
    remember_toplevel(root)


def known_toplevel(root: Path) -> bool:
    """Whether `root` is known to be the top of its git working tree, without running git.

    Known when this process has checked it already, or when `root/.git` is a
    repository directory: git, run without the variables that would redirect it
    (`_REDIRECTING_VARIABLES`), finds that directory first, so `root` is its top.
    Anything else (the `.git` file of a linked worktree, a subdirectory) is left
    to `git rev-parse`.
    """
    key = _toplevel_key(root)
    if key is None:
        return False
    if key in _TOPLEVELS:
        return True
    git_dir = Path(root) / ".git"
    if (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir():
        _TOPLEVELS.add(key)
        return True
    return False


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
    raise ExternalToolError(
        f"git rev-parse failed in {root}: {done.stderr.decode('utf-8', 'replace').strip()}"
    )


def _resolve_commit(root: Path, rev: str) -> str:
    key = (os.path.realpath(root), rev)
    if key in _COMMITS:
        return _COMMITS[key]
    done = _run(
        root, ("rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}"), None, None
    )
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


@contextmanager
def _current_head_index(root: Path) -> Iterator[dict[str, str]]:
    """`_head_index` of HEAD as `git read-tree` finds it, without resolving HEAD first.

    One git process instead of two; HEAD is looked up only when `read-tree` fails,
    to tell an unborn branch (an empty index) from a real error.
    """
    with tempfile.TemporaryDirectory(prefix="mlvs-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        done = _run(root, ("read-tree", "HEAD"), None, env)
        if done.returncode != 0:
            if _head(root) is not None:
                stderr = done.stderr.decode("utf-8", "replace").strip()
                raise ExternalToolError(
                    f"git read-tree failed in {root}: {stderr or exit_text(done.returncode)}"
                )
            index.unlink(missing_ok=True)  # no commit yet: the index starts empty
        yield env


def _identity_env(root: Path) -> dict[str, str]:
    """Return GIT_AUTHOR_*/GIT_COMMITTER_* values for whatever identity git lacks.

    Git refuses to commit without a name and email; a fresh CI machine or
    container often has neither, and mlvs must never write the user's config.
    """
    if all(os.environ.get(f"GIT_{role}_NAME") for role in ("AUTHOR", "COMMITTER")) and all(
        os.environ.get(f"GIT_{role}_EMAIL") or os.environ.get("EMAIL")
        for role in ("AUTHOR", "COMMITTER")
    ):
        return {}  # the environment names both: git's config is not asked (one process fewer)
    done = _run(
        root,
        ("config", "-z", "--get-regexp", r"^(user|author|committer)\.(name|email)$"),
        None,
        None,
    )
    configured = set()
    for item in done.stdout.decode("utf-8", "surrogateescape").split("\0"):
        key, _, value = item.partition("\n")
        if value.strip():
            configured.add(key.lower())
    env: dict[str, str] = {}
    name, email = PROJECT_IDENTITY
    for role in ("author", "committer"):
        upper = role.upper()
        if (
            not os.environ.get(f"GIT_{upper}_NAME")
            and not {"user.name", f"{role}.name"} & configured
        ):
            env[f"GIT_{upper}_NAME"] = name
        has_email = os.environ.get(f"GIT_{upper}_EMAIL") or os.environ.get("EMAIL")
        if not has_email and not {"user.email", f"{role}.email"} & configured:
            env[f"GIT_{upper}_EMAIL"] = email
    return env
