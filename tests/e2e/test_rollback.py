"""`mlvs rollback` and `mlvs recover`: verified, byte-identical restores that can always be undone.

One retrain per module: snapshot A on the trained workspace, change the prepare
seed and the forest size, retrain, put `champion` on the new version, snapshot B.
Every test then works on its own copy of that state (B), with A's and B's
hashes computed here, by the test itself.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import (
    BIN,
    clean_env,
    copy_workspace,
    make_newest_version_champion,
    mlvs,
    tree_hashes,
)

pytestmark = pytest.mark.slow

RUNTIME = (".git/", ".mlvs/", ".dvc/", "mlflow.db", "mlruns/", "mlartifacts/")


def state(root: Path) -> dict[str, str]:
    """SHA-256 of every project file a snapshot covers (the runtime stores and ignored reports left out)."""
    return {
        path: digest
        for path, digest in tree_hashes(root, skip=RUNTIME).items()
        if not (path.startswith("reports/") and path.endswith((".ipynb", ".html")))
    }


def aliases(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = db.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = 'churn-classifier'"
        )
        return {alias: str(version) for alias, version in rows}


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


def rollback(root: Path, *args: str) -> dict:
    result = mlvs(root, "rollback", *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def cache_object(root: Path, relative: str, snapshot: dict) -> Path:
    md5 = snapshot["files"][relative]["md5"]
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def remote_object(root: Path, relative: str, snapshot: dict) -> Path:
    md5 = snapshot["files"][relative]["md5"]
    return root / ".mlvs" / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]


def flip_bytes(path: Path) -> None:
    os.chmod(path, 0o644)  # DVC keeps objects read-only
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class Story:
    template: Path
    a: dict[str, str]
    b: dict[str, str]
    aliases_a: dict[str, str]
    aliases_b: dict[str, str]
    manifest_a: dict
    manifest_b: dict
    lock_a: dict
    lock_b: dict


@pytest.fixture(scope="module")
def story(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Story:
    root = tmp_path_factory.mktemp("story") / "ws"
    copy_workspace(_trained_template, root)
    created = mlvs(root, "snapshot", "create", "A", "-m", "first model", "--json")
    assert created.returncode == 0, created.stderr
    manifest_a, state_a, aliases_a = json.loads(created.stdout), state(root), aliases(root)
    # Verified once per state, so the copies remember the deep checks these bytes passed.
    assert mlvs(root, "verify").returncode == 0
    lock_a = yaml.safe_load((root / "dvc.lock").read_text())

    for stage, change in (
        ("prepare", lambda p: p.update(seed=p["seed"] + 1)),
        ("train", lambda p: p["hyperparameters"]["random_forest"].update(n_estimators=25)),
    ):
        location = root / "params" / f"{stage}.yaml"
        values = yaml.safe_load(location.read_text())
        change(values)
        location.write_text(yaml.safe_dump(values, sort_keys=False))
    retrained = mlvs(root, "pipeline")
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    # Whether or not the new model won, make it the champion: the rollback must move the alias back.
    make_newest_version_champion(root)
    created = mlvs(root, "snapshot", "create", "B", "-m", "retrained", "--json")
    assert created.returncode == 0, created.stderr
    manifest_b, state_b, aliases_b = json.loads(created.stdout), state(root), aliases(root)
    assert mlvs(root, "verify").returncode == 0
    lock_b = yaml.safe_load((root / "dvc.lock").read_text())
    assert state_a["data/raw/customer_data.csv"] != state_b["data/raw/customer_data.csv"]
    assert state_a["models/model.skops"] != state_b["models/model.skops"]
    assert aliases_a["champion"] != aliases_b["champion"]
    return Story(
        root,
        state_a,
        state_b,
        aliases_a,
        aliases_b,
        manifest_a,
        manifest_b,
        lock_a["stages"],
        lock_b["stages"],
    )


@pytest.fixture
def ws(story: Story, tmp_path: Path) -> Path:
    """A private copy of the story's final state (B)."""
    root = tmp_path / "ws"
    copy_workspace(story.template, root)
    return root


