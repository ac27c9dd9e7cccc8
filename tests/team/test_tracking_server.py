"""Team mode against a real `mlflow server` backed by PostgreSQL, over HTTP.

One team member (`alice`) trains twice and takes two snapshots; a second clone
(`bob`) shares only the tracking server, the DVC remote and the git remote. The
tests query the server themselves through `MlflowClient` and hash the files
themselves: runs, executed notebooks as artifacts, registered versions, aliases.
The servers and alice's trained workspace are built once for the module; tests
that damage a workspace work on their own copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, clean_env, git, make_workspace, tree_hashes

from team.conftest import free_port

pytestmark = pytest.mark.slow

MODEL = "churn-classifier"
EXPERIMENT = "mlvs"
SNAPSHOT_REFS = "refs/mlvs/snapshots/*:refs/mlvs/snapshots/*"
# What a snapshot restores byte for byte: the DVC-tracked data and model.
OUTPUTS = (
    "data/raw/customer_data.csv",
    "data/processed/train.csv",
    "data/processed/test.csv",
    "models/model.skops",
    "models/model_card.json",
    "models/golden_predictions.json",
)


def output_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of the data and model files, computed here (a missing file is None)."""
    return {
        rel: hashlib.sha256((root / rel).read_bytes()).hexdigest()
        if (root / rel).is_file()
        else None
        for rel in OUTPUTS
    }


