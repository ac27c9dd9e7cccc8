"""`mlvs snapshot create|list|show|diff`: whole-system snapshots that leave the user's git alone."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, clean_env, copy_workspace, mlvs, tree_hashes

from mlvs.paths import ProjectPaths
from mlvs.state.journal import Journal
from mlvs.state.lock import state_lock

MANIFEST = ".mlvs-snapshot.json"


def git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=root,
        env=env or clean_env(root),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def run(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlvs"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_view(root: Path) -> dict[str, str]:
    """What a user sees of their repository: status, HEAD, branch, log, index, refs outside mlvs's."""
    return {
        "status": git(root, "status", "--porcelain", "--untracked-files=all"),
        "head": git(root, "rev-parse", "HEAD"),
        "branch": git(root, "branch", "--show-current"),
        "log": git(root, "log", "--format=%H %s"),
        "index": git(root, "ls-files", "--stage"),
        "refs": "\n".join(
            line for line in git(root, "for-each-ref").splitlines() if "refs/mlvs/" not in line
        ),
    }


def create(root: Path, name: str, *extra: str) -> dict:
    result = mlvs(root, "snapshot", "create", name, *extra, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def champion(root: Path) -> str:
    with sqlite3.connect(root / "mlflow.db") as db:
        return str(
            db.execute(
                "SELECT version FROM registered_model_aliases WHERE alias = 'champion'"
            ).fetchone()[0]
        )


# --- what a snapshot records ----------------------------------------------------------


def test_snapshot_leaves_status_head_branch_log_and_index_of_a_dirty_repository_unchanged(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    (root / "README.md").write_text((root / "README.md").read_text() + "\nedited, not committed\n")
    (root / "notes.txt").write_text("untracked notes\n")
    (root / "Makefile").write_text((root / "Makefile").read_text() + "\n# staged\n")
    git(root, "add", "Makefile")
    before = git_view(root)

    manifest = create(root, "dirty", "-m", "with work in progress")

    assert git_view(root) == before
    commit = manifest["git"]["commit"]
    assert git(root, "rev-parse", "refs/mlvs/snapshots/dirty").strip() == commit
    # The commit holds the work in progress and the manifest; the working tree does not get the manifest.
    assert git(root, "show", f"{commit}:notes.txt") == "untracked notes\n"
    assert "edited, not committed" in git(root, "show", f"{commit}:README.md")
    assert json.loads(git(root, "show", f"{commit}:{MANIFEST}"))["name"] == "dirty"
    assert not (root / MANIFEST).exists()
    assert git(root, "rev-parse", f"{commit}^").strip() == before["head"].strip()


def test_snapshot_keeps_untracked_secrets_out_and_names_the_untracked_files_it_took(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    # The project's own .gitignore covers the usual secrets...
    ignored = git(root, "check-ignore", ".env", "prod.pem", "id_rsa", "credentials.json")
    assert ignored.split() == [".env", "prod.pem", "id_rsa", "credentials.json"]
    # ...and a team whose .gitignore does not is protected all the same.
    gitignore = root / ".gitignore"
    gitignore.write_text(gitignore.read_text().split("# Secrets")[0])
    (root / ".env").write_text("API_TOKEN=do-not-share\n")
    (root / "deploy.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "notes.txt").write_text("untracked notes\n")

    result = mlvs(root, "snapshot", "create", "with-secrets")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("Untracked files included") and "notes.txt" in line for line in lines
    )
    assert any(
        line.startswith("Left out as secrets") and ".env" in line and "deploy.key" in line
        for line in lines
    )
    listed = git(root, "ls-tree", "-r", "--name-only", "refs/mlvs/snapshots/with-secrets")
    assert "notes.txt" in listed.split()
    assert ".env" not in listed.split() and "deploy.key" not in listed.split()
    assert (root / ".env").read_text() == "API_TOKEN=do-not-share\n"


def test_snapshot_manifest_records_hashes_params_metrics_registry_and_environment(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    manifest = create(root, "baseline", "-m", "first trained model")

    assert manifest["name"] == "baseline" and manifest["message"] == "first trained model"
    assert manifest["automatic"] is False and manifest["created_at"].endswith("Z")
    assert manifest["git"]["base_commit"] == git(root, "rev-parse", "HEAD").strip()
    assert manifest["git"]["branch"] == "main"
    # Every DVC-tracked file, hashed by the test itself.
    tracked = sorted(
        p.relative_to(root).as_posix()
        for d in ("data", "models")
        for p in (root / d).rglob("*")
        if p.is_file() and p.name != ".gitignore"
    )
    assert sorted(manifest["files"]) == tracked
    for relative, info in manifest["files"].items():
        assert info["sha256"] == sha256(root / relative)
        assert info["md5"] == hashlib.md5((root / relative).read_bytes()).hexdigest()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    locked = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s["outs"] if "md5" in o}
    for output, info in manifest["outputs"].items():
        if info["cache"]:
            assert info["md5"] == locked[output] and info["matches_dvc_lock"]
    assert manifest["params"]["train"] == yaml.safe_load(
        (root / "params" / "train.yaml").read_text()
    )
    assert manifest["metrics"] == json.loads((root / "reports" / "metrics.json").read_text())
    registry = manifest["registry"]
    assert registry["model_name"] == "churn-classifier"
    assert registry["model"]["version"] == "1" and registry["model"]["run_id"]
    assert registry["model"]["model_id"].startswith("m-")
    assert registry["aliases"]["champion"]["version"] == champion(root)
    assert registry["tracking_uri"].startswith("sqlite:///")
    packages = manifest["environment"]["packages"]
    assert set(packages) >= {
        "mlvs",
        "dvc",
        "mlflow",
        "scikit-learn",
        "pandas",
        "numpy",
        "papermill",
        "skops",
    }
    assert manifest["environment"]["python"].count(".") == 2


def test_snapshot_data_is_in_the_dvc_cache_and_the_remote(trained_workspace: Path) -> None:
    root = trained_workspace
    # An object only the cache lacks and one only the remote lacks: both are put back.
    model_md5 = hashlib.md5((root / "models" / "model.skops").read_bytes()).hexdigest()
    raw_md5 = hashlib.md5((root / "data" / "raw" / "customer_data.csv").read_bytes()).hexdigest()
    (root / ".dvc" / "cache" / "files" / "md5" / model_md5[:2] / model_md5[2:]).unlink()
    (root / ".mlvs" / "dvc-remote" / "files" / "md5" / raw_md5[:2] / raw_md5[2:]).unlink()

    manifest = create(root, "stored")

    objects = {info["md5"] for info in manifest["files"].values()}
    objects |= {info["md5"] for info in manifest["outputs"].values() if info.get("cache")}
    for store in (root / ".dvc" / "cache", root / ".mlvs" / "dvc-remote"):
        for md5 in objects:
            location = store / "files" / "md5" / md5[:2] / md5[2:]
            assert location.is_file(), f"{md5} missing in {store}"
            assert hashlib.md5(location.read_bytes()).hexdigest() == md5.removesuffix(".dir")
    status = subprocess.run(
        [str(BIN / "python"), "-m", "dvc", "status", "--cloud"],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr


def test_snapshot_records_the_files_as_they_are_even_when_dvc_lock_is_stale(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    card = root / "models" / "model_card.json"
    card.write_text(card.read_text() + "\n")

    manifest = create(root, "stale", "--allow-unhealthy")

    assert manifest["health"]["healthy"] is False
    assert [(f["check"], f["artifact"]) for f in manifest["health"]["findings"]] == [
        ("file_hash", "models/model_card.json")
    ]
    assert manifest["files"]["models/model_card.json"]["sha256"] == sha256(card)
    assert manifest["outputs"]["models"]["matches_dvc_lock"] is False
    md5 = hashlib.md5(card.read_bytes()).hexdigest()
    assert (
        root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    ).read_bytes() == card.read_bytes()
    assert git(root, "status", "--porcelain") == ""  # DVC's own files were not touched


def test_a_second_snapshot_of_an_unchanged_state_copies_nothing_and_is_fast(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    create(root, "one")
    stores = tree_hashes(root / ".dvc" / "cache"), tree_hashes(root / ".mlvs" / "dvc-remote")
    started = time.perf_counter()
    second = create(root, "two")
    elapsed = time.perf_counter() - started
    assert (
        tree_hashes(root / ".dvc" / "cache"),
        tree_hashes(root / ".mlvs" / "dvc-remote"),
    ) == stores
    assert second["files"] == create(root, "three")["files"]
    assert elapsed < 5  # a whole CLI process; the benchmark measures the real budget


def test_a_healthy_snapshot_records_its_health(trained_workspace: Path) -> None:
    manifest = create(trained_workspace, "well")
    assert manifest["health"]["healthy"] is True and manifest["health"]["findings"] == []
    shown = mlvs(trained_workspace, "snapshot", "show", "well")
    assert "health       healthy" in shown.stdout


def test_a_stale_state_is_refused_in_one_line_unless_allowed_and_then_recorded(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    params = root / "params" / "train.yaml"
    values = yaml.safe_load(params.read_text())
    values["cv_folds"] += 1
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    refs = git(root, "for-each-ref", "refs/mlvs/")
    cache = tree_hashes(root / ".dvc" / "cache")

    refused = mlvs(root, "snapshot", "create", "sick")

    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "stage train" in line and "cv_folds" in line and "`mlvs pipeline`" in line
    assert "--allow-unhealthy" in line
    assert git(root, "for-each-ref", "refs/mlvs/") == refs  # nothing was created
    assert tree_hashes(root / ".dvc" / "cache") == cache

    manifest = create(root, "sick", "--allow-unhealthy")

    (finding,) = manifest["health"]["findings"]
    assert (finding["check"], finding["kind"], finding["artifact"]) == (
        "pipeline",
        "stale",
        "stage train",
    )
    assert finding["fix"] == "mlvs pipeline"
    shown = mlvs(root, "snapshot", "show", "sick")
    assert "unhealthy when taken: 1 finding(s) (stale)" in shown.stdout
    assert "cv_folds" in shown.stdout
    listed = mlvs(root, "snapshot", "list")
    assert any(
        line.startswith("sick") and "unhealthy" in line for line in listed.stdout.splitlines()
    )


def test_damaged_data_is_refused_naming_recover_as_the_fix(trained_workspace: Path) -> None:
    raw = trained_workspace / "data" / "raw" / "customer_data.csv"
    os.chmod(raw, 0o644)
    raw.write_text(raw.read_text() + "tampered\n")

    refused = mlvs(trained_workspace, "snapshot", "create", "broken")

    assert refused.returncode == 1
    assert "data/raw/customer_data.csv" in refused.stderr and "`mlvs recover`" in refused.stderr


# --- listing, showing, comparing ------------------------------------------------------------


def test_list_show_and_json_output(trained_workspace: Path) -> None:
    root = trained_workspace
    create(root, "first", "-m", "the first one")
    create(root, "second")

    listing = mlvs(root, "snapshot", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    names = [m["name"] for m in json.loads(listing.stdout)]
    assert names == ["first", "second"]
    table = mlvs(root, "snapshot", "list")
    assert table.returncode == 0 and "first" in table.stdout and "the first one" in table.stdout
    shown = mlvs(root, "snapshot", "show", "first", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["message"] == "the first one"
    text = mlvs(root, "snapshot", "show", "first")
    assert text.returncode == 0 and "champion=" in text.stdout and "data/processed" in text.stdout


def test_diff_names_params_metrics_data_and_code_changes(trained_workspace: Path) -> None:
    root = trained_workspace
    create(root, "before")
    params = root / "params" / "prepare.yaml"
    values = yaml.safe_load(params.read_text())
    values["seed"] = values["seed"] + 1
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    (root / "data" / "processed" / "summary.json").write_text("{}\n")
    (root / "mlvs" / "new_helper.py").write_text("X = 1\n")

    current = mlvs(root, "snapshot", "diff", "before", "--json")
    assert current.returncode == 0, current.stderr
    diff = json.loads(current.stdout)
    assert diff["params"] == {"prepare.seed": [values["seed"] - 1, values["seed"]]}
    assert list(diff["files"]) == ["data/processed/summary.json"]
    assert list(diff["outputs"]) == ["data/processed"]
    assert diff["code"] == ["mlvs/new_helper.py"]
    assert diff["metrics"] == {} and diff["registry"] == {}

    create(root, "after", "--allow-unhealthy")  # a changed state, on purpose not rebuilt
    between = json.loads(mlvs(root, "snapshot", "diff", "before", "after", "--json").stdout)
    assert {k: v for k, v in between.items() if k not in ("a", "b")} == {
        k: v for k, v in diff.items() if k not in ("a", "b")
    }
    text = mlvs(root, "snapshot", "diff", "before", "after")
    assert "prepare.seed" in text.stdout and "mlvs/new_helper.py" in text.stdout
    same = mlvs(root, "snapshot", "diff", "after")
    assert "no differences" in same.stdout


# --- refusals change nothing ------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusal_workspace(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained workspace for every refusal (each one leaves it as it was)."""

    root = tmp_path_factory.mktemp("refusals") / "ws"
    copy_workspace(_trained_template, root)
    assert mlvs(root, "snapshot", "create", "taken").returncode == 0
    return root


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "x y",
        "a;rm -rf",
        "",
        "x" * 101,
        "taken",
        "TAKEN",
        "-rf",
        "a..b",
        "x.lock",
        "$(id)",
    ],
)
def test_bad_or_existing_names_are_refused_with_exit_2_and_change_nothing(
    refusal_workspace: Path, name: str
) -> None:
    root = refusal_workspace
    files, refs = tree_hashes(root), git(root, "for-each-ref")
    result = (
        mlvs(root, "snapshot", "create", "--", name)
        if name.startswith("-")
        else mlvs(root, "snapshot", "create", name)
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("mlvs: error: snapshot") and "Traceback" not in result.stderr
    assert tree_hashes(root) == files and git(root, "for-each-ref") == refs


@pytest.mark.parametrize(
    "args",
    [
        ("snapshot", "show", "nope"),
        ("snapshot", "diff", "nope"),
        ("snapshot", "diff", "taken", "nope"),
        ("rollback", "nope"),
        ("rollback", "nope", "--dry-run"),
        ("rollback", "../x"),
        ("rollback", "taken", "--only", "weights"),
    ],
)
def test_unknown_snapshots_and_bad_arguments_exit_2_and_change_nothing(
    refusal_workspace: Path, args: tuple[str, ...]
) -> None:
    root = refusal_workspace
    files, refs = tree_hashes(root), git(root, "for-each-ref")
    result = mlvs(root, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert tree_hashes(root) == files and git(root, "for-each-ref") == refs


# --- real repositories ---------------------------------------------------------------------------


def no_identity_env(root: Path, home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in clean_env(root).items()
        if not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_"))
    }
    env.pop("EMAIL", None)
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        XDG_CONFIG_HOME=str(home),
    )
    return env


def test_snapshot_of_an_untrained_single_commit_repository_without_git_identity(
    workspace: Path, tmp_path: Path
) -> None:
    root = workspace
    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    env = no_identity_env(root, tmp_path / "home")
    before = git_view(root)

    result = run(root, "snapshot", "create", "empty", "--json", env=env)

    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["files"] == {} and manifest["registry"]["aliases"] == {}
    assert all(info.get("kind") in ("missing", None) for info in manifest["outputs"].values())
    assert git_view(root) == before
    author = git(
        root, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "refs/mlvs/snapshots/empty", env=env
    )
    assert author.strip() == "mlvs <mlvs@localhost>|mlvs <mlvs@localhost>"
    assert not (root / "mlflow.db").exists()  # reading an absent registry does not create one


def test_snapshot_on_a_detached_head(trained_workspace: Path) -> None:
    root = trained_workspace
    git(root, "checkout", "-q", "--detach")
    before = git_view(root)
    manifest = create(root, "detached")
    assert manifest["git"]["branch"] is None
    assert git_view(root) == before
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD").strip() == "HEAD"


def test_a_state_changing_command_waits_for_the_lock_then_fails_while_reads_keep_working(
    refusal_workspace: Path,
) -> None:
    root = refusal_workspace
    env = {**clean_env(root), "MLVS_LOCK_TIMEOUT": "1"}
    with state_lock(ProjectPaths(root), timeout=0):
        started = time.perf_counter()
        blocked = run(root, "snapshot", "create", "blocked", env=env)
        waited = time.perf_counter() - started
        listing = run(root, "snapshot", "list", "--json", env=env)
        shown = run(root, "snapshot", "show", "taken", env=env)
        rolled = run(root, "rollback", "taken", env=env)
    assert blocked.returncode == 1 and waited >= 1
    assert "another mlvs command is changing this project" in blocked.stderr
    assert rolled.returncode == 1 and "another mlvs command" in rolled.stderr
    assert listing.returncode == 0 and [m["name"] for m in json.loads(listing.stdout)] == ["taken"]
    assert shown.returncode == 0
    assert run(root, "snapshot", "list", env=env).returncode == 0


# --- interrupted snapshots -------------------------------------------------------------------------


SNAPSHOT_STEPS = ["captured", "storing", "stored", "committed", "saved"]
# mlvs's own caches and logs: what they hold is never project state.
RUNTIME_CACHES = (
    ".git/",
    ".mlvs/logs/",
    ".mlvs/hashes.sqlite",
    ".mlvs/environment.json",
    ".mlvs/state.lock",
)


@pytest.mark.parametrize("step", SNAPSHOT_STEPS)
def test_a_snapshot_killed_at_a_step_is_undone_or_kept_whole_by_recover(
    trained_workspace: Path, step: str
) -> None:
    root = trained_workspace
    # New bytes that neither the cache nor the remote holds yet, so an undo has objects to take out
    # (no longer what dvc.lock records: the snapshot is taken with --allow-unhealthy).
    card = root / "models" / "model_card.json"
    card.write_text(card.read_text() + "\n")
    before = tree_hashes(root, skip=RUNTIME_CACHES)
    env = {**clean_env(root), "MLVS_FAILPOINT": f"snapshot:{step}"}

    killed = run(root, "snapshot", "create", "interrupted", "--allow-unhealthy", env=env)
    assert killed.returncode == -9, killed.stderr
    assert (root / ".mlvs" / "journal.json").exists()

    recovered = mlvs(root, "recover", "--interrupted-only", "--json")
    assert recovered.returncode == 0, recovered.stderr
    outcome = json.loads(recovered.stdout)["interrupted"]
    assert not (root / ".mlvs" / "journal.json").exists()
    after = tree_hashes(root, skip=RUNTIME_CACHES)
    if step == "saved":
        assert outcome["action"] == "completed"
        shown = mlvs(root, "snapshot", "show", "interrupted", "--json")
        assert json.loads(shown.stdout)["files"]["models/model_card.json"]["sha256"] == sha256(card)
    else:
        assert outcome["action"] == "undone"
        assert after == before  # exactly the old state: no object, no temporary file left
        assert git(root, "for-each-ref", "refs/mlvs/").strip() == ""
        created = mlvs(root, "snapshot", "create", "interrupted", "--allow-unhealthy")
        assert created.returncode == 0


def test_a_snapshot_killed_inside_git_update_ref_leaves_no_lock_that_refuses_the_name(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    env = {**clean_env(root), "MLVS_FAILPOINT": "snapshot:committed"}
    killed = run(root, "snapshot", "create", "interrupted", env=env)
    assert killed.returncode == -9, killed.stderr
    # What a `git update-ref` killed between taking its lock and renaming it leaves: the lock file
    # holding the new commit. Git itself refuses the ref while it is there.
    commit = (Journal(ProjectPaths(root)).current() or {})["data"]["commit"]
    lock = root / ".git" / "refs" / "mlvs" / "snapshots" / "interrupted.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(commit + "\n")

    created = mlvs(root, "snapshot", "create", "interrupted", "--json")
    assert created.returncode == 0, created.stderr
    assert not lock.exists()
    assert git(root, "for-each-ref", "--format=%(refname)", "refs/mlvs/").split() == [
        "refs/mlvs/snapshots/interrupted"
    ]
    assert mlvs(root, "verify").returncode == 0


def test_a_full_disk_while_storing_data_leaves_no_snapshot_and_no_trace(
    trained_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mlvs.backends.dvc import objects
    from mlvs.errors import MlvsError
    from mlvs.ops.snapshot.create import create_snapshot

    root = trained_workspace
    card = root / "models" / "model_card.json"
    card.write_text(card.read_text() + "\n")  # bytes the cache does not have: they must be copied
    before = tree_hashes(root, skip=RUNTIME_CACHES)

    def full_disk(source: Path, destination: Path, durable: bool | None = None) -> str:
        destination.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(objects, "copy_verified", full_disk)
    for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    with pytest.raises(MlvsError, match="No space left on device"):
        create_snapshot(ProjectPaths(root), "full", allow_unhealthy=True)

    assert tree_hashes(root, skip=RUNTIME_CACHES) == before
    assert git(root, "for-each-ref", "refs/mlvs/").strip() == ""
    assert not (root / ".mlvs" / "journal.json").exists()