# --- round trips -------------------------------------------------------------------------


def test_rollback_restores_every_part_byte_for_byte_and_moves_champion_back(
    story: Story, ws: Path
) -> None:
    untouched = ws / "mlvs" / "errors.py"  # no snapshot of the story changes it
    before = os.stat(untouched)

    report = rollback(ws, "A")

    assert report["verified"] is True and report["findings"] == []
    assert report["automatic_snapshot"].startswith("auto-") and report[
        "automatic_snapshot"
    ].endswith("-before-A")
    assert state(ws) == story.a
    assert aliases(ws) == story.aliases_a
    # Only what differs is written: an unchanged file keeps its inode and mtime.
    after = os.stat(untouched)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    changed = {change["path"] for change in report["files"]}
    assert changed == {p for p in set(story.a) | set(story.b) if story.a.get(p) != story.b.get(p)}
    assert report["aliases"]["champion"] == [
        story.aliases_b["champion"],
        story.aliases_a["champion"],
    ]
    status = subprocess.run(
        [str(BIN / "python"), "-m", "dvc", "status"],
        cwd=ws,
        env=clean_env(ws),
        capture_output=True,
        text=True,
    )
    assert "up to date" in status.stdout, status.stdout + status.stderr


def test_a_rollback_is_undone_by_rolling_back_to_its_automatic_snapshot(
    story: Story, ws: Path
) -> None:
    automatic = rollback(ws, "A")["automatic_snapshot"]
    listed = json.loads(mlvs(ws, "snapshot", "list", "--json").stdout)
    assert [m["automatic"] for m in listed if m["name"] == automatic] == [True]

    rollback(ws, automatic)

    assert state(ws) == story.b
    assert aliases(ws) == story.aliases_b


def test_rolling_back_twice_changes_nothing_the_second_time(story: Story, ws: Path) -> None:
    rollback(ws, "A")
    again = rollback(ws, "A")
    assert again["files"] == [] and again["aliases"] == {} and again["verified"] is True
    assert state(ws) == story.a


def test_uncommitted_changes_and_untracked_files_survive_in_the_automatic_snapshot(
    story: Story, ws: Path
) -> None:
    readme = ws / "README.md"
    readme.write_text(readme.read_text() + "\nwork in progress\n")
    (ws / "notes.txt").write_text("my notes\n")
    (ws / "notebooks" / "scratch.ipynb").write_text("{}\n")
    dirty = state(ws)

    report = rollback(ws, "A")
    automatic = report["automatic_snapshot"]
    assert state(ws) == story.a  # exactly A: the work in progress is not in A...
    saved = next(n for n in report["notes"] if n.startswith("uncommitted work saved"))
    for path in ("README.md", "notes.txt", "notebooks/scratch.ipynb"):
        assert path in saved  # the report names what went into the automatic snapshot

    back = rollback(ws, automatic)
    assert state(ws) == dirty  # ...and nothing of it was lost
    assert "-before-auto-" not in back["automatic_snapshot"]  # names do not nest
    # (a counter is added when both rollbacks fall within the same second)
    assert re.search(r"-before-A(-\d+)?$", back["automatic_snapshot"]), back["automatic_snapshot"]
    assert (ws / "notes.txt").read_text() == "my notes\n"


# --- the DVC cache cannot be trusted blindly ---------------------------------------------------


def test_a_deleted_cache_object_is_fetched_from_the_remote(story: Story, ws: Path) -> None:
    cache_object(ws, "models/model.skops", story.manifest_a).unlink()

    report = rollback(ws, "A")

    assert state(ws) == story.a
    sources = {c["path"]: c["source"] for c in report["files"]}
    assert sources["models/model.skops"] == "remote"
    repaired = cache_object(ws, "models/model.skops", story.manifest_a)
    assert hashlib.sha256(repaired.read_bytes()).hexdigest() == story.a["models/model.skops"]


