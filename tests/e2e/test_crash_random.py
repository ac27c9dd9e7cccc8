"""Crash consistency at random points (issue 3, outcome 4): `kill -9` anywhere, not only at step boundaries.

The real CLI is started, then SIGKILLed (with its whole process group, so no
orphaned git child finishes its write later) after a delay drawn by a seeded
`random.Random`. The critical section is the life of the command's journal, measured
on an un-killed run. Three kills in four are timed from the journal's appearance,
over that life; one in four from the moment the command took the state lock (its pid
in the lock's holder file, watched from outside), so what it does before its journal
is hit too. A kill landed in the critical section when the journal is found right
after it. Timings under load vary, so a kill found to have come after the end
narrows the window for the next ones to its own delay; at least half of the
rollback, snapshot and recover kills must land (a recover is killed only while the
interrupted rollback it finishes still has its journal). The next state-changing command (which recovers
first) then runs, and the state, hashed by the test itself, must be exactly the
old one or exactly the new one: every project file outside the runtime stores,
the registry aliases (read from `mlflow.db` with sqlite3) and the set of snapshot
refs. The old and new states are the ones the test hashed when each snapshot
was taken, not what mlvs later restores.

Beyond snapshot and rollback: `mlvs recover` killed while it finishes an
interrupted rollback, and while it repairs a damaged data or model file; and
`mlvs pipeline` killed while it retrains with changed params (its state: the
data, the models, `dvc.lock` and the metrics).

`MLVS_CRASH_SEED` replays another sequence of delays; failures list the delays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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

SEED = int(os.environ.get("MLVS_CRASH_SEED", "20261127"))
ROLLBACK_KILLS = 30
SNAPSHOT_KILLS = 25
RECOVER_KILLS = 52  # recovers of interrupted rollbacks, killed two in a row
RECOVERS_IN_A_ROW = 2
# The journal steps of a rollback, where `MLVS_FAILPOINT` stops it for a recover to finish.
ROLLBACK_STEPS = (
    "planned",
    "staged",
    "auto:storing",
    "auto:stored",
    "auto:committed",
    "auto:saved",
    "applying",
    "apply:data",
    "apply:git",
    "applied",
    "verified",
)
REPAIR_KILLS = 2  # `mlvs recover` repairing a damaged file: seconds each
PIPELINE_KILLS = 2  # a retraining: the costliest kills
# What a pipeline run changes: its outputs, their record, the metrics.
PIPELINE_STATE = ("data/", "models/", "dvc.lock", "reports/metrics.json")
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
    out = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/mlvs/snapshots"],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.removeprefix("refs/mlvs/snapshots/") for line in out.split()}


@dataclass(frozen=True)
class State:
    files: dict[str, str]
    aliases: dict[str, str]

    @classmethod
    def of(cls, root: Path) -> State:
        return cls(files(root), aliases(root))

    def differences(self, other: State) -> list[str]:
        paths = sorted(
            p for p in set(self.files) | set(other.files) if self.files.get(p) != other.files.get(p)
        )
        return paths + (["registry aliases"] if self.aliases != other.aliases else [])


def holds_the_lock(root: Path, pid: int) -> bool:
    """Whether process `pid` holds the project's state lock (its pid in the holder file)."""
    try:
        return json.loads((root / ".mlvs" / "state.lock.holder").read_text())["pid"] == pid
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _start(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env=clean_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _until_locked(root: Path, proc: subprocess.Popen[bytes]) -> bool:
    """Wait until `proc` holds the state lock; False if it ended first."""
    while proc.poll() is None:
        if holds_the_lock(root, proc.pid):
            return True
        time.sleep(0.002)
    return False


@dataclass(frozen=True)
class Section:
    """When an un-killed command's journal appeared and when it was gone, in seconds after the lock."""

    opens: float
    closes: float


def critical_section(root: Path, *args: str) -> Section:
    """Run `mlvs ARGS` to its end, timing its journal's life (the critical section).

    What comes after the journal is gone (a last verification, the exit) changes nothing.
    """
    journal = root / ".mlvs" / "journal.json"
    proc = _start(root, *args)
    assert _until_locked(root, proc), f"mlvs {' '.join(args)} never held the state lock"
    taken = time.perf_counter()
    while proc.poll() is None and not journal.exists():
        time.sleep(0.002)
    opens = time.perf_counter() - taken
    while proc.poll() is None and (journal.exists() or time.perf_counter() - taken < 0.05):
        time.sleep(0.002)
    closes = time.perf_counter() - taken
    assert proc.wait(timeout=600) == 0, f"mlvs {' '.join(args)} failed"
    return Section(min(opens, closes), closes)


@dataclass(frozen=True)
class Kill:
    code: int | None
    locked: bool  # the command held the state lock when the delay began
    in_critical_section: bool  # its journal was there right after the kill

    def __str__(self) -> str:
        where = "in the critical section" if self.in_critical_section else "outside it"
        return f"exit {self.code}, {where}"


def killed_run(root: Path, delay: float, *args: str, from_journal: bool = False) -> Kill:
    """Start `mlvs ARGS`, SIGKILL it (and its children) `delay` seconds after it took the state
    lock, or after its journal appeared when `from_journal`."""
    journal = root / ".mlvs" / "journal.json"
    proc = _start(root, *args)
    locked = _until_locked(root, proc)
    while from_journal and proc.poll() is None and not journal.exists():
        time.sleep(0.002)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout=60)
    return Kill(code, locked, journal.exists())


