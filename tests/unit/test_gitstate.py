"""The pure-git layer of snapshots: commits of the working tree, refs, restore."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from mlvs.backends.git import tree
from mlvs.backends.git.refs import (
    delete_snapshot_ref,
    list_snapshot_refs,
    save_snapshot_ref,
    snapshot_ref,
    validate_snapshot_name,
)
from mlvs.backends.git.restore import restore_worktree
from mlvs.backends.git.run import run_git
from mlvs.backends.git.tree import (
    commit_worktree,
    file_at_or_known,
    looks_secret,
    read_file_at,
    read_files_at,
    tree_files,
    untracked_files,
    worktree_blob_hashes,
)
from mlvs.backends.mlflow.tracking import git_tags
from mlvs.errors import BadInputError, ExternalToolError, UnknownSnapshotError

IDENTITY = ("-c", "user.name=Test User", "-c", "user.email=test@example.com")
IGNORES = ".venv/\n.dvc/cache/\nmlflow.db\n/data/raw/customer_data.csv\n*.log\n"


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shield every test from the machine's git config and identity."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # so `git status` never rewrites the index
    done = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def git_result(root: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    done = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout


def write(root: Path, path: str, content: str | bytes, executable: bool = False) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    target.chmod(0o755 if executable else 0o644)


def commit_all(root: Path, message: str = "work") -> None:
    git(root, "add", "-A")
    git(root, *IDENTITY, "commit", "-q", "-m", message)


def make_repo(tmp_path: Path, files: dict[str, str] | None = None, commit: bool = True) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, ".gitignore", IGNORES)
    for path, content in (
        files or {"README.md": "hello\n", "params/train.yaml": "seed: 1\n"}
    ).items():
        write(root, path, content)
    if commit:
        commit_all(root, "initial")
    return root


def observable_state(root: Path) -> dict[str, object]:
    """Everything a user could see change: status, HEAD, branch, log, index, config, refs."""
    index = root / ".git" / "index"
    return {
        "status": git_result(root, "status", "--porcelain=v1", "-z", "--untracked-files=all"),
        "head": git_result(root, "rev-parse", "--verify", "-q", "HEAD"),
        "branch": git_result(root, "symbolic-ref", "-q", "HEAD"),
        "log": git_result(root, "log", "--format=raw"),
        "refs": git_result(root, "for-each-ref"),
        "index": index.read_bytes() if index.exists() else None,
        "config": (root / ".git" / "config").read_bytes(),
    }


def files_on_disk(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every non-ignored-looking file under root: path -> (kind, bytes or link text)."""
    found: dict[str, tuple[str, bytes]] = {}
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.fsencode(os.readlink(path)))
            else:
                kind = "exec" if path.stat().st_mode & stat.S_IXUSR else "file"
                found[rel] = (kind, path.read_bytes())
    return found


# --- commit_worktree ------------------------------------------------------------


