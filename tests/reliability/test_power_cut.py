"""Power cuts, not only `kill -9`: every crash state a recorded command may leave ends exactly old or exactly new.

Each command (`rollback` both ways, `recover` finishing an interrupted rollback,
`recover` repairing a damaged file, `snapshot create`, and a `pipeline` retraining
with changed parameters: its notebooks' kernels, DVC, git and SQLite inside
MLflow included) runs once under strace
(`tests/_crashfs.py`, whose docstring is the model: ext4 data=ordered at its
weakest). From its operations the harness builds, in the workspace where it ran,
crash states: a prefix of the operations, with what was not flushed dropped, torn
or put on disk in another order as the model allows. In each, the next
`mlvs recover` runs in this process (the real code path: `recover_project`, as
the CLI calls it), and the test's own reads decide: the project files outside the
runtime stores, the registry aliases (SQL on `mlflow.db`), the snapshot refs, and
every snapshot complete (`git fsck` of every ref, the new snapshots' cache objects
re-hashed) must be exactly the old state or exactly the new one, with nothing left
half-done and `verify` healthy. (The pipeline's aliases are the exception: the
version it registered and promoted stays in MLflow whichever way its files end.)

The states are sampled with a fixed seed (`MLVS_POWER_CUT_SEED`) and counted by
distinct trees; `MLVS_POWER_CUT_STATES` sets how many per command (`make fuzz`
runs more). The module needs Debian's `strace` (`.ci/system-deps` installs it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from _crashfs import STRACE, CrashModel, Trace, Workbench, record
from conftest import BIN, clean_env, copy_workspace, mlvs, tree_hashes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(STRACE).exists(), reason="needs strace (.ci/system-deps)"),
]

SEED = int(os.environ.get("MLVS_POWER_CUT_SEED", "20261207"))
STATES_PER_COMMAND = int(os.environ.get("MLVS_POWER_CUT_STATES", "40"))
# Runtime stores: never project state. Their integrity is checked apart (refs, fsck, cache objects).
RUNTIME = (".git/", ".mlvs/", ".dvc/tmp/", ".dvc/cache/", "mlartifacts/", "mlruns/", "mlflow.db")
MODEL = "churn-classifier"


@dataclass(frozen=True)
class State:
    """The state the test reads for itself: project files, aliases, snapshot refs."""

    files: dict[str, str]
    aliases: dict[str, str]
    refs: frozenset[str]

    @classmethod
    def of(cls, root: Path) -> State:
        files = {
            path: digest
            for path, digest in tree_hashes(root, skip=RUNTIME).items()
            if not path.startswith("reports/") or path == "reports/metrics.json"
        }
        return cls(files, aliases(root), snapshot_refs(root))

    def differences(self, other: State) -> list[str]:
        paths = sorted(
            p
            for p in self.files.keys() | other.files.keys()
            if self.files.get(p) != other.files.get(p)
        )
        extra = ["registry aliases"] if self.aliases != other.aliases else []
        return paths + extra


def aliases(root: Path) -> dict[str, str]:
    """The registry aliases, read with the test's own SQL (closed after: the next reset replaces the file)."""
    uri = f"{(root / 'mlflow.db').as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
    return {f"{name}@{alias}": str(version) for name, alias, version in rows}


def git_out(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=root, env=clean_env(root), capture_output=True, text=True
    )


def snapshot_refs(root: Path) -> frozenset[str]:
    out = git_out(root, "for-each-ref", "--format=%(refname)", "refs/mlvs/snapshots").stdout
    return frozenset(line.removeprefix("refs/mlvs/snapshots/") for line in out.split())


# --- one recorded command and its oracle -------------------------------------------------


@dataclass
class Command:
    """A recorded command: its trace, the workspace copy before it, and what old and new look like."""

    name: str
    trace: Trace
    before: Path
    old: State | None  # None: the old state is not acceptable after a recover (a damage repaired)
    new: State
    added_refs: Callable[[str], bool]  # which new snapshot refs the new state may have
    refs_before: frozenset[str] = frozenset()  # the snapshot refs when the command started
    complete: tuple[str, ...] = ()  # snapshots whose cache objects must all be there when present
    # False for the pipeline: the versions it registers and the alias it moves are MLflow's runs,
    # kept whether its files end old or new (as after a `kill -9`); `verify` judges them.
    aliases_are_state: bool = True
    old_is_stale: bool = False  # the pipeline's: the params changed, their stage not yet run