def test_a_corrupt_cache_object_is_fetched_from_the_remote(story: Story, ws: Path) -> None:
    for relative in ("models/model.skops", "data/raw/customer_data.csv"):
        flip_bytes(cache_object(ws, relative, story.manifest_a))

    report = rollback(ws, "A")

    assert state(ws) == story.a
    sources = {c["path"]: c["source"] for c in report["files"]}
    assert sources["models/model.skops"] == sources["data/raw/customer_data.csv"] == "remote"
    for relative in ("models/model.skops", "data/raw/customer_data.csv"):
        assert (
            hashlib.sha256(cache_object(ws, relative, story.manifest_a).read_bytes()).hexdigest()
            == story.a[relative]
        )


def test_a_rollback_whose_data_is_lost_everywhere_is_refused_and_changes_nothing(
    story: Story, ws: Path
) -> None:
    flip_bytes(cache_object(ws, "models/model.skops", story.manifest_a))
    remote_object(ws, "models/model.skops", story.manifest_a).unlink()
    refs = git(ws, "for-each-ref")

    result = mlvs(ws, "rollback", "A")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "models/model.skops" in result.stderr and "nothing was changed" in result.stderr
    assert state(ws) == story.b and aliases(ws) == story.aliases_b
    assert git(ws, "for-each-ref") == refs  # no automatic snapshot either
    assert not (ws / ".mlvs" / "journal.json").exists() and not (ws / ".mlvs" / "staging").exists()


def test_a_rollback_to_a_deleted_registry_version_is_refused_and_changes_nothing(
    story: Story, ws: Path
) -> None:
    with sqlite3.connect(ws / "mlflow.db") as db:  # what MlflowClient.delete_model_version does
        db.execute(
            "DELETE FROM registered_model_aliases WHERE version = ?",
            (int(story.aliases_a["champion"]),),
        )
        db.execute(
            "UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE version = ?",
            (int(story.aliases_a["champion"]),),
        )
    before_aliases = aliases(ws)

    dry = rollback(ws, "A", "--dry-run")
    result = mlvs(ws, "rollback", "A")

    assert any("no longer exists" in f for f in dry["findings"])
    assert result.returncode == 1 and "no longer exists" in result.stderr
    assert state(ws) == story.b and aliases(ws) == before_aliases
    assert rollback(ws, "A", "--only", "code,params,data,models")["verified"] is True
    assert state(ws) == story.a


def test_a_result_that_does_not_match_is_reported_with_exit_1_and_can_be_undone(
    story: Story, ws: Path
) -> None:
    # An ignored directory where A's metrics file must go: git will not write over it.
    (ws / "reports" / "metrics.json").unlink()
    (ws / "reports" / "metrics.json" / "__pycache__").mkdir(parents=True)
    (ws / "reports" / "metrics.json" / "__pycache__" / "x.pyc").write_bytes(b"x")

    result = mlvs(ws, "rollback", "A", "--json")

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert any(f.startswith("reports/metrics.json") for f in report["findings"])
    assert (
        "could not be verified" in result.stderr and report["automatic_snapshot"] in result.stderr
    )