@dataclass
class Kills:
    """Seeded kill times over a critical section, and the kills made.

    A kill that finds the journal already gone came after the end: the section is
    shorter now than when it was measured (the machine is busier or the caches
    warmer), so later kills are drawn from no further than that one.
    """

    rng: random.Random
    section: Section
    made: list[Kill] = field(default_factory=list)

    def run(self, root: Path, *args: str) -> tuple[str, Kill]:
        """Kill one `mlvs ARGS`; say when it was killed, and how it ended."""
        from_journal = len(self.made) % 4 != 3
        start = self.section.opens if from_journal else 0.0
        delay = self.rng.uniform(0, max(self.section.closes - start, 0.01))
        kill = killed_run(root, delay, *args, from_journal=from_journal)
        self.made.append(kill)
        if not kill.in_critical_section and kill.locked:
            self.section = Section(self.section.opens, min(self.section.closes, start + delay))
        since = "its journal appeared" if from_journal else "the lock"
        return f"killed {delay:.3f}s after {since} ({kill})", kill

    def assert_most_landed_in_the_critical_section(self) -> None:
        landed = sum(k.in_critical_section for k in self.made)
        assert landed * 2 >= len(self.made), (
            f"only {landed} of {len(self.made)} kills hit the critical section"
        )

    def __str__(self) -> str:
        return f"{sum(k.in_critical_section for k in self.made)} of {len(self.made)} in the critical section"