def team_env(root: Path, uri: str) -> dict[str, str]:
    """A team member's environment: the shared tracking server, and a client that gives up quickly."""
    return clean_env(root) | {
        "MLFLOW_TRACKING_URI": uri,
        # MLflow retries a refused connection for minutes by default; one quick retry is plenty on loopback.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }


def run_mlvs(
    root: Path, uri: str, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env=team_env(root, uri),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


def no_traceback(stderr: str) -> None:
    """No traceback from mlvs or MLflow (the kernel's own zmq noise under load is not ours)."""
    assert not re.search(r'File "[^"]*/(mlvs|mlflow)/[^"]*", line', stderr), stderr[-4000:]


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def set_train_trees(root: Path, n_estimators: int) -> None:
    params = root / "params" / "train.yaml"
    data = yaml.safe_load(params.read_text())
    data["hyperparameters"]["random_forest"]["n_estimators"] = n_estimators
    params.write_text(yaml.safe_dump(data, sort_keys=False))


@dataclass
class Team:
    """The shared places, alice's workspace, and what the test recorded about each snapshot."""

    uri: str
    artifacts: Path
    origin: Path
    remote: Path
    alice: Path
    template: Path
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def copy_of_alice(self, dest: Path) -> Path:
        """A private copy of alice's workspace as it was after both snapshots (same server and remote)."""
        shutil.copytree(self.template, dest, symlinks=True)
        return dest


def current_aliases(client: Any) -> dict[str, str]:
    return {
        alias: str(version) for alias, version in client.get_registered_model(MODEL).aliases.items()
    }


def version_of_model_file(client: Any, root: Path) -> str:
    """The registered version whose run logged the model file in `root` (by the hash the test computes)."""
    sha = hashlib.sha256((root / "models" / "model.skops").read_bytes()).hexdigest()
    found = [
        v
        for v in client.search_model_versions(f"name = '{MODEL}'")
        if client.get_run(v.run_id).data.tags.get("model_sha256") == sha
    ]
    assert len(found) == 1, f"{len(found)} registered versions logged the model with sha256 {sha}"
    return str(found[0].version)


@pytest.fixture(scope="module")
def team(tracking_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """alice: pipeline, snapshot `first`, retrain (more trees, made champion), snapshot `second`, all pushed."""
    home = tmp_path_factory.mktemp("team")
    origin, remote = home / "origin.git", home / "dvc-remote"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    alice = make_workspace(home / "alice")
    env = team_env(alice, tracking_server.uri)
    # The README's team set-up: a shared default DVC remote (committed), a shared git remote.
    subprocess.run(
        [str(BIN / "dvc"), "remote", "add", "-d", "shared", str(remote)],
        cwd=alice,
        env=env,
        check=True,
        capture_output=True,
    )
    git(alice, "remote", "add", "origin", str(origin))
    team = Team(
        tracking_server.uri, tracking_server.artifacts, origin, remote, alice, home / "template"
    )
    client = team.client()

    ok(run_mlvs(alice, team.uri, "pipeline"))
    git(alice, "add", "-A")
    git(alice, "commit", "-qm", "trained, shared remote")
    ok(run_mlvs(alice, team.uri, "snapshot", "create", "first", "-m", "baseline"))
    team.hashes["first"], team.versions["first"] = (
        output_hashes(alice),
        version_of_model_file(client, alice),
    )
    team.aliases["first"] = current_aliases(client)

    set_train_trees(alice, 30)
    ok(run_mlvs(alice, team.uri, "pipeline"))
    git(alice, "add", "-A")
    git(alice, "commit", "-qm", "more trees")
    team.versions["second"] = version_of_model_file(client, alice)
    client.set_registered_model_alias(MODEL, "champion", team.versions["second"])
    ok(run_mlvs(alice, team.uri, "snapshot", "create", "second", "-m", "more trees"))
    team.hashes["second"], team.aliases["second"] = output_hashes(alice), current_aliases(client)

    # Sharing snapshots is a git push of their refs (the README's team set-up).
    git(alice, "push", "-q", "origin", "main", SNAPSHOT_REFS)
    shutil.copytree(alice, team.template, symlinks=True)
    yield team


def test_pipeline_logs_runs_notebooks_and_versions_on_the_server(team: Team) -> None:
    client = team.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    by_notebook: dict[str, list[Any]] = {}
    for run in runs:
        by_notebook.setdefault(run.data.tags.get("notebook"), []).append(run)
    assert len(by_notebook.get("01_prepare", [])) >= 1 and len(by_notebook.get("02_train", [])) >= 2

    for run in by_notebook["01_prepare"][:1] + by_notebook["02_train"][:2]:
        notebook = run.data.tags["notebook"]
        # Artifacts go through the server (proxied), never to a path on the client.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        listed = {a.path for a in client.list_artifacts(run.info.run_id, "notebook")}
        assert {f"notebook/{notebook}.ipynb", f"notebook/{notebook}.html"} <= listed
        stored = sorted(
            team.artifacts.rglob(f"{run.info.run_id}/artifacts/notebook/{notebook}.ipynb")
        )
        assert len(stored) == 1, "the executed notebook is not in the server's artifact destination"
        executed = json.loads(stored[0].read_text())
        code = [c for c in executed["cells"] if c["cell_type"] == "code"]
        assert code and all(c["execution_count"] is not None for c in code)
        if notebook == "02_train":  # the notebook printed its own run id: it is this run's report
            assert run.info.run_id in json.dumps(executed["cells"])

    # Each snapshot's model file (hashed here) maps to its own registered version and training run.
    assert team.versions["first"] != team.versions["second"]
    manifests = {
        m["name"]: m
        for m in as_json(ok(run_mlvs(team.alice, team.uri, "snapshot", "list", "--json")))
    }
    for name in ("first", "second"):
        shown = manifests[name]
        assert shown["registry"]["tracking_uri"] == team.uri
        assert shown["registry"]["model"]["version"] == team.versions[name]
        assert {a: v["version"] for a, v in shown["registry"]["aliases"].items()} == team.aliases[
            name
        ]
        version = client.get_model_version(MODEL, team.versions[name])
        assert version.run_id == shown["registry"]["model"]["run_id"]
        assert (
            client.get_run(version.run_id).data.tags["model_sha256"]
            == team.hashes[name]["models/model.skops"]
        )
    # Nothing of MLflow's is kept in the workspace: no embedded database, no local artifact store.
    for local_store in ("mlflow.db", "mlartifacts", "mlruns"):
        assert not (team.alice / local_store).exists(), local_store


def test_rollback_over_http_restores_files_and_aliases(team: Team) -> None:
    client = team.client()
    client.set_registered_model_alias(MODEL, "champion", team.versions["second"])
    # Exit 0 means every restored byte and alias was read back and verified; the test checks again itself.
    ok(run_mlvs(team.alice, team.uri, "rollback", "first", "--json"))
    assert output_hashes(team.alice) == team.hashes["first"]
    assert current_aliases(client) == team.aliases["first"]


def test_second_clone_checks_out_a_snapshot_and_its_rollback_is_seen_by_the_first(
    team: Team, tmp_path: Path
) -> None:
    client = team.client()
    for alias, version in team.aliases["first"].items():  # the registry as snapshot `first` left it
        client.set_registered_model_alias(MODEL, alias, version)
    # bob shares only the git remote, the DVC remote and the tracking server with alice.
    bob = tmp_path / "bob"
    subprocess.run(
        ["git", "clone", "-q", str(team.origin), str(bob)], check=True, capture_output=True
    )
    git(bob, "fetch", "-q", "origin", SNAPSHOT_REFS)
    assert not (
        bob / "models" / "model.skops"
    ).exists()  # a fresh clone: no data, no model, no DVC cache

    ok(run_mlvs(bob, team.uri, "rollback", "second", "--json"))
    assert output_hashes(bob) == team.hashes["second"]
    assert current_aliases(client) == team.aliases["second"]
    assert str(team.alice) not in (bob / ".dvc" / "config").read_text()

    # alice sees bob's rollback: her view of the registry (through mlvs) has champion where bob put it.
    diff = as_json(ok(run_mlvs(team.alice, team.uri, "snapshot", "diff", "first", "--json")))
    assert diff["registry"]["alias.champion"] == [
        team.aliases["first"]["champion"],
        team.aliases["second"]["champion"],
    ]


def test_a_drill_of_each_family_recovers_over_http(team: Team, tmp_path: Path) -> None:
    root = team.copy_of_alice(tmp_path / "ws")
    client = team.client()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    before = tree_hashes(root, skip=(".git/", ".mlvs/", ".dvc/", "reports/"))
    failed_before = {
        r.info.run_id for r in client.search_runs([experiment], "attributes.status = 'FAILED'")
    }

    # Each drill's steps in one go (the functions `mlvs drill`'s notebook calls), in one process.
    scenarios = [
        "data_deleted_file",
        "model_bit_flips",
        "pipeline_preprocessing_failure",
        "store_cache_corrupted",
    ]
    script = (
        "import json, sys; from mlvs.ops.drill.drill import run_drill; from mlvs.paths import project; "
        "print(json.dumps([run_drill(project(), n).to_dict() for n in sys.argv[1:]], default=str))"
    )
    drills = subprocess.run(
        [str(BIN / "python"), "-c", script, *scenarios],
        cwd=root,
        env=team_env(root, team.uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert drills.returncode == 0, drills.stderr[-4000:]
    records = {r["scenario"]: r for r in json.loads(drills.stdout.strip().splitlines()[-1])}
    assert sorted(records) == sorted(scenarios)
    assert {records[n]["family"] for n in scenarios} == {"data", "model", "pipeline", "store"}
    for record in records.values():
        assert record["detected"] and record["recovered"], record
        assert record["verification"]["byte_identical"], record["verification"]
    assert records["store_cache_corrupted"]["detected_by"] == "dvc_cache"
    # The stage the pipeline drill broke is a FAILED run on the server, its executed notebook attached.
    (failed,) = [
        r
        for r in client.search_runs([experiment], "attributes.status = 'FAILED'")
        if r.info.run_id not in failed_before
    ]
    assert failed.data.tags["notebook"] == "01_prepare"
    assert "notebook/01_prepare.ipynb" in {
        a.path for a in client.list_artifacts(failed.info.run_id, "notebook")
    }
    assert tree_hashes(root, skip=(".git/", ".mlvs/", ".dvc/", "reports/")) == before
    assert output_hashes(root) == team.hashes["second"]


def test_losing_the_server_mid_run_leaves_nothing_half_done(
    team: Team, flaky_link: Any, tmp_path: Path
) -> None:
    root = team.copy_of_alice(tmp_path / "ws")
    client = team.client()  # straight to the server, not through the link
    aliases = current_aliases(client)
    versions = {v.version for v in client.search_model_versions(f"name = '{MODEL}'")}
    tracked = ("dvc.lock", "reports/metrics.json", *OUTPUTS)
    local = {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in tracked}

    # The link goes down right after the server registered the new model version: mid-run.
    set_train_trees(root, 20)
    flaky_link.cut_after(b"/model-versions/create")
    failed = run_mlvs(root, flaky_link.uri, "pipeline")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert flaky_link.cut.is_set(), "the run never reached the registration"
    no_traceback(failed.stderr)
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("mlvs: error:") and flaky_link.uri in last and "mlvs recover" in last, (
        last
    )
    # Local outputs are the last good ones, byte for byte.
    assert {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in tracked} == local
    # The server did register a version for the run the link cut: exactly what must not stay.
    (half,) = [
        v for v in client.search_model_versions(f"name = '{MODEL}'") if v.version not in versions
    ]
    assert client.get_run(half.run_id).info.status == "RUNNING"

    # While the server is away: commands refuse up front, in one line, changing nothing.
    refused = run_mlvs(root, flaky_link.uri, "pipeline")
    assert refused.returncode == 1
    no_traceback(refused.stderr)
    assert "unreachable" in refused.stderr and flaky_link.uri in refused.stderr
    down = run_mlvs(root, flaky_link.uri, "verify", "--only", "mlflow_store,registry", "--json")
    assert down.returncode == 1
    no_traceback(down.stderr)
    assert [f["artifact"] for f in as_json(down)["findings"] if f["check"] == "mlflow_store"] == [
        flaky_link.uri
    ]

    # The server is back: recover's verify names the run left open and settles it. What stays is
    # the user's own edit: params newer than the last good outputs, a stale pipeline, no damage.
    flaky_link.restore()
    recovered = run_mlvs(root, flaky_link.uri, "recover", "--json")
    assert recovered.returncode == 1, recovered.stdout[-3000:] + recovered.stderr[-2000:]
    no_traceback(recovered.stderr)
    outcome = as_json(recovered)
    found = {(f["check"], f["artifact"]) for f in outcome["found"]}
    assert found == {("mlflow_store", f"run {half.run_id} (02_train)"), ("pipeline", "stage train")}
    assert [(f["check"], f["kind"]) for f in outcome["remaining"]] == [("pipeline", "stale")]

    run = client.get_run(half.run_id)
    assert run.info.status == "FAILED"
    assert "notebook/02_train.ipynb" in {
        a.path for a in client.list_artifacts(half.run_id, "notebook")
    }
    assert {v.version for v in client.search_model_versions(f"name = '{MODEL}'")} == versions
    assert current_aliases(client) == aliases
    assert {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in tracked} == local


def test_an_unreachable_server_is_refused_in_one_line_without_its_credentials(
    workspace: Path,
) -> None:
    port = free_port()  # nobody listens there
    uri = f"http://alice:s3cret@127.0.0.1:{port}/?token=t0ken"
    before = tree_hashes(workspace, skip=(".git/", ".mlvs/"))
    for command in (["pipeline"], ["run", "01_prepare"]):
        refused = run_mlvs(workspace, uri, *command)
        assert refused.returncode == 1, refused.stderr[-2000:]
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(
            f"mlvs: error: the MLflow tracking server at http://127.0.0.1:{port}/ is unreachable"
        ), line
        assert "MLFLOW_TRACKING_URI" in line
        assert (
            "s3cret" not in refused.stderr + refused.stdout
            and "t0ken" not in refused.stderr + refused.stdout
        )
    assert tree_hashes(workspace, skip=(".git/", ".mlvs/")) == before