def test_bytes_rewritten_in_place_during_a_rollback_are_not_reported_verified(
    story: Story, ws: Path, tmp_path: Path
) -> None:
    """The rollback's own check trusts a placed file only while size, mtime, ctime, inode and
    device all hold: bytes rewritten in place with the old mtime put back are read again."""
    release = tmp_path / "release"
    env = clean_env(ws) | {
        "MLVS_PAUSE": "rollback:apply:data",
        "MLVS_PAUSE_RELEASE": str(release),
        "MLVS_PAUSE_SECONDS": "120",
    }
    model = ws / "models" / "model.skops"
    held = subprocess.Popen(
        [str(BIN / "mlvs"), "rollback", "A", "--only", "models", "--json"],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while hashlib.sha256(model.read_bytes()).hexdigest() != story.a["models/model.skops"]:
            assert held.poll() is None and time.monotonic() < deadline, held.communicate()
            time.sleep(0.05)
        # The rollback is paused with A's model in place: rewrite it, same inode, size and mtime.
        before = os.stat(model)
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        with open(model, "r+b") as handle:
            handle.write(data)
        os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(model)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )
    finally:
        release.touch()
    out, err = held.communicate(timeout=300)

    assert held.returncode == 1, out + err
    report = json.loads(out)
    assert report["verified"] is False
    assert any(f.startswith("models/model.skops: SHA-256") for f in report["findings"]), report
    checked = mlvs(ws, "verify", "--json")
    assert checked.returncode == 1 and json.loads(checked.stdout)["healthy"] is False


# --- parts and dry runs ---------------------------------------------------------------------------


def test_dry_run_lists_what_would_change_and_changes_nothing(story: Story, ws: Path) -> None:
    skip = (".git/", ".mlvs/logs/", ".mlvs/hashes.sqlite", ".mlvs/environment.json")
    files, refs, registry = tree_hashes(ws, skip=skip), git(ws, "for-each-ref"), aliases(ws)

    report = rollback(ws, "A", "--dry-run")

    assert report["dry_run"] is True and report["automatic_snapshot"] is None
    planned = {c["path"]: c for c in report["files"]}
    assert planned["models/model.skops"]["source"] == "cache"
    assert planned["params/train.yaml"]["source"] == "git"
    assert report["aliases"]["champion"] == [
        story.aliases_b["champion"],
        story.aliases_a["champion"],
    ]
    assert (tree_hashes(ws, skip=skip), git(ws, "for-each-ref"), aliases(ws)) == (
        files,
        refs,
        registry,
    )
    text = mlvs(ws, "rollback", "A", "--dry-run")
    assert (
        text.returncode == 0
        and "nothing was changed" in text.stdout
        and "models/model.skops" in text.stdout
    )


def test_only_models_restores_the_model_and_keeps_the_new_data(story: Story, ws: Path) -> None:
    report = rollback(ws, "A", "--only", "models")

    assert report["parts"] == ["models"] and report["verified"] is True
    now = state(ws)
    for path in now:
        if path == "dvc.lock":
            continue  # each stage's entry from its own side: below
        expected = (
            story.a if path.startswith("models/") or path == "reports/metrics.json" else story.b
        )
        assert now[path] == expected[path], path
    assert aliases(ws) == story.aliases_b  # the registry is a part of its own
    # The lock describes the bytes in place: the model's stage as A recorded it, the data's as B did.
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert lock["train"] == story.lock_a["train"] and lock["prepare"] == story.lock_b["prepare"]


def test_a_rollback_from_a_sick_state_is_never_refused_and_its_automatic_snapshot_says_so(
    story: Story, ws: Path
) -> None:
    card = ws / "models" / "model_card.json"
    card.write_text(card.read_text() + "\n")  # damage: no longer what dvc.lock records

    report = rollback(ws, "A")

    assert report["verified"] is True and state(ws) == story.a
    automatic = json.loads(
        mlvs(ws, "snapshot", "show", report["automatic_snapshot"], "--json").stdout
    )
    assert automatic["health"]["healthy"] is False
    assert [f["artifact"] for f in automatic["health"]["findings"]] == ["models/model_card.json"]

    back = mlvs(ws, "rollback", report["automatic_snapshot"])

    assert back.returncode == 0, back.stderr
    assert "was taken unhealthy" in back.stdout and "models/model_card.json" in back.stdout
    assert card.read_text() == (story.template / "models" / "model_card.json").read_text() + "\n"