def timed(root: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = mlvs(root, *args)
    return time.perf_counter() - started, result


def verify_ok(root: Path) -> str | None:
    result = mlvs(root, "verify", "--only", "file_hash")
    return (
        None
        if result.returncode == 0
        else f"verify --only file_hash exit {result.returncode}: {result.stdout[-400:]}"
    )


def recovered_cleanly(root: Path) -> str | None:
    leftovers = [p for p in (".mlvs/journal.json", ".mlvs/staging") if (root / p).exists()]
    return f"left behind {leftovers}" if leftovers else None


@dataclass(frozen=True)
class Story:
    template: Path
    a: State
    b: State
    rollback: Section  # the longer of the two un-killed rollbacks
    pipeline_seconds: float


@pytest.fixture(scope="module")
def story(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Story:
    """Snapshot A, more trees, retrain, champion on the new version, snapshot B.

    The reference states A and B are hashed here, when each snapshot is taken; the
    un-killed rollbacks afterwards measure the critical sections and must reach them.
    """
    root = tmp_path_factory.mktemp("crash") / "ws"
    copy_workspace(_trained_template, root)
    critical_section(root, "snapshot", "create", "A")
    a = State.of(root)
    params = root / "params" / "train.yaml"
    values = yaml.safe_load(params.read_text())
    values["hyperparameters"]["random_forest"]["n_estimators"] += 10
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    retraining, retrained = timed(root, "pipeline")
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    make_newest_version_champion(root)
    critical_section(root, "snapshot", "create", "B")
    b = State.of(root)
    assert a.files["models/model.skops"] != b.files["models/model.skops"]
    assert a.files["params/train.yaml"] != b.files["params/train.yaml"]
    assert a.aliases != b.aliases
    to_a = critical_section(root, "rollback", "A")
    assert State.of(root) == a, State.of(root).differences(a)
    to_b = critical_section(root, "rollback", "B")
    assert State.of(root) == b, State.of(root).differences(b)
    return Story(root, a, b, max(to_a, to_b, key=lambda s: s.closes), retraining)


@pytest.fixture
def ws(story: Story, tmp_path: Path) -> Path:
    """A private copy of the story, in state B."""
    root = tmp_path / "ws"
    copy_workspace(story.template, root)
    return root


def back_to(root: Path, name: str, expected: State, failures: list[str]) -> bool:
    """Roll back to `name`, un-killed, so the next kills still say something; False if that fails too."""
    if mlvs(root, "rollback", name).returncode == 0 and State.of(root) == expected:
        return True
    failures.append("(could not get back to a known state: stopped)")
    return False


def report(failures: list[str], seed: int) -> str:
    return (
        f"{len(failures)} random kill(s) broke exactly-old-or-exactly-new (seed {seed}):\n"
        + "\n".join(failures)
    )


def test_rollbacks_killed_at_random_points_end_exactly_old_or_exactly_new(
    story: Story, ws: Path
) -> None:
    rng = random.Random(SEED)
    states = {"A": story.a, "B": story.b}
    current = "B"
    failures: list[str] = []
    outcomes = {"old": 0, "new": 0}
    kills = Kills(rng, story.rollback)
    for i in range(ROLLBACK_KILLS):
        target = "A" if current == "B" else "B"
        refs = snapshot_refs(ws)
        when, _ = kills.run(ws, "rollback", target)
        # The next state-changing command finishes or undoes the killed rollback first.
        probe = f"probe-{i}"
        recovered = mlvs(ws, "snapshot", "create", probe, "--json")
        where = f"kill {i}: rollback {current}->{target} {when}"
        if recovered.returncode != 0:
            failures.append(
                f"{where}: `snapshot create {probe}` exit {recovered.returncode}: {recovered.stderr[-400:]}"
            )
            break  # the workspace is in an unknown state: later kills would say nothing
        now = State.of(ws)
        ended = current if now == states[current] else target if now == states[target] else None
        added = snapshot_refs(ws) - refs - {probe}
        automatic = {r for r in added if r.startswith("auto-") and r.endswith(f"-before-{target}")}
        problems = []
        if ended is None:
            problems.append(
                f"neither {current} nor {target}: differs from {current} in "
                f"{now.differences(states[current])}, from {target} in {now.differences(states[target])}"
            )
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
            if not back_to(ws, current, states[current], failures):
                break
            continue
        outcomes["old" if ended == current else "new"] += 1
        current = ended
    assert not failures, report(failures, SEED)
    kills.assert_most_landed_in_the_critical_section()
    print(f"rollback kills: {outcomes}, {kills}")


def test_snapshot_creates_killed_at_random_points_leave_the_snapshot_whole_or_absent(
    story: Story, ws: Path
) -> None:
    rng = random.Random(SEED + 1)
    failures: list[str] = []
    outcomes = {"absent": 0, "present": 0}
    readme, notes = ws / "README.md", ws / "notes.txt"
    # The critical section measured here, on a snapshot like the killed ones (new bytes, warm caches).
    readme.write_text(readme.read_text() + "\ntiming\n")
    kills = Kills(rng, critical_section(ws, "snapshot", "create", "timing"))
    for i in range(SNAPSHOT_KILLS):
        # New bytes each time (a committed file changed, an untracked one), so each snapshot commits something new.
        readme.write_text(readme.read_text() + f"\nedit {i}\n")
        notes.write_text(f"notes {i}\n")
        before, refs = State.of(ws), snapshot_refs(ws)
        name = f"k-{i}"
        when, _ = kills.run(ws, "snapshot", "create", name)
        where = f"kill {i}: snapshot create {name} {when}"
        problems = []
        present = name in snapshot_refs(ws)
        if present:
            shown = mlvs(ws, "snapshot", "show", name, "--json")
            if shown.returncode != 0:
                problems.append(
                    f"`snapshot show {name}` exit {shown.returncode}: {shown.stderr[-300:]}"
                )
            else:
                problems += target_problems(ws, name, json.loads(shown.stdout), before)
        else:
            # The next state-changing command undoes the killed one; the name is free again.
            again = mlvs(ws, "snapshot", "create", name, "--json")
            if again.returncode != 0:
                problems.append(
                    f"`snapshot create {name}` again: exit {again.returncode}: {again.stderr[-400:]}"
                )
            else:
                problems += target_problems(ws, name, json.loads(again.stdout), before)
            problems += [p for p in (recovered_cleanly(ws),) if p]
        after = State.of(ws)
        if after != before:
            problems.append(f"the project changed: {after.differences(before)}")
        if snapshot_refs(ws) != refs | {name}:
            problems.append(
                f"snapshot refs {sorted(snapshot_refs(ws) ^ (refs | {name}))} unexpected"
            )
        problems += [p for p in (verify_ok(ws),) if p]
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
            continue
        outcomes["present" if present else "absent"] += 1
    # A kill whose snapshot was saved may leave its journal to the next command: that one completes it.
    final = mlvs(ws, "snapshot", "create", "final")
    if final.returncode != 0 or recovered_cleanly(ws):
        failures.append(
            f"final `snapshot create`: exit {final.returncode}, {recovered_cleanly(ws)}: {final.stderr[-400:]}"
        )
    assert not failures, report(failures, SEED + 1)
    kills.assert_most_landed_in_the_critical_section()
    print(f"snapshot kills: {outcomes}, {kills}")


def target_problems(root: Path, name: str, manifest: dict, state: State) -> list[str]:
    """Snapshot `name` is complete: its manifest, commit and cached data give back `state`."""
    problems = []
    if manifest.get("name") != name:
        problems.append(f"manifest names {manifest.get('name')!r}")
    for path, recorded in manifest.get("files", {}).items():
        if state.files.get(path) != recorded["sha256"]:
            problems.append(f"{path} recorded as {recorded['sha256'][:12]}")
        cached = (
            root / ".dvc" / "cache" / "files" / "md5" / recorded["md5"][:2] / recorded["md5"][2:]
        )
        if not cached.is_file() or hashlib.md5(cached.read_bytes()).hexdigest() != recorded["md5"]:
            problems.append(f"cache object of {path} missing or wrong")
    for path in ("README.md", "notes.txt", "params/train.yaml", "dvc.lock"):
        shown = subprocess.run(
            ["git", "show", f"refs/mlvs/snapshots/{name}:{path}"],
            cwd=root,
            env=clean_env(root),
            capture_output=True,
        )
        if shown.returncode != 0 or hashlib.sha256(shown.stdout).hexdigest() != state.files.get(
            path
        ):
            problems.append(f"the snapshot commit's {path} is not the file's")
    return problems


def leftovers(root: Path) -> str | None:
    """The journal, the staging area or a temporary file left in the project."""
    found = [p for p in (".mlvs/journal.json", ".mlvs/staging") if (root / p).exists()]
    found += [
        p.relative_to(root).as_posix()
        for p in root.rglob("*.mlvs-tmp")
        if not p.relative_to(root).as_posix().startswith((".dvc/cache/", ".mlvs/dvc-remote/"))
    ]
    return f"left behind {found}" if found else None


def test_recovers_killed_at_random_points_finish_interrupted_rollbacks_exactly(
    story: Story, ws: Path
) -> None:
    """A rollback stopped at a random step, then the `mlvs recover` finishing it killed twice at random points.

    The rollback dies at one of its journal steps (`MLVS_FAILPOINT`, chosen at
    random), so there is always an interrupted operation to finish. Each recover
    that finishes it is killed after a random delay; the recover after the second
    kill runs to its end and must leave exactly the old or exactly the new state,
    with nothing left behind.
    """
    rng = random.Random(SEED + 2)
    states = {"A": story.a, "B": story.b}
    failures: list[str] = []
    outcomes = {"old": 0, "new": 0}
    journal = ws / ".mlvs" / "journal.json"
    # The critical section of a recover that finishes a rollback, measured here on one.
    stopped = subprocess.run(
        [str(BIN / "mlvs"), "rollback", "A"],
        cwd=ws,
        capture_output=True,
        env={**clean_env(ws), "MLVS_FAILPOINT": "rollback:applying"},
    )
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-400:]
    kills = Kills(rng, critical_section(ws, "recover", "--interrupted-only"))
    now = State.of(ws)
    assert now in (story.a, story.b), now.differences(story.b)
    current = "A" if now == story.a else "B"
    for i in range(RECOVER_KILLS // RECOVERS_IN_A_ROW):
        target = "A" if current == "B" else "B"
        step = rng.choice(ROLLBACK_STEPS)
        stopped = subprocess.run(
            [str(BIN / "mlvs"), "rollback", target],
            cwd=ws,
            capture_output=True,
            env={**clean_env(ws), "MLVS_FAILPOINT": f"rollback:{step}"},
        )
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-400:]
        assert journal.exists(), f"a rollback stopped at {step} left no journal to finish"
        made: list[str] = []
        for _ in range(RECOVERS_IN_A_ROW):
            if not journal.exists():
                break  # the last recover finished before its kill: nothing is left to interrupt
            made.append(kills.run(ws, "recover", "--interrupted-only")[0])
        finished = mlvs(ws, "recover", "--interrupted-only")
        where = f"pair {i}: rollback {current}->{target} stopped at {step}, recovers " + ", ".join(
            made
        )
        if finished.returncode != 0:
            failures.append(
                f"{where}: the next `mlvs recover` exit {finished.returncode}: {finished.stderr[-400:]}"
            )
            break
        now = State.of(ws)
        ended = current if now == states[current] else target if now == states[target] else None
        problems = [p for p in (leftovers(ws),) if p]
        if ended is None:
            problems.append(
                f"neither {current} nor {target}: differs from {current} in "
                f"{now.differences(states[current])}, from {target} in {now.differences(states[target])}"
            )
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
            if not back_to(ws, current, states[current], failures):
                break
            continue
        outcomes["old" if ended == current else "new"] += 1
        current = ended
    assert not failures, report(failures, SEED + 2)
    # Every interrupted rollback had at least its first recover killed.
    assert len(kills.made) >= RECOVER_KILLS // RECOVERS_IN_A_ROW, kills
    kills.assert_most_landed_in_the_critical_section()
    print(f"recover kills: {outcomes}, {kills}")


def _damage(root: Path, rng: random.Random) -> str:
    victim = rng.choice(
        [
            "data/raw/customer_data.csv",
            "data/processed/train.csv",
            "models/model.skops",
            "models/golden_predictions.json",
        ]
    )
    path = root / victim
    how = rng.choice(["deleted", "truncated", "bit-flipped"])
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        for offset in rng.sample(range(len(data)), 8):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    return f"{victim} {how}"


def test_recovers_killed_while_repairing_a_damaged_file_are_finished_by_the_next(
    story: Story, ws: Path
) -> None:
    """A damaged data or model file, its `mlvs recover` killed; the next `mlvs recover` gives the exact healthy state.

    The repair comes after the first verification, about half-way: the delays are
    drawn from the later part of the time a recover holds the state lock.
    """
    rng = random.Random(SEED + 3)
    failures: list[str] = []
    damage = _damage(ws, rng)
    # How long a repair holds the lock, measured on a first repair.
    seconds = critical_section(ws, "recover").closes
    assert State.of(ws) == story.b, State.of(ws).differences(story.b)
    for i in range(REPAIR_KILLS):
        damage = _damage(ws, rng)
        delay = rng.uniform(0.3 * seconds, seconds)
        code = killed_run(ws, delay, "recover")
        finished = mlvs(ws, "recover", "--json")
        where = f"kill {i}: recover of {damage} killed {delay:.3f}s after the lock ({code})"
        problems = [p for p in (leftovers(ws),) if p]
        if finished.returncode != 0:
            problems.append(
                f"the next `mlvs recover` exit {finished.returncode}: {finished.stdout[-300:]}"
            )
        now = State.of(ws)
        if now != story.b:
            problems.append(f"not the healthy state: differs in {now.differences(story.b)}")
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
            break
    assert not failures, report(failures, SEED + 3)


def pipeline_state(state: State) -> dict[str, str]:
    return {p: digest for p, digest in state.files.items() if p.startswith(PIPELINE_STATE)}


def killed_at(
    root: Path, reached: Callable[[], bool], delay: float, *args: str
) -> tuple[int | None, bool]:
    """Start `mlvs ARGS`, SIGKILL it (and its children) `delay` seconds after `reached()` first holds.

    Returns its exit code and whether the milestone was reached before the command ended on its own.
    """
    proc = subprocess.Popen(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env=clean_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while proc.poll() is None and not reached():
        time.sleep(0.02)
    hit = proc.poll() is None
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=60), hit


def _changed(path: Path, old: bytes | None) -> Callable[[], bool]:
    def changed() -> bool:
        try:
            return path.read_bytes() != old
        except OSError:
            return False

    return changed


def pipeline_milestones(root: Path) -> dict[str, Callable[[], bool]]:
    """Points a retraining passes, each seen from outside: where its random kills start from."""
    model, lock, metrics = (
        root / "models" / "model.skops",
        root / "dvc.lock",
        root / "reports" / "metrics.json",
    )
    old_model, old_lock, old_metrics = model.read_bytes(), lock.read_bytes(), metrics.read_bytes()
    return {
        "journal begun": lambda: (root / ".mlvs" / "journal.json").exists(),
        "old outputs removed": lambda: not model.exists(),
        "new model written": _changed(model, old_model),
        "new metrics written": _changed(metrics, old_metrics),
        "dvc.lock updated": _changed(lock, old_lock),
    }


def test_pipelines_killed_at_random_points_leave_the_old_outputs_or_the_new(
    story: Story, tmp_path: Path
) -> None:
    """Roll back to A, put B's params in place, retrain, kill it; the next command leaves A's outputs or B's.

    Each kill comes a random delay (up to a tenth of a retraining) after a milestone
    drawn at random, one from each stretch of the run, so that the kills spread over
    the run however fast the machine is.
    """
    rng = random.Random(SEED + 4)
    old, new = pipeline_state(story.a), pipeline_state(story.b)
    assert old != new
    failures: list[str] = []
    outcomes = {"old": 0, "new": 0}
    # One milestone from each stretch of the run, early to late, in the order a run passes them.
    phases = list(pipeline_milestones(story.template))
    stretches = [
        phases[len(phases) * k // PIPELINE_KILLS : len(phases) * (k + 1) // PIPELINE_KILLS]
        for k in range(PIPELINE_KILLS)
    ]
    milestones = [rng.choice(stretch) for stretch in stretches]
    for i, milestone in enumerate(milestones):
        root = copy_workspace(story.template, tmp_path / f"ws{i}")
        new_params = (root / "params" / "train.yaml").read_bytes()
        back = mlvs(root, "rollback", "A")
        assert back.returncode == 0, back.stdout + back.stderr
        (root / "params" / "train.yaml").write_bytes(new_params)
        # DVC's run cache would check B's outputs out without training: these params must really run.
        shutil.rmtree(root / ".dvc" / "cache" / "runs", ignore_errors=True)
        delay = rng.uniform(0, story.pipeline_seconds / 10)
        code, hit = killed_at(root, pipeline_milestones(root)[milestone], delay, "pipeline")
        finished = mlvs(root, "recover", "--interrupted-only")
        where = f"kill {i}: pipeline killed {delay:.2f}s after {milestone} (exit {code})"
        problems = [] if hit else [f"the pipeline ended (exit {code}) before {milestone}"]
        problems += [p for p in (leftovers(root),) if p]
        if finished.returncode != 0:
            problems.append(
                f"the next `mlvs recover` exit {finished.returncode}: {finished.stderr[-300:]}"
            )
        now = pipeline_state(State.of(root))
        ended = "old" if now == old else "new" if now == new else None
        if ended is None:
            problems.append(
                f"neither the old nor the new outputs: differs from the old in "
                f"{sorted(p for p in old.keys() | now.keys() if old.get(p) != now.get(p))}, "
                f"from the new in {sorted(p for p in new.keys() | now.keys() if new.get(p) != now.get(p))}"
            )
        else:
            outcomes[ended] += 1
            problems += [p for p in (verify_ok(root),) if p]
        if (root / "params" / "train.yaml").read_bytes() != new_params:
            problems.append("the params were changed")
        if problems:
            failures.append(f"{where}: " + "; ".join(problems))
        shutil.rmtree(root)
    assert not failures, report(failures, SEED + 4)
    print(f"pipeline kills: {outcomes} after {milestones}")