def test_commit_worktree_leaves_status_head_branch_log_and_index_unchanged(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write(root, "README.md", "changed\n")
    write(root, "new.py", "print(1)\n")
    git(root, "add", "new.py")  # a staged change must stay staged, and only staged
    write(root, "untracked.txt", "u\n")
    (root / "params" / "train.yaml").unlink()
    before = observable_state(root)

    commit_worktree(root, "snapshot")

    assert observable_state(root) == before


def test_commit_worktree_includes_modifications_untracked_files_and_deletions(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path)
    write(root, "README.md", "changed\n")
    write(root, "src/new.py", "print(1)\n")
    (root / "params" / "train.yaml").unlink()

    sha = commit_worktree(root, "snapshot")

    assert set(tree_files(root, sha)) == {".gitignore", "README.md", "src/new.py"}
    assert read_file_at(root, sha, "README.md") == b"changed\n"


SECRETS = [
    ".env",
    ".env.production",
    "deploy/prod.env",
    "certs/server.pem",
    "tls.KEY",
    "id_rsa",
    "keys/id_ed25519.pub",
    "credentials.json",
    "secrets.yaml",
    ".netrc",
    ".aws/config",
    ".ssh/known_hosts",
]


def test_commit_worktree_leaves_out_untracked_secrets_and_says_so(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    for path in SECRETS:
        write(root, path, "token=do-not-share\n")
    write(root, "notes.md", "an untracked note\n")
    before = observable_state(root)

    commit = commit_worktree(root, "snapshot")

    in_commit = set(tree_files(root, commit))
    assert in_commit.isdisjoint(SECRETS)
    assert "notes.md" in in_commit
    assert set(worktree_blob_hashes(root)).isdisjoint(SECRETS)  # what a rollback compares
    assert untracked_files(root) == (["notes.md"], sorted(SECRETS))
    assert observable_state(root) == before


def test_a_tracked_file_that_looks_secret_stays_in_the_commit(tmp_path: Path) -> None:
    # The user committed it on purpose; the snapshot must not silently drop it.
    root = make_repo(tmp_path, {"README.md": "x\n", "config/example.env": "A=1\n"})
    assert "config/example.env" in tree_files(root, commit_worktree(root, "snapshot"))


@pytest.mark.parametrize(
    "path", ["environment.yml", "models/model.skops", "mlvs/backends/keys.py", "envs/a.txt"]
)
def test_ordinary_project_files_do_not_look_secret(path: str) -> None:
    assert not looks_secret(path)


def test_commit_worktree_leaves_out_ignored_files(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write(root, ".venv/bin/python", "binary")
    write(root, "mlflow.db", "sqlite")
    write(root, "data/raw/customer_data.csv", "a,b\n")
    write(root, "run.log", "log")

    sha = commit_worktree(root, "snapshot")

    assert set(tree_files(root, sha)) == {".gitignore", "README.md", "params/train.yaml"}


def test_commit_worktree_keeps_a_tracked_file_that_matches_an_ignore_pattern(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path)
    write(root, "keep.log", "tracked on purpose\n")
    git(root, "add", "-f", "keep.log")
    commit_all(root)
    write(root, "keep.log", "edited\n")

    sha = commit_worktree(root, "snapshot")

    assert read_file_at(root, sha, "keep.log") == b"edited\n"


def test_commit_worktree_on_a_single_commit_has_head_as_its_parent(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    head = git(root, "rev-parse", "HEAD").strip()

    sha = commit_worktree(root, "snapshot")

    assert git(root, "rev-list", "--parents", "-n", "1", sha).split() == [sha, head]


def test_commit_worktree_works_in_a_repository_without_commits(tmp_path: Path) -> None:
    root = make_repo(tmp_path, commit=False)
    before = observable_state(root)

    sha = commit_worktree(root, "first snapshot")

    assert git(root, "rev-list", "--parents", "-n", "1", sha).split() == [sha]
    assert set(tree_files(root, sha)) == {".gitignore", "README.md", "params/train.yaml"}
    assert observable_state(root) == before


def test_commit_worktree_works_on_a_detached_head(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    first = git(root, "rev-parse", "HEAD").strip()
    write(root, "README.md", "second\n")
    commit_all(root, "second")
    git(root, "checkout", "-q", "--detach", first)
    write(root, "README.md", "edited on a detached head\n")
    before = observable_state(root)

    sha = commit_worktree(root, "snapshot")

    assert git(root, "rev-list", "--parents", "-n", "1", sha).split() == [sha, first]
    assert read_file_at(root, sha, "README.md") == b"edited on a detached head\n"
    assert observable_state(root) == before


def test_commit_worktree_takes_an_explicit_parent(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    earlier = commit_worktree(root, "earlier snapshot")

    sha = commit_worktree(root, "later snapshot", parent=earlier)

    assert git(root, "rev-list", "--parents", "-n", "1", sha).split() == [sha, earlier]


def test_commit_worktree_uses_the_project_identity_when_git_has_none(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    config = (root / ".git" / "config").read_bytes()

    sha = commit_worktree(root, "snapshot")

    assert git(root, "show", "-s", "--format=%an <%ae>|%cn <%ce>", sha).strip() == (
        "mlvs <mlvs@localhost>|mlvs <mlvs@localhost>"
    )
    assert (root / ".git" / "config").read_bytes() == config


def test_commit_worktree_uses_the_configured_identity(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    git(root, "config", "user.name", "Ada")
    git(root, "config", "user.email", "ada@example.com")

    sha = commit_worktree(root, "snapshot")

    assert git(root, "show", "-s", "--format=%an <%ae>", sha).strip() == "Ada <ada@example.com>"


def test_commit_worktree_uses_the_identity_the_environment_names_over_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    git(root, "config", "user.name", "Ada")
    git(root, "config", "user.email", "ada@example.com")
    for role, who in (("AUTHOR", "Grace"), ("COMMITTER", "Linus")):
        monkeypatch.setenv(f"GIT_{role}_NAME", who)
        monkeypatch.setenv(f"GIT_{role}_EMAIL", f"{who.lower()}@example.com")

    sha = commit_worktree(root, "snapshot")

    assert git(root, "show", "-s", "--format=%an <%ae>|%cn <%ce>", sha).strip() == (
        "Grace <grace@example.com>|Linus <linus@example.com>"
    )


def test_commit_worktree_keeps_the_message(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    sha = commit_worktree(root, "-m looks like an option\n\nbody")

    assert git(root, "show", "-s", "--format=%B", sha) == "-m looks like an option\n\nbody\n\n"


def test_commit_worktree_outside_a_git_repository_raises_bad_input(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()

    with pytest.raises(BadInputError, match="not inside a git working tree"):
        commit_worktree(tmp_path / "plain", "snapshot")


def test_commit_worktree_refuses_a_subdirectory_of_the_repository(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    with pytest.raises(BadInputError, match="not its top directory"):
        commit_worktree(root / "params", "snapshot")


# --- reading commits and the working tree -----------------------------------------


def test_worktree_blob_hashes_equal_the_tree_that_commit_worktree_makes(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write(root, "README.md", "changed\n")
    write(root, "scripts/run.sh", "#!/bin/sh\n", executable=True)
    os.symlink("README.md", root / "readme-link")
    write(root, "mlflow.db", "ignored")
    (root / "params" / "train.yaml").unlink()

    hashes = worktree_blob_hashes(root)

    assert hashes == tree_files(root, commit_worktree(root, "snapshot"))


def test_worktree_blob_hashes_handle_quotes_newlines_and_spaces_in_names(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    for name in ['"quoted"', "new\nline", " leading space", "a[1].csv"]:
        write(root, name, name)

    assert worktree_blob_hashes(root) == tree_files(root, commit_worktree(root, "snapshot"))


def test_worktree_blob_hashes_in_a_repository_without_commits_equal_its_first_snapshot(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path, commit=False)
    write(root, ".env", "SECRET=1\n")

    hashes = worktree_blob_hashes(root)

    assert hashes == tree_files(root, commit_worktree(root, "first snapshot"))
    assert untracked_files(root) == ([".gitignore", "README.md", "params/train.yaml"], [".env"])


def test_worktree_blob_hashes_writes_no_git_objects(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write(root, "brand-new.txt", "never hashed before\n")
    before = git(root, "count-objects", "-v")

    worktree_blob_hashes(root)

    assert git(root, "count-objects", "-v") == before


def test_read_file_at_returns_the_committed_bytes(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {"data.bin": "x"})
    write(root, "data.bin", bytes(range(256)))
    sha = commit_worktree(root, "snapshot")

    assert read_file_at(root, sha, "data.bin") == bytes(range(256))


@pytest.mark.parametrize("path", ["missing.txt", "params", "params/missing.yaml"])
def test_read_file_at_returns_none_where_the_commit_has_no_file(tmp_path: Path, path: str) -> None:
    root = make_repo(tmp_path)

    assert read_file_at(root, git(root, "rev-parse", "HEAD").strip(), path) is None


def test_bytes_known_to_be_the_committed_blob_are_answered_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path, {"data.bin": "x"})
    write(root, "data.bin", bytes(range(256)))
    sha = commit_worktree(root, "snapshot")
    assert file_at_or_known(root, sha, "data.bin", b"other bytes") == bytes(range(256))

    def no_blob_read(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the blob was read")

    monkeypatch.setattr(tree, "run_git_bytes", no_blob_read)  # the commit's listing is known
    known = bytes(range(256))
    assert file_at_or_known(root, sha, "data.bin", known) is known
    assert file_at_or_known(root, sha, "missing.txt", known) is None


def test_an_extra_file_of_a_commit_made_here_is_read_back_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    sha = commit_worktree(root, "snapshot", extra_files={"extra.json": b'{"made": "here"}\n'})
    assert git(root, "show", f"{sha}:extra.json") == '{"made": "here"}\n'

    def no_git(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("git was asked")

    monkeypatch.setattr(tree, "run_git_bytes", no_git)
    assert read_files_at(root, [(sha, "extra.json")]) == [b'{"made": "here"}\n']


def test_read_file_at_an_unknown_commit_raises_external_tool_error(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    with pytest.raises(ExternalToolError, match="is not a commit"):
        read_file_at(root, "0" * 40, "README.md")


def test_run_git_raises_external_tool_error_with_gits_message(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    with pytest.raises(ExternalToolError, match=r"git cat-file failed .*no-such-object"):
        run_git(root, "cat-file", "-p", "no-such-object")


# --- restore_worktree -------------------------------------------------------------


def rich_repo(tmp_path: Path) -> Path:
    root = make_repo(
        tmp_path,
        {"README.md": "hello\n", "params/train.yaml": "seed: 1\n", "src/a/b.py": "b = 1\n"},
    )
    write(root, "scripts/run.sh", "#!/bin/sh\necho run\n", executable=True)
    write(root, "model.bin", bytes(range(256)) * 4)
    os.symlink("README.md", root / "readme-link")
    commit_all(root, "rich")
    return root


def mutate_everything(root: Path) -> None:
    write(root, "README.md", "changed\n")
    (root / "params" / "train.yaml").unlink()
    (root / "src" / "a" / "b.py").unlink()  # leaves src/a empty, then gone
    (root / "src" / "a").rmdir()
    write(root, "scripts/run.sh", "#!/bin/sh\necho run\n", executable=False)
    write(root, "model.bin", b"\x00corrupt")
    (root / "readme-link").unlink()
    os.symlink("params/train.yaml", root / "readme-link")
    write(root, "notes/new.md", "untracked\n")


def test_restore_worktree_round_trip_is_byte_identical(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    write(root, "untracked-at-snapshot.txt", "kept\n")
    sha = commit_worktree(root, "snapshot")
    snapshot_files = files_on_disk(root)
    mutate_everything(root)

    restore_worktree(root, sha)

    assert files_on_disk(root) == snapshot_files
    assert worktree_blob_hashes(root) == tree_files(root, sha)


def test_restore_worktree_returns_the_changed_paths(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    mutate_everything(root)

    changed = restore_worktree(root, sha)

    assert changed == [
        "README.md",
        "model.bin",
        "notes/new.md",
        "params/train.yaml",
        "readme-link",
        "scripts/run.sh",
        "src/a/b.py",
    ]


def test_restore_worktree_leaves_ignored_files_alone(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    (root / "src" / "a" / "b.py").unlink()
    sha = commit_worktree(root, "snapshot")
    write(root, "src/a/b.py", "b = 2\n")  # restore deletes it, but src/a also holds an ignored file
    ignored = {
        ".venv/lib/site.py": "venv",
        ".dvc/cache/ab/cdef": "cache object",
        "mlflow.db": "sqlite",
        "data/raw/customer_data.csv": "a,b\n1,2\n",
        "src/a/debug.log": "ignored, in a directory that restore empties of tracked files",
    }
    for path, content in ignored.items():
        write(root, path, content)
    stats = {path: os.stat(root / path) for path in ignored}
    write(root, "README.md", "changed\n")

    assert restore_worktree(root, sha) == ["README.md", "src/a/b.py"]

    for path, content in ignored.items():
        assert (root / path).read_text() == content
        assert os.stat(root / path).st_mtime_ns == stats[path].st_mtime_ns


def test_restore_worktree_rewrites_only_files_that_differ(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    untouched = os.stat(root / "params" / "train.yaml")
    write(root, "README.md", "changed\n")

    changed = restore_worktree(root, sha)

    assert changed == ["README.md"]
    after = os.stat(root / "params" / "train.yaml")
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)


def test_restore_worktree_of_an_unchanged_tree_changes_nothing(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")

    assert restore_worktree(root, sha) == []


def test_restore_worktree_removes_untracked_files_absent_from_the_snapshot(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    write(root, "experiments/scratch.py", "x = 1\n")

    restore_worktree(root, sha)

    assert not (root / "experiments").exists()


def test_restore_worktree_restores_only_the_given_paths(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    write(root, "README.md", "changed\n")
    write(root, "params/train.yaml", "seed: 2\n")
    write(root, "params/extra.yaml", "new: true\n")

    changed = restore_worktree(root, sha, ["params"])

    assert changed == ["params/extra.yaml", "params/train.yaml"]
    assert (root / "README.md").read_text() == "changed\n"
    assert (root / "params" / "train.yaml").read_text() == "seed: 1\n"


def test_restore_worktree_restores_the_executable_bit(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    (root / "scripts" / "run.sh").chmod(0o644)

    assert restore_worktree(root, sha) == ["scripts/run.sh"]
    assert (root / "scripts" / "run.sh").stat().st_mode & stat.S_IXUSR


def test_restore_worktree_leaves_head_branch_and_index_alone(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    mutate_everything(root)
    git(root, "add", "README.md")
    before = observable_state(root)

    restore_worktree(root, sha)

    after = observable_state(root)
    assert {k: after[k] for k in ("head", "branch", "log", "index", "refs")} == {
        k: before[k] for k in ("head", "branch", "log", "index", "refs")
    }


def test_restore_worktree_leaves_no_temporary_files(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")
    mutate_everything(root)

    restore_worktree(root, sha)

    assert not [p for p in files_on_disk(root) if "mlvs-tmp" in p]


def test_restore_worktree_skips_a_file_whose_place_an_ignored_file_holds(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write(root, "data/raw/customer_data.csv", "from git\n")
    git(root, "add", "-f", "data/raw/customer_data.csv")  # tracked in git before DVC took it over
    commit_all(root, "data in git")
    sha = git(root, "rev-parse", "HEAD").strip()
    git(root, "rm", "-q", "--cached", "data/raw/customer_data.csv")
    commit_all(root, "data moves to DVC")
    write(root, "data/raw/customer_data.csv", "from dvc\n")

    changed = restore_worktree(root, sha)

    assert changed == []
    assert (root / "data" / "raw" / "customer_data.csv").read_text() == "from dvc\n"


def test_restore_worktree_rejects_a_path_outside_the_project(tmp_path: Path) -> None:
    root = rich_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")

    with pytest.raises(BadInputError, match=re.escape("'../secret'")):
        restore_worktree(root, sha, ["../secret"])


# --- snapshot refs ------------------------------------------------------------------


def test_saved_snapshot_ref_resolves_to_its_commit(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    sha = commit_worktree(root, "snapshot")

    save_snapshot_ref(root, "baseline", sha)

    assert snapshot_ref(root, "baseline") == sha
    assert git(root, "rev-parse", "refs/mlvs/snapshots/baseline").strip() == sha


def test_snapshot_ref_of_an_unknown_name_is_none(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    assert snapshot_ref(root, "nothing-here") is None


def test_saving_an_existing_snapshot_ref_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    first = commit_worktree(root, "first")
    save_snapshot_ref(root, "baseline", first)
    write(root, "README.md", "changed\n")

    with pytest.raises(
        BadInputError, match="snapshot 'baseline' exists already; choose another name"
    ):
        save_snapshot_ref(root, "baseline", commit_worktree(root, "second"))
    assert snapshot_ref(root, "baseline") == first


def test_list_snapshot_refs_returns_names_and_commits_sorted_by_name(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    first = commit_worktree(root, "first")
    write(root, "README.md", "changed\n")
    second = commit_worktree(root, "second")
    save_snapshot_ref(root, "zeta", first)
    save_snapshot_ref(root, "alpha", second)

    assert list_snapshot_refs(root) == [("alpha", second), ("zeta", first)]


def test_delete_snapshot_ref_removes_it(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    save_snapshot_ref(root, "baseline", commit_worktree(root, "snapshot"))

    delete_snapshot_ref(root, "baseline")

    assert snapshot_ref(root, "baseline") is None
    assert list_snapshot_refs(root) == []


def test_deleting_an_unknown_snapshot_raises_unknown_snapshot_error(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    with pytest.raises(UnknownSnapshotError, match="'ghost'"):
        delete_snapshot_ref(root, "ghost")


def test_snapshot_refs_leave_the_branch_log_unchanged(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    log = git(root, "log", "--format=raw", "main")

    save_snapshot_ref(root, "baseline", commit_worktree(root, "snapshot"))

    assert git(root, "log", "--format=raw", "main") == log


def test_snapshot_commits_survive_git_gc(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write(root, "only-in-snapshot.txt", "precious\n")
    sha = commit_worktree(root, "snapshot")
    save_snapshot_ref(root, "baseline", sha)

    git(root, "gc", "-q", "--prune=now")

    assert read_file_at(root, sha, "only-in-snapshot.txt") == b"precious\n"


# --- snapshot names -------------------------------------------------------------------

# Boundary cases of git check-ref-format too: '.lock' and '.' only at the end are forbidden.
GOOD_NAMES = [
    "a",
    "9",
    "v1",
    "2024-01-01",
    "best_model.v2",
    "A-b_c.d",
    "x" * 100,
    "release-1.0_rc.2",
    "HEAD",
    "a-",
    "a_",
    "a.lock.b",
    "x.lockx",
    "a.b.c",
]
BAD_NAMES = [
    "..",
    "a/b",
    "/abs",
    "x y",
    "a;rm",
    "",
    "x" * 101,
    "x.lock",
    "-x",
    ".hidden",
    "_x",
    "a..b",
    "x.",
    "a\tb",
    "a\nb",
    "$(rm -rf ~)",
    "a:b",
    "a~1",
    "a^",
    "a@{1}",
    "a*",
    "a?",
    "a[0]",
    "a\\b",
    "é",
    "a|b",
    "a>b",
    "`x`",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_validate_snapshot_name_accepts_a_safe_name(name: str) -> None:
    assert validate_snapshot_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_validate_snapshot_name_rejects_an_unsafe_name(name: str) -> None:
    with pytest.raises(BadInputError, match="is not allowed"):
        validate_snapshot_name(name)


def test_a_rejected_name_is_named_with_what_is_wrong_and_what_is_allowed() -> None:
    with pytest.raises(BadInputError) as caught:
        validate_snapshot_name("../x")

    assert str(caught.value) == (
        "snapshot name '../x' is not allowed (it contains '..'): use 1-100 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, with no '..' and not ending in '.' or '.lock'"
    )


def test_refs_refuse_an_unsafe_name_before_touching_git(tmp_path: Path) -> None:
    root = make_repo(tmp_path)

    with pytest.raises(BadInputError):
        save_snapshot_ref(root, "../../heads/main", git(root, "rev-parse", "HEAD").strip())
    assert git(root, "for-each-ref", "refs/mlvs") == ""


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_an_accepted_name_is_a_valid_git_ref(tmp_path: Path, name: str) -> None:
    assert git_result(tmp_path, "check-ref-format", f"refs/mlvs/snapshots/{name}")[0] == 0


# --- the dirty flag of a run --------------------------------------------------------


def pipeline_repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path,
        {
            "params/train.yaml": "seed: 1\n",
            "dvc.lock": "schema: '2.0'\n",
            "reports/metrics.json": "{}\n",
            "data/[raw]/file.csv": "a\n",
        },
    )


def test_what_the_pipeline_writes_does_not_make_a_run_dirty(tmp_path: Path) -> None:
    root = pipeline_repo(tmp_path)
    write(root, "dvc.lock", "schema: '2.0'\nstages: {}\n")
    (root / "reports" / "metrics.json").unlink()  # dvc repro deletes outputs before a stage
    write(root, "data/[raw]/file.csv", "b\n")
    generated = ["dvc.lock", "reports", "data/[raw]/file.csv"]
    assert git_tags(root, generated)["git_dirty"] == "false"
    assert git_tags(root)["git_dirty"] == "true"


def test_an_edited_params_file_makes_a_run_dirty(tmp_path: Path) -> None:
    root = pipeline_repo(tmp_path)
    write(root, "params/train.yaml", "seed: 2\n")
    # A pattern-like generated path must not hide a file it would match as a glob.
    assert git_tags(root, ["dvc.lock", "reports", "params/*.yaml"])["git_dirty"] == "true"