PARTS = ("code", "params", "data", "models", "registry")
EVERY_COMBINATION = [
    ",".join(chosen) for size in range(1, 6) for chosen in itertools.combinations(PARTS, size)
]


@pytest.mark.parametrize("only", EVERY_COMBINATION)
def test_a_partial_rollback_leaves_a_state_verify_finds_undamaged_and_recover_leaves_alone(
    story: Story, ws: Path, only: str
) -> None:
    # A and B differ in both stages' params, data, model and champion; their code is the same.
    rolled = mlvs(ws, "rollback", "A", "--only", only, "--json")
    assert rolled.returncode == 0, rolled.stdout[-2000:] + rolled.stderr[-2000:]
    assert json.loads(rolled.stdout)["verified"] is True

    checked = mlvs(ws, "verify", "--json")
    report = json.loads(checked.stdout)
    assert [f for f in report["findings"] if f["kind"] != "stale"] == [], report["findings"]
    # Outputs of A beside params of B (or the other way round) were produced from other
    # params: stale. With params, data and models all restored (or none), nothing is.
    restored = set(only.split(",")) & {"params", "data", "models"}
    expect_stale = bool(restored) and restored != {"params", "data", "models"}
    assert report["stale"] is expect_stale, report["findings"]
    assert checked.returncode == (1 if expect_stale else 0)

    files, champion = state(ws), aliases(ws)
    recovered = mlvs(ws, "recover", "--json")
    assert recovered.returncode == (1 if expect_stale else 0), recovered.stderr[-2000:]
    assert json.loads(recovered.stdout)["repairs"] == []
    assert state(ws) == files and aliases(ws) == champion


def test_only_registry_moves_the_aliases_and_no_file(story: Story, ws: Path) -> None:
    report = rollback(ws, "A", "--only", "registry")
    assert report["files"] == [] and report["verified"] is True
    assert aliases(ws) == story.aliases_a and state(ws) == story.b


