"""Crash consistency at random points (issue 3, outcome 4): `kill -9` anywhere, not only at step boundaries.

The real CLI is started, then SIGKILLed (with its whole process group, so no
orphaned git child finishes its write later) after a delay drawn by a seeded
`random.Random` between 0 and the command's measured duration. The next
state-changing command (which recovers first) then runs, and the state,
hashed by the test itself, must be exactly the old one or exactly the new one:
every project file outside the runtime stores, the registry aliases (read from
`mlflow.db` with sqlite3) and the set of snapshot refs.

`MLVS_CRASH_SEED` replays another sequence of delays; failures list the delays.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import BIN, clean_env, copy_workspace, make_newest_version_champion, mlvs, tree_hashes

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("MLVS_CRASH_SEED", "20261127"))
ROLLBACK_KILLS = 30
SNAPSHOT_KILLS = 25
# Runtime stores: never project state (reports/ is, for its metrics.json only).
RUNTIME = (".git/", ".mlvs/", ".dvc/tmp/", ".dvc/cache/", "mlartifacts/", "mlruns/", "mlflow.db")


def files(root: Path) -> dict[str, str]:
    return {
        path: digest
        for path, digest in tree_hashes(root, skip=RUNTIME).items()
        if not path.startswith("reports/") or path == "reports/metrics.json"
    }


def aliases(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = db.execute("SELECT name, alias, version FROM registered_model_aliases")
        return {f"{name}@{alias}": str(version) for name, alias, version in rows}


def snapshot_refs(root: Path) -> set[str]:
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/mlvs/snapshots"], cwd=root,
                         env=clean_env(root), capture_output=True, text=True, check=True).stdout
    return {line.removeprefix("refs/mlvs/snapshots/") for line in out.split()}


@dataclass(frozen=True)
class State:
    files: dict[str, str]
    aliases: dict[str, str]

    @classmethod
    def of(cls, root: Path) -> State:
        return cls(files(root), aliases(root))

    def differences(self, other: State) -> list[str]:
        paths = sorted(p for p in set(self.files) | set(other.files) if self.files.get(p) != other.files.get(p))
        return paths + (["registry aliases"] if self.aliases != other.aliases else [])


def killed_run(root: Path, delay: float, *args: str) -> int | None:
    """Start `mlvs ARGS`, SIGKILL it (and its children) after `delay` seconds; its exit code."""
    proc = subprocess.Popen([str(BIN / "mlvs"), *args], cwd=root, env=clean_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait(timeout=60)


def timed(root: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = mlvs(root, *args)
    return time.perf_counter() - started, result


def verify_ok(root: Path) -> str | None:
    result = mlvs(root, "verify", "--only", "file_hash")
    return None if result.returncode == 0 else f"verify --only file_hash exit {result.returncode}: {result.stdout[-400:]}"


def recovered_cleanly(root: Path) -> str | None:
    leftovers = [p for p in (".mlvs/journal.json", ".mlvs/staging") if (root / p).exists()]
    return f"left behind {leftovers}" if leftovers else None


@dataclass(frozen=True)
class Story:
    template: Path
    a: State
    b: State
    rollback_seconds: float
    snapshot_seconds: float


@pytest.fixture(scope="module")
def story(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Story:
    """Snapshot A, more trees, retrain, champion on the new version, snapshot B; A and B by real rollbacks."""
    root = tmp_path_factory.mktemp("crash") / "ws"
    copy_workspace(_trained_template, root)
    first, created = timed(root, "snapshot", "create", "A")
    assert created.returncode == 0, created.stderr
    params = root / "params" / "train.yaml"
    values = yaml.safe_load(params.read_text())
    values["hyperparameters"]["random_forest"]["n_estimators"] += 10
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    retrained = mlvs(root, "pipeline")
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    make_newest_version_champion(root)
    second, created = timed(root, "snapshot", "create", "B")
    assert created.returncode == 0, created.stderr
    # The reference states are what real, un-killed rollbacks produce.
    to_a, done = timed(root, "rollback", "A")
    assert done.returncode == 0, done.stdout + done.stderr
    a = State.of(root)
    to_b, done = timed(root, "rollback", "B")
    assert done.returncode == 0, done.stdout + done.stderr
    b = State.of(root)
    assert a.files["models/model.skops"] != b.files["models/model.skops"]
    assert a.files["params/train.yaml"] != b.files["params/train.yaml"]
    assert a.aliases != b.aliases
    return Story(root, a, b, max(to_a, to_b), max(first, second))


@pytest.fixture
def ws(story: Story, tmp_path: Path) -> Path:
    """A private copy of the story, in state B."""
    root = tmp_path / "ws"
    copy_workspace(story.template, root)
    return root


def report(failures: list[str], seed: int) -> str:
    return f"{len(failures)} random kill(s) broke exactly-old-or-exactly-new (seed {seed}):\n" + "\n".join(failures)


def test_rollbacks_killed_at_random_points_end_exactly_old_or_exactly_new(story: Story, ws: Path) -> None:
    rng = random.Random(SEED)
    states = {"A": story.a, "B": story.b}
    current = "B"
    failures: list[str] = []
    outcomes = {"old": 0, "new": 0}
    for i in range(ROLLBACK_KILLS):
        target = "A" if current == "B" else "B"
        delay = rng.uniform(0, story.rollback_seconds)
        refs = snapshot_refs(ws)
        code = killed_run(ws, delay, "rollback", target)
        # The next state-changing command finishes or undoes the killed rollback first.
        probe = f"probe-{i}"
        recovered = mlvs(ws, "snapshot", "create", probe, "--json")
        where = f"kill {i}: rollback {current}->{target} killed after {delay:.3f}s (exit {code})"
        if recovered.returncode != 0:
            failures.append(f"{where}: `snapshot create {probe}` exit {recovered.returncode}: {recovered.stderr[-400:]}")
            break  # the workspace is in an unknown state: later kills would say nothing
        now = State.of(ws)
        ended = current if now == states[current] else target if now == states[target] else None
        added = snapshot_refs(ws) - refs - {probe}
        automatic = {r for r in added if r.startswith("auto-") and r.endswith(f"-before-{target}")}
        problems = []
        if ended is None:
            problems.append(f"neither {current} nor {target}: differs from {current} in "
                            f"{now.differences(states[current])}, from {target} in {now.differences(states[target])}")
        if added - automatic or len(automatic) > 1 or (ended == target and not automatic):
            problems.append(f"snapshot refs added: {sorted(added)}")
        if snapshot_refs(ws) < refs:
            problems.append(f"snapshot refs lost: {sorted(refs - snapshot_refs(ws))}")
        manifest = json.loads(recovered.stdout)
        recorded = {p: f["sha256"] for p, f in manifest["files"].items()}
        if any(now.files.get(p) != digest for p, digest in recorded.items()):
            problems.append(f"{probe}'s manifest disagrees with the files")
        problems += [p for p in (recovered_cleanly(ws), ended and verify_ok(ws)) if p]
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
            # Back to a known state, un-killed, so the next kills still say something.
            if mlvs(ws, "rollback", current).returncode != 0 or State.of(ws) != states[current]:
                failures.append("(could not get back to a known state: stopped)")
                break
            continue
        outcomes["old" if ended == current else "new"] += 1
        current = ended
    assert not failures, report(failures, SEED)
    print(f"rollback kills: {outcomes}")


def test_snapshot_creates_killed_at_random_points_leave_the_snapshot_whole_or_absent(story: Story, ws: Path) -> None:
    rng = random.Random(SEED + 1)
    failures: list[str] = []
    outcomes = {"absent": 0, "present": 0}
    readme, notes = ws / "README.md", ws / "notes.txt"
    for i in range(SNAPSHOT_KILLS):
        # New bytes each time (a committed file changed, an untracked one), so each snapshot commits something new.
        readme.write_text(readme.read_text() + f"\nedit {i}\n")
        notes.write_text(f"notes {i}\n")
        before, refs = State.of(ws), snapshot_refs(ws)
        name = f"k-{i}"
        delay = rng.uniform(0, story.snapshot_seconds)
        code = killed_run(ws, delay, "snapshot", "create", name)
        where = f"kill {i}: snapshot create {name} killed after {delay:.3f}s (exit {code})"
        problems = []
        present = name in snapshot_refs(ws)
        if present:
            shown = mlvs(ws, "snapshot", "show", name, "--json")
            if shown.returncode != 0:
                problems.append(f"`snapshot show {name}` exit {shown.returncode}: {shown.stderr[-300:]}")
            else:
                problems += target_problems(ws, name, json.loads(shown.stdout), before)
        else:
            # The next state-changing command undoes the killed one; the name is free again.
            again = mlvs(ws, "snapshot", "create", name, "--json")
            if again.returncode != 0:
                problems.append(f"`snapshot create {name}` again: exit {again.returncode}: {again.stderr[-400:]}")
            else:
                problems += target_problems(ws, name, json.loads(again.stdout), before)
            problems += [p for p in (recovered_cleanly(ws),) if p]
        after = State.of(ws)
        if after != before:
            problems.append(f"the project changed: {after.differences(before)}")
        if snapshot_refs(ws) != refs | {name}:
            problems.append(f"snapshot refs {sorted(snapshot_refs(ws) ^ (refs | {name}))} unexpected")
        problems += [p for p in (verify_ok(ws),) if p]
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
            continue
        outcomes["present" if present else "absent"] += 1
    # A kill whose snapshot was saved may leave its journal to the next command: that one completes it.
    final = mlvs(ws, "snapshot", "create", "final")
    if final.returncode != 0 or recovered_cleanly(ws):
        failures.append(f"final `snapshot create`: exit {final.returncode}, {recovered_cleanly(ws)}: {final.stderr[-400:]}")
    assert not failures, report(failures, SEED + 1)
    print(f"snapshot kills: {outcomes}")


def target_problems(root: Path, name: str, manifest: dict, state: State) -> list[str]:
    """Snapshot `name` is complete: its manifest, commit and cached data give back `state`."""
    problems = []
    if manifest.get("name") != name:
        problems.append(f"manifest names {manifest.get('name')!r}")
    for path, recorded in manifest.get("files", {}).items():
        if state.files.get(path) != recorded["sha256"]:
            problems.append(f"{path} recorded as {recorded['sha256'][:12]}")
        cached = root / ".dvc" / "cache" / "files" / "md5" / recorded["md5"][:2] / recorded["md5"][2:]
        if not cached.is_file() or hashlib.md5(cached.read_bytes()).hexdigest() != recorded["md5"]:
            problems.append(f"cache object of {path} missing or wrong")
    for path in ("README.md", "notes.txt", "params/train.yaml", "dvc.lock"):
        shown = subprocess.run(["git", "show", f"refs/mlvs/snapshots/{name}:{path}"], cwd=root,
                               env=clean_env(root), capture_output=True)
        if shown.returncode != 0 or hashlib.sha256(shown.stdout).hexdigest() != state.files.get(path):
            problems.append(f"the snapshot commit's {path} is not the file's")
    return problems
