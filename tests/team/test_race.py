"""A team racing on one server: three clones promote, deploy, snapshot and roll back at once.

Three copies of the trained workspace (alice, bob, carol) share one `mlflow server` on
PostgreSQL and one DVC remote (a local directory), and register one model of their
own (`churn-race`), with a lenient gate (a 50 % bootstrap interval) so that a better
model is promoted. Each clone runs its `mlvs` commands in a row, the clones at the same
time (six commands), every command recorded with its start, end, exit status and output:

- alice: pipeline (a strong forest), then deploy;
- carol: pipeline (a weak forest), snapshot, then rollback to it;
- bob, from the moment the two promotions are let go: deploy (racing alice's).

alice's and carol's promotions are held between their gate decision and their alias
move (`train:gated`) until both have decided, then let go together: they decided on
the same registry, so one of them must lose the compare-and-set and take its gate
decision again. Afterwards the test reads the server itself: the alias history
replayed move by move, every registered version, the lease, the snapshots and the
remote, and runs `mlvs verify` in every clone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from _history_checks import accepted_champions, history_findings, read_moves
from conftest import BIN, clean_env, copy_workspace, git

pytestmark = pytest.mark.slow

MODEL = "churn-race"
LEASE = f"{MODEL}.mlvs-alias-lease"
HELD_AT = "train:gated"
FORESTS = {  # each clone's model: (trees, depth)
    "alice": (40, 8),
    "bob": (15, 5),  # bob runs no pipeline: his model stays the trained template's
    "carol": (4, 3),
}
HELD = ("alice", "carol")
LOST = "changed after this command read them"
# Exit statuses each command may end with in a race; anything but 0 must say why in one line.
ALLOWED = {"pipeline": {0}, "snapshot": {0}, "rollback": {0}, "deploy": {0, 1, 2}}


def team_env(root: Path, uri: str) -> dict[str, str]:
    """A clone's environment: the shared tracking server, and a client that gives up quickly."""
    return clean_env(root) | {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }


@dataclass
class Operation:
    """One `mlvs` command of one clone, as it ran."""

    clone: str
    args: tuple[str, ...]
    started: float = 0.0
    ended: float = 0.0
    code: int | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def command(self) -> str:
        return self.args[0]

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Race:
    """The shared places, the clones, and every operation of the race."""

    uri: str
    remote: Path
    clones: dict[str, Path]
    operations: list[Operation] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def mlvs(self, clone: str, *args: str, **extra: str) -> Operation:
        root = self.clones[clone]
        operation = Operation(clone, args, started=time.monotonic())
        done = subprocess.run(
            [str(BIN / "mlvs"), *args],
            cwd=root,
            env=team_env(root, self.uri) | extra,
            capture_output=True,
            text=True,
            timeout=600,
        )
        operation.ended, operation.code = time.monotonic(), done.returncode
        operation.stdout, operation.stderr = done.stdout, done.stderr
        return operation