@dataclass
class Story:
    root: Path
    commands: dict[str, Command] = field(default_factory=dict)
    refs_before: dict[str, frozenset[str]] = field(default_factory=dict)
    record_seconds: float = 0.0


def _env(root: Path) -> dict[str, str]:
    env = clean_env(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _record(
    story: Story, work: Path, name: str, *args: str, env: dict[str, str] | None = None
) -> tuple[Trace, Path]:
    before = work / f"before-{name}"
    story.refs_before[name] = snapshot_refs(story.root)
    shutil.copytree(story.root, before, symlinks=True)
    started = time.perf_counter()
    trace = record(
        story.root, [str(BIN / "mlvs"), *args], env or _env(story.root), work / f"{name}.strace"
    )
    story.record_seconds += time.perf_counter() - started
    (work / f"{name}.strace").unlink()
    return trace, before


def _add_tracked_file(root: Path) -> None:
    """A new DVC-tracked data file: what a rollback must take away and put back from the cache."""
    (root / "data" / "extra.csv").write_text("".join(f"{i},{i * i}\n" for i in range(2000)))
    done = subprocess.run(
        [str(BIN / "dvc"), "add", "-q", "data/extra.csv"],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def _set_challenger(root: Path) -> None:
    """A second alias, moved the way mlvs moves aliases (with its history), in a child process."""
    code = (
        "import sys; from pathlib import Path; from mlvs.paths import ProjectPaths;"
        "from mlvs.backends.mlflow.registry import read_registry, set_aliases;"
        "from mlvs.backends.mlflow.history import MoveReason;"
        "p = ProjectPaths(Path(sys.argv[1]));"
        f"seen = read_registry(p, {MODEL!r}, None).alias_versions();"
        f"set_aliases(p, {MODEL!r}, {{'champion': '1', 'challenger': '1'}}, MoveReason('test', 'a second alias'), expected=seen)"
    )
    subprocess.run(
        [str(BIN / "python"), "-c", code, str(root)],
        env=clean_env(root),
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def story(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Story:
    """Snapshots A and B, then each command recorded once, in the order a user might run them."""
    work = tmp_path_factory.mktemp("power-cut")
    root = copy_workspace(_trained_template, work / "ws")
    mlvs(root, "snapshot", "create", "A", check=True)
    a = State.of(root)
    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nA line only snapshot B has.\n")
    _add_tracked_file(root)
    _set_challenger(root)
    mlvs(root, "snapshot", "create", "B", check=True)
    b = State.of(root)
    assert a.differences(b), "A and B must differ"
    story = Story(root)

    def auto(target: str) -> Callable[[str], bool]:
        return lambda ref: ref.startswith("auto-") and ref.endswith(f"-before-{target}")

    trace, before = _record(story, work, "rollback-to-A", "rollback", "A")
    assert State.of(root).differences(a) == []
    story.commands["rollback B->A"] = Command(
        "rollback B->A", trace, before, b, a, auto("A"), story.refs_before["rollback-to-A"]
    )
    trace, before = _record(story, work, "rollback-to-B", "rollback", "B")
    assert State.of(root).differences(b) == []
    story.commands["rollback A->B"] = Command(
        "rollback A->B", trace, before, a, b, auto("B"), story.refs_before["rollback-to-B"]
    )

    # A rollback killed while it applies, then the recover that finishes it.
    env = _env(root) | {"MLVS_FAILPOINT": "rollback:apply:data"}
    killed = subprocess.run(
        [str(BIN / "mlvs"), "rollback", "A"], cwd=root, env=env, capture_output=True
    )
    assert killed.returncode != 0 and (root / ".mlvs" / "journal.json").exists()
    trace, before = _record(story, work, "recover-rollback", "recover")
    assert State.of(root).differences(a) == []
    story.commands["recover of a killed rollback"] = Command(
        "recover of a killed rollback",
        trace,
        before,
        b,
        a,
        auto("A"),
        story.refs_before["recover-rollback"],
    )

    # A damaged model file, repaired by recover from the DVC cache.
    healthy = State.of(root)
    model = root / "models" / "model.skops"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    trace, before = _record(story, work, "recover-repair", "recover")
    assert State.of(root) == healthy
    story.commands["recover of a damaged model"] = Command(
        "recover of a damaged model",
        trace,
        before,
        None,
        healthy,
        lambda ref: False,
        story.refs_before["recover-repair"],
    )

    # A snapshot of an edited working tree.
    readme.write_text(readme.read_text() + "\nAn edit snapshot C keeps.\n")
    old = State.of(root)
    trace, before = _record(story, work, "snapshot-C", "snapshot", "create", "C")
    new = State.of(root)
    assert new.refs == old.refs | {"C"}
    story.commands["snapshot create"] = Command(
        "snapshot create",
        trace,
        before,
        old,
        new,
        lambda ref: ref == "C",
        story.refs_before["snapshot-C"],
        complete=("C",),
    )

    # A retraining with changed parameters (more trees), the run cache cleared so that it trains.
    params = root / "params" / "train.yaml"
    data = yaml.safe_load(params.read_text())
    data["hyperparameters"]["random_forest"]["n_estimators"] = 30
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.rmtree(root / ".dvc" / "cache" / "runs", ignore_errors=True)
    old = State.of(root)
    trace, before = _record(story, work, "pipeline", "pipeline")
    new = State.of(root)
    assert [p for p in new.differences(old) if p.startswith("models/")], "the pipeline trained"
    story.commands["pipeline"] = Command(
        "pipeline",
        trace,
        before,
        old,
        new,
        lambda ref: False,
        story.refs_before["pipeline"],
        aliases_are_state=False,
        old_is_stale=True,
    )
    return story


# --- running the next recover in this process --------------------------------------------


@pytest.fixture
def in_process(story: Story, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's environment as a user's `mlvs` in the story's workspace has it."""
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "MLVS_"))]:
        monkeypatch.delenv(key)
    for key, value in clean_env(story.root).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(story.root)
    yield


def forget_process_caches() -> None:
    """Drop what mlvs remembers within one command: each crash state is a new command's world."""
    from mlvs.backends.dvc import outputs
    from mlvs.backends.git import run, tree
    from mlvs.ops.snapshot import read

    if "mlflow" in sys.modules:
        # MLflow keeps one store per URI: its connections would read the previous state's database.
        from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
        from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

        TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
        ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for cache in (
        run._TOPLEVELS,
        run._COMMITS,
        run._TREES,
        tree._UNTRACKED,
        tree._CHANGED,
        tree._EXTRA,
        outputs._PARSED,
        read._MANIFEST_PAYLOADS,
    ):
        cache.clear()


@dataclass(frozen=True)
class Recovered:
    """What the next recover left: a problem in one line (None: no damage) and the stale stages."""

    problem: str | None
    stale: tuple[str, ...] = ()


def next_recover(root: Path) -> Recovered:
    """`mlvs recover` as the CLI runs it: damage left after it is a problem; a stale stage is told apart."""
    from mlvs.errors import MlvsError
    from mlvs.ops.recorded import STALE
    from mlvs.ops.recover import recover_project
    from mlvs.paths import ProjectPaths

    forget_process_caches()
    try:
        _, outcome = recover_project(ProjectPaths(root))
    except MlvsError as error:
        return Recovered(f"recover refused: {error}")
    except Exception as error:  # a traceback is a finding too
        return Recovered(f"recover crashed: {type(error).__name__}: {error}")
    assert outcome is not None
    damage = [str(f) for f in outcome.after if f.kind != STALE]
    stale = tuple(str(f) for f in outcome.after if f.kind == STALE)
    return Recovered(f"not healthy after recover: {damage[:3]}" if damage else None, stale)


def integrity_problems(root: Path, command: Command, now: State) -> list[str]:
    """Refs whose objects are broken, new snapshots without their data, leftovers of the command."""
    from mlvs.errors import MlvsError
    from mlvs.ops.snapshot.read import show_snapshot
    from mlvs.paths import ProjectPaths

    problems = []
    fsck = git_out(root, "fsck", "--connectivity-only", "--no-dangling", "--no-progress")
    if fsck.returncode != 0:
        problems.append(f"git fsck: {(fsck.stderr or fsck.stdout).strip()[:300]}")
    for name in command.complete:
        if name not in now.refs:
            continue
        try:
            manifest = show_snapshot(ProjectPaths(root), name)
        except MlvsError as error:
            problems.append(f"snapshot {name} unreadable: {error}")
            continue
        for relative, entry in manifest.files.items():
            md5 = entry.md5
            cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
            if not cached.is_file() or hashlib.md5(cached.read_bytes()).hexdigest() != md5:
                problems.append(
                    f"snapshot {name}: the cache object of {relative} is missing or damaged"
                )
    leftovers = [
        p for p in (".mlvs/journal.json", ".mlvs/staging", ".mlvs/room") if (root / p).exists()
    ]
    if leftovers:
        problems.append(f"left behind {leftovers}")
    return problems


def judge(root: Path, command: Command, recovered: Recovered) -> list[str]:
    """Everything wrong with the state after the next recover (empty: exactly old or exactly new)."""
    problems = [recovered.problem] if recovered.problem else []
    now = State.of(root)
    ends = {"new": command.new} | ({"old": command.old} if command.old is not None else {})
    same = [
        label
        for label, state in ends.items()
        if now.files == state.files
        and (now.aliases == state.aliases or not command.aliases_are_state)
    ]
    if not same:
        problems.append(
            "neither old nor new: "
            + "; ".join(
                f"differs from {label} in {now.differences(s)}" for label, s in ends.items()
            )
        )
    # Only the pipeline's old state may be stale: its params were edited, the retraining undone.
    if recovered.stale and not (same == ["old"] and command.old_is_stale):
        problems.append(f"stale after recover: {list(recovered.stale)[:3]}")
    base = command.refs_before
    if not base <= now.refs:
        problems.append(f"snapshot refs lost: {sorted(base - now.refs)}")
    added = now.refs - base
    if any(not command.added_refs(ref) for ref in added) or len(added) > 1:
        problems.append(f"snapshot refs added: {sorted(added)}")
    if same == ["new"] and command.new.refs - base and not added:
        problems.append("the new state without its snapshot ref")
    if (
        same == ["new"]
        and command.old is not None
        and command.name.startswith(("rollback", "recover of a killed"))
        and not any(command.added_refs(ref) for ref in now.refs)
    ):
        problems.append("rolled back without its automatic snapshot")
    return problems + integrity_problems(root, command, now)


@dataclass
class Tally:
    explored: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def explore(story: Story, name: str, count: int, seed: int, tally: Tally) -> None:
    """Build `count` distinct crash states of one recorded command and judge the next recover in each."""
    command = story.commands[name]
    model = CrashModel(command.trace, command.before)
    bench = Workbench(story.root, command.before)
    rng = random.Random(f"{seed}:{name}")
    explored = 0
    for crash, tree in model.distinct_states(count, rng):
        bench.reset()
        bench.build(model, tree)
        problems = judge(story.root, command, next_recover(story.root))
        explored += 1
        if problems:
            tally.failures.append(
                f"{name}, {crash.describe(command.trace)}: " + "; ".join(problems)
            )
    tally.explored[name] = explored
    bench.reset()


# Distinct crash states each command's exploration judged in this session (filled by the tests).
EXPLORED: dict[str, int] = {}

COMMANDS = (
    "rollback B->A",
    "rollback A->B",
    "recover of a killed rollback",
    "recover of a damaged model",
    "snapshot create",
    "pipeline",
)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_power_cut_crash_state_recovers_to_exactly_old_or_exactly_new(
    story: Story, name: str, in_process: None
) -> None:
    tally = Tally()
    explore(story, name, STATES_PER_COMMAND, SEED, tally)
    print(f"{name}: {story.commands[name].trace.summary}; {tally.explored[name]} crash states")
    EXPLORED[name] = tally.explored[name]
    assert tally.explored[name] >= min(STATES_PER_COMMAND, 40), tally.explored
    assert not tally.failures, f"{len(tally.failures)} crash state(s) (seed {SEED}):\n" + "\n".join(
        tally.failures[:20]
    )


def test_a_repair_cut_short_leaves_no_temporary_copy_after_the_next_recover(
    story: Story, in_process: None
) -> None:
    """Found by `make fuzz`: a power cut while recover copied a model back left its temporary copy behind."""
    command = story.commands["recover of a damaged model"]
    bench = Workbench(story.root, command.before)
    bench.reset()
    models = story.root / "models"
    leftovers = [
        models / ".model.skops.restore.mlvs-tmp",
        models / "..model.skops.restore.mlvs-tmp.4242.mlvs-tmp",
    ]
    for leftover in leftovers:
        leftover.write_bytes(b"half a copy")
    assert next_recover(story.root) == Recovered(None)
    assert [p.name for p in leftovers if p.exists()] == []
    assert State.of(story.root) == command.new
    bench.reset()


def test_the_suite_explored_at_least_two_hundred_distinct_crash_states() -> None:
    """Counted from what the explorations above found, not from the setting that asked for them."""
    if len(EXPLORED) < len(COMMANDS):
        pytest.skip("counts the explorations of every command: run the whole module")
    assert sum(EXPLORED.values()) >= 200, EXPLORED