def test_a_registry_that_cannot_be_read_is_never_recorded_as_empty(story: Story, ws: Path) -> None:
    """Unreadable is an error: `snapshot create` refuses; an automatic snapshot records why, and
    no rollback to it moves or deletes an alias."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens there once the probe is closed
    dead = clean_env(ws) | {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    refs = git(ws, "for-each-ref", "refs/mlvs/snapshots")
    refused = run(ws, "snapshot", "create", "blind", env=dead)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "'blind' was not created" in line and "cannot be read" in line, line
    assert f"127.0.0.1:{port}" in line and "then take the snapshot again" in line
    assert git(ws, "for-each-ref", "refs/mlvs/snapshots") == refs

    # Files can still be rolled back while the server is down; the automatic snapshot says why
    # it holds no aliases instead of claiming there were none.
    moved = run(ws, "rollback", "A", "--only", "models", "--json", env=dead)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    auto = json.loads(moved.stdout)["automatic_snapshot"]
    shown = json.loads(mlvs(ws, "snapshot", "show", auto, "--json").stdout)
    assert shown["registry"]["aliases"] == {} and shown["registry"]["error"], shown["registry"]
    assert aliases(ws) == story.aliases_b

    named = mlvs(ws, "rollback", auto, "--only", "registry")
    assert named.returncode != 0
    (line,) = named.stderr.strip().splitlines()
    assert "could not read the MLflow registry when it was taken" in line, line
    assert "--only code,params,data,models" in line
    assert aliases(ws) == story.aliases_b

    whole = rollback(ws, auto)
    assert any("registry left as it is" in note for note in whole["notes"]), whole["notes"]
    assert aliases(ws) == story.aliases_b and whole["verified"] is True


# --- real repositories ------------------------------------------------------------------------------


def test_rollback_on_a_detached_head_without_any_git_identity(
    story: Story, ws: Path, tmp_path: Path
) -> None:
    git(ws, "checkout", "-q", "--detach")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in clean_env(ws).items()
        if not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_"))
    }
    env.pop("EMAIL", None)
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        XDG_CONFIG_HOME=str(home),
    )
    head = git(ws, "rev-parse", "HEAD")

    result = run(ws, "rollback", "A", "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert state(ws) == story.a and git(ws, "rev-parse", "HEAD") == head
    automatic = json.loads(result.stdout)["automatic_snapshot"]
    author = git(ws, "log", "-1", "--format=%an <%ae>", f"refs/mlvs/snapshots/{automatic}", env=env)
    assert author.strip() == "mlvs <mlvs@localhost>"


def test_rollback_without_a_name_outside_a_terminal_asks_for_one(ws: Path) -> None:
    result = mlvs(ws, "rollback")
    assert result.returncode == 2 and "give a snapshot name" in result.stderr


# --- interrupted rollbacks ---------------------------------------------------------------------------

BEFORE_THE_AUTOMATIC_SNAPSHOT = [
    "planned",
    "staged",
    "auto:storing",
    "auto:stored",
    "auto:committed",
]
AFTER_IT = ["auto:saved", "applying", "apply:data", "apply:git", "applied", "verified"]


@pytest.mark.parametrize("step", BEFORE_THE_AUTOMATIC_SNAPSHOT + AFTER_IT)
def test_a_rollback_killed_at_a_step_ends_exactly_old_or_exactly_new_after_recover(
    story: Story, ws: Path, step: str
) -> None:
    refs = git(ws, "for-each-ref")
    env = {**clean_env(ws), "MLVS_FAILPOINT": f"rollback:{step}"}

    killed = run(ws, "rollback", "A", env=env)
    assert killed.returncode == -9, killed.stdout + killed.stderr

    recovered = mlvs(ws, "recover", "--json")
    assert recovered.returncode == 0, recovered.stderr
    outcome = json.loads(recovered.stdout)["interrupted"]
    assert not (ws / ".mlvs" / "journal.json").exists() and not (ws / ".mlvs" / "staging").exists()
    if step in AFTER_IT:
        assert outcome["action"] == "rolled forward"
        assert state(ws) == story.a and aliases(ws) == story.aliases_a
    else:
        assert outcome["action"] == "undone"
        assert state(ws) == story.b and aliases(ws) == story.aliases_b
        assert git(ws, "for-each-ref") == refs


def test_the_next_state_changing_command_recovers_first(story: Story, ws: Path) -> None:
    env = {**clean_env(ws), "MLVS_FAILPOINT": "rollback:apply:data"}
    assert run(ws, "rollback", "A", env=env).returncode == -9

    created = mlvs(ws, "snapshot", "create", "after-crash", "--json")

    assert created.returncode == 0, created.stderr
    assert "completed" in created.stderr  # it said what it recovered
    assert state(ws) == story.a
    assert json.loads(created.stdout)["files"] == story.manifest_a["files"]


# --- the two ways into the registry agree ------------------------------------------------------------


def test_the_sql_and_mlflow_client_registry_readers_agree(
    story: Story, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlvs.backends.mlflow.history import MoveReason
    from mlvs.backends.mlflow.registry import read_registry, set_aliases
    from mlvs.paths import ProjectPaths

    for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    paths = ProjectPaths(ws)
    model_sha = story.b["models/model.skops"]
    direct = read_registry(paths, "churn-classifier", model_sha)
    monkeypatch.setenv("MLVS_REGISTRY_BACKEND", "mlflow")
    through_mlflow = read_registry(paths, "churn-classifier", model_sha)
    assert direct == through_mlflow and direct.error is None and direct.model is not None

    set_aliases(
        paths,
        "churn-classifier",
        story.aliases_a,
        MoveReason("test", "the readers agree"),
        expected=direct.alias_versions(),
    )
    assert aliases(ws) == story.aliases_a