def _prepare_clone(root: Path, remote: Path, trees: int, depth: int, retrains: bool) -> None:
    """Its own model name, the lenient gate, its forest, and the shared DVC remote, committed."""
    params = root / "params" / "train.yaml"
    data = yaml.safe_load(params.read_text())
    data["registry"].update(model_name=MODEL, bootstrap_confidence=0.5, bootstrap_resamples=200)
    forest = data["hyperparameters"]["random_forest"]
    forest.update(n_estimators=trees, max_depth=depth)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    subprocess.run(
        [str(BIN / "dvc"), "remote", "add", "-d", "-f", "shared", str(remote)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    if not retrains:
        # The model is the template's (same forest): only the registry's settings changed, which
        # do not change it, so the lock records the new params without a training.
        subprocess.run(
            [str(BIN / "dvc"), "commit", "-f", "-q", "train"],
            cwd=root,
            env=clean_env(root),
            check=True,
            capture_output=True,
        )
    git(root, "commit", "-qam", "race: own model, shared remote")


def _release_when_both_decided(release: Path, race: Race, deadline: float) -> None:
    """Let the held promotions go once two of them wait at the point (or give up at `deadline`)."""
    while time.monotonic() < deadline:
        if len(list(release.parent.glob(f"{release.name}.*.waiting"))) >= 2:
            break
        time.sleep(0.1)
    release.touch()
    race.released.set()


@pytest.fixture(scope="module")
def race(
    tracking_server: Any, _trained_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Race]:
    """The race, run once for the module: three clones, three commands each, all at once."""
    home = tmp_path_factory.mktemp("race")
    remote = home / "dvc-remote"
    clones = {name: copy_workspace(_trained_template, home / name) for name in FORESTS}
    for name, (trees, depth) in FORESTS.items():
        _prepare_clone(clones[name], remote, trees, depth, retrains=name in HELD)
    race = Race(tracking_server.uri, remote, clones)
    release = home / "release"
    held = {"MLVS_PAUSE": HELD_AT, "MLVS_PAUSE_RELEASE": str(release), "MLVS_PAUSE_SECONDS": "120"}
    plans: dict[str, list[tuple[tuple[str, ...], dict[str, str]]]] = {
        "alice": [(("pipeline",), held), (("deploy", "--json"), {})],
        "bob": [(("deploy", "--json"), {})],
        "carol": [
            (("pipeline",), held),
            (("snapshot", "create", "carol-1", "--json"), {}),
            (("rollback", "carol-1", "--json"), {}),
        ],
    }
    lock = threading.Lock()

    def play(clone: str) -> None:
        if clone not in HELD:
            race.released.wait(300)  # bob joins when the held promotions move
        for args, extra in plans[clone]:
            done = race.mlvs(clone, *args, **extra)
            with lock:
                race.operations.append(done)

    releaser = threading.Thread(
        target=_release_when_both_decided, args=(release, race, time.monotonic() + 240)
    )
    releaser.start()
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        list(pool.map(play, plans))
    releaser.join()
    print(f"\nthe race, {len(race.operations)} operations:\n{_summary(race)}")
    yield race


def _outcome(operation: Operation) -> str:
    """What an operation said: a deploy's decision, else the last line it wrote on stderr."""
    if operation.command == "deploy" and operation.stdout.strip():
        decided = operation.json()
        return f"deployed {decided['deployed']}: {decided['decision']['reason'][:200]}"
    lines = [line for line in operation.stderr.splitlines() if line.startswith("mlvs: error:")]
    return (lines or operation.stderr.strip().splitlines() or [""])[-1][:300]


def _summary(race: Race) -> str:
    start = min(o.started for o in race.operations)
    return "\n".join(
        f"{o.clone:6} {' '.join(o.args):36} {o.started - start:6.1f}-{o.ended - start:6.1f}s "
        f"exit {o.code}: {_outcome(o)}"
        for o in sorted(race.operations, key=lambda o: o.started)
    )


def _tags(race: Race) -> dict[str, str]:
    return dict(race.client().get_registered_model(MODEL).tags)


def test_every_operation_of_the_race_ends_as_allowed_each_refusal_in_one_line(race: Race) -> None:
    assert len(race.operations) == 6, _summary(race)
    for operation in race.operations:
        assert operation.code in ALLOWED[operation.command], (
            _summary(race) + operation.stderr[-3000:]
        )
        assert "Traceback" not in operation.stderr, operation.stderr[-3000:]
        if operation.code != 0 and not operation.stdout.strip():  # not a deploy's refusal in JSON
            errors = [e for e in operation.stderr.splitlines() if e.startswith("mlvs: error:")]
            assert len(errors) == 1, _summary(race) + operation.stderr[-3000:]


def test_the_promotions_that_decided_on_the_same_registry_do_not_both_move(race: Race) -> None:
    # Each lost race is told in its executed notebook, and its gate decided again.
    lost = {
        clone: (race.clones[clone] / "reports" / "02_train.ipynb").read_text().count(LOST)
        for clone in HELD
    }
    print(f"lost races, by clone: {lost}")
    assert sum(lost.values()) >= 1, _summary(race)


def test_no_alias_move_is_lost_or_overwritten(race: Race) -> None:
    moves = read_moves(_tags(race))
    assert moves, _summary(race)
    assert history_findings(moves) == [], _summary(race)
    # The aliases on the server are where the last recorded moves left them: nothing moved unrecorded.
    replayed: dict[str, str | None] = {}
    for move in moves:
        replayed[move.alias] = move.to_version
    live = {a: str(v) for a, v in race.client().get_registered_model(MODEL).aliases.items()}
    assert live == {a: v for a, v in replayed.items() if v is not None}
    # Each pipeline's new version got its gate decision recorded: none of them was lost.
    versions = {str(v.version) for v in race.client().search_model_versions(f"name = '{MODEL}'")}
    decided = {m.to_version for m in moves if m.command == "pipeline"}
    assert decided == versions and len(versions) == len(HELD), _summary(race)
    # Nobody holds the lease any more.
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as absent:
        race.client().get_registered_model(LEASE)
    assert absent.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_the_champion_after_the_race_is_gate_accepted_and_no_worse_than_any_accepted_after_it(
    race: Race,
) -> None:
    client = race.client()
    moves = read_moves(_tags(race))
    champion = str(client.get_registered_model(MODEL).aliases["champion"])
    assert champion in accepted_champions(moves), _summary(race)

    def auc(version: str) -> float:
        run_id = client.get_model_version(MODEL, version).run_id
        return float(client.get_run(run_id).data.metrics["test_roc_auc"])

    # Since the last move that was not a gate's (a rollback puts back an earlier champion), each
    # promotion beat the champion it replaced; so the last one is the best of them all.
    champion_moves = [m for m in moves if m.alias == "champion"]
    resets = [i for i, m in enumerate(champion_moves) if m.command not in ("pipeline", "deploy")]
    since = champion_moves[resets[-1] + 1 :] if resets else champion_moves
    accepted = accepted_champions(since)
    if accepted:
        assert champion == accepted[-1]
        assert auc(champion) >= max(auc(v) for v in accepted) - 1e-9, _summary(race)


def test_no_version_is_left_half_registered(race: Race, tmp_path: Path) -> None:
    client = race.client()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == len(HELD), _summary(race)  # one per pipeline
    for version in versions:
        run = client.get_run(version.run_id)
        assert run.info.status == "FINISHED"
        assert {"model_sha256", "data_sha256"} <= set(run.data.tags)
        local = Path(client.download_artifacts(version.run_id, "models/model.skops", str(tmp_path)))
        assert hashlib.sha256(local.read_bytes()).hexdigest() == run.data.tags["model_sha256"]


def _snapshot_names(race: Race) -> dict[str, set[str]]:
    """Every snapshot the race took, by clone: named ones, each deploy's and each rollback's own."""
    names: dict[str, set[str]] = {clone: set() for clone in race.clones}
    for operation in race.operations:
        if operation.code != 0 and operation.command != "snapshot":
            continue
        if operation.command == "snapshot":
            names[operation.clone].add(operation.args[2])
        elif operation.command == "deploy" and operation.json().get("snapshot"):
            names[operation.clone].add(operation.json()["snapshot"])
        elif operation.command == "rollback":
            names[operation.clone].add(operation.json()["automatic_snapshot"])
    return names


def test_every_snapshot_is_complete_on_the_shared_remote_and_every_clone_is_healthy(
    race: Race,
) -> None:
    existing = {str(v.version) for v in race.client().search_model_versions(f"name = '{MODEL}'")}
    checks = [
        (clone, ("snapshot", "show", name, "--json"))
        for clone, names in _snapshot_names(race).items()
        for name in sorted(names)
    ] + [(clone, ("verify",)) for clone in race.clones]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(lambda check: race.mlvs(check[0], *check[1]), checks))
    assert sum(1 for o in done if o.command == "snapshot") >= 2  # carol-1 and its rollback's own
    for operation in done:
        assert operation.code == 0, (
            f"{operation.clone} {operation.args}: {operation.stdout[-2000:]}{operation.stderr[-2000:]}"
        )
        if operation.command != "snapshot":
            continue
        manifest = operation.json()
        assert manifest["files"], operation.args
        for path, entry in manifest["files"].items():
            stored = race.remote / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]
            assert stored.is_file(), f"{operation.args[2]}: {path} is not on the shared remote"
        aliases = {a: v["version"] for a, v in manifest["registry"]["aliases"].items()}
        assert set(aliases.values()) <= existing, operation.args
