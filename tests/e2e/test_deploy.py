"""`mlvs deploy` and the alias history: gated, snapshotted, undone by rollback, every move recorded.

The trained workspace has version 1 (the pipeline's model, champion). Each test registers
version 2, a model trained on inverted labels: clearly worse on the same test split.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import git, mlvs, register_inverted_version, tree_hashes

MODEL = "churn-classifier"


@pytest.fixture
def deploy_ws(trained_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trained workspace with version 2 registered (inverted labels), no alias on it."""
    root = trained_workspace
    # Set, not deleted, so that the store an in-process call configures is undone after the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLVS_ROOT", str(root))
    version = register_inverted_version(root)
    assert version == "2"
    return root


def aliases(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "mlflow.db") as db:
        return {
            alias: str(version)
            for alias, version in db.execute(
                "SELECT alias, version FROM registered_model_aliases WHERE name = ?", (MODEL,)
            )
        }


def snapshots(root: Path) -> list[str]:
    refs = git(root, "for-each-ref", "--format=%(refname:strip=3)", "refs/mlvs/snapshots/")
    return refs.split()


def history(root: Path) -> list[dict]:
    """The alias history as `mlvs registry history --json` gives it (read in process: it is cheaper)."""
    from mlvs.ops.history import alias_history
    from mlvs.paths import ProjectPaths

    return alias_history(ProjectPaths(root)).to_dict()["moves"]


def force_worse_champion(root: Path) -> None:
    """Version 2 made champion past the gate, in process (the CLI's --force has its own test)."""
    from mlvs.ops.deploy import deploy
    from mlvs.paths import ProjectPaths

    assert deploy(ProjectPaths(root), "2", force=True).forced


def test_the_pipeline_promotion_is_the_first_move_of_the_history(trained_workspace: Path) -> None:
    result = mlvs(trained_workspace, "registry", "history", "--json")
    assert result.returncode == 0, result.stderr
    (move,) = json.loads(result.stdout)["moves"]
    assert move["command"] == "pipeline"
    assert (move["alias"], move["from_version"], move["to_version"]) == ("champion", None, "1")
    assert move["reason"] == "there is no champion yet"


def test_deploy_refuses_a_worse_candidate_and_moves_nothing(deploy_ws: Path) -> None:
    from mlvs.ops.deploy import deploy
    from mlvs.paths import ProjectPaths

    before = snapshots(deploy_ws)
    result = deploy(ProjectPaths(deploy_ws), "2")
    assert result.exit_code == 1 and not result.passed and not result.deployed
    assert result.snapshot is None
    assert aliases(deploy_ws) == {"champion": "1"}
    assert snapshots(deploy_ws) == before  # nothing moved, so nothing to undo
    report = json.loads((deploy_ws / str(result.report)).read_text())
    assert report["decision"]["comparisons"][0]["gain"] < 0
    assert report["run_id"] == result.run_id and result.run_id


def test_a_forced_deploy_says_so_and_verify_names_the_champion(deploy_ws: Path) -> None:
    from mlvs.ops.verify import verify
    from mlvs.paths import ProjectPaths

    result = mlvs(deploy_ws, "deploy", "2", "--force")
    assert result.returncode == 0, result.stderr
    assert "--force past the gate's refusal" in result.stderr
    assert aliases(deploy_ws)["champion"] == "2"
    (finding,) = verify(ProjectPaths(deploy_ws), ("registry",)).findings
    assert "version 2 was deployed with --force past the gate's refusal" in str(finding)
    last = history(deploy_ws)[-1]
    assert last["forced"] and last["command"] == "deploy" and last["to_version"] == "2"


def test_a_better_candidate_is_deployed_and_its_rollback_restores_the_old_champion(
    deploy_ws: Path,
) -> None:
    from mlvs.ops.deploy import deploy
    from mlvs.ops.rollback.restore import rollback
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(deploy_ws)
    force_worse_champion(deploy_ws)
    before = set(snapshots(deploy_ws))
    result = deploy(paths, "1")
    assert result.exit_code == 0 and result.deployed and not result.forced
    assert aliases(deploy_ws)["champion"] == "1"
    (snapshot,) = set(snapshots(deploy_ws)) - before
    assert snapshot == result.snapshot and snapshot.startswith("pre-deploy-v1-")

    assert rollback(paths, snapshot).verified
    assert aliases(deploy_ws)["champion"] == "2"

    moves = history(deploy_ws)  # the history lives in the registry: the rollback kept it
    deployed = [m for m in moves if m["command"] == "deploy" and m["to_version"] == "1"]
    assert deployed and deployed[0]["snapshot"] == snapshot and deployed[0]["from_version"] == "2"
    rolled = moves[-1]
    assert rolled["command"] == "rollback" and rolled["alias"] == "champion"
    assert (rolled["from_version"], rolled["to_version"]) == ("1", "2")
    assert rolled["snapshot"].startswith("auto-") and snapshot in rolled["reason"]


def test_a_dry_run_decides_and_changes_nothing(deploy_ws: Path) -> None:
    from mlvs.ops.deploy import deploy
    from mlvs.paths import ProjectPaths

    force_worse_champion(deploy_ws)
    before, refs, registry = tree_hashes(deploy_ws), snapshots(deploy_ws), aliases(deploy_ws)
    moves = history(deploy_ws)
    result = deploy(ProjectPaths(deploy_ws), "1", dry_run=True)
    assert result.passed and result.exit_code == 0 and not result.deployed
    assert result.snapshot is None and result.report is None and result.run_id is None
    assert aliases(deploy_ws) == registry and snapshots(deploy_ws) == refs
    assert history(deploy_ws) == moves
    after = tree_hashes(deploy_ws)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not {c for c in changed if not c.startswith((".mlvs/", "mlflow.db"))}


def test_a_bad_version_is_one_line_and_exit_2(trained_workspace: Path) -> None:
    result = mlvs(trained_workspace, "deploy", "v2")
    assert result.returncode == 2
    assert "'v2' is not a version number" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert aliases(trained_workspace) == {"champion": "1"}


@pytest.mark.parametrize(
    ("version", "said"),
    [
        ("99", "version 99 of registered model 'churn-classifier' does not exist"),
        ("1", "version 1 is the champion already"),
        (None, "has no challenger"),
    ],
)
def test_what_cannot_be_deployed_is_bad_input_and_changes_nothing(
    deploy_ws: Path, version: str | None, said: str
) -> None:
    from mlvs.errors import BadInputError
    from mlvs.ops.deploy import deploy
    from mlvs.paths import ProjectPaths

    refs = snapshots(deploy_ws)
    with pytest.raises(BadInputError, match=said) as refused:
        deploy(ProjectPaths(deploy_ws), version)
    assert refused.value.exit_code == 2
    assert aliases(deploy_ws) == {"champion": "1"} and snapshots(deploy_ws) == refs


def test_recover_puts_back_a_forced_champion_and_records_it(deploy_ws: Path) -> None:
    from mlvs.ops.recover import recover
    from mlvs.paths import ProjectPaths

    force_worse_champion(deploy_ws)
    outcome = recover(ProjectPaths(deploy_ws))
    assert outcome.healthy and outcome.rung == "snapshot_restore"
    assert aliases(deploy_ws)["champion"] == "1"
    last = history(deploy_ws)[-1]
    assert last["command"] == "recover" and (last["from_version"], last["to_version"]) == ("2", "1")
    assert last["snapshot"].startswith("pre-deploy-v2-")


def test_which_version_was_champion_at_a_time_has_one_answer(deploy_ws: Path) -> None:
    from mlvs.ops.history import champion_at
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(deploy_ws)
    before_forcing = datetime.now(UTC)
    force_worse_champion(deploy_ws)
    assert champion_at(paths, datetime(2000, 1, 1, tzinfo=UTC)) is None
    assert champion_at(paths, before_forcing) == "1"
    assert champion_at(paths, datetime.now(UTC)) == "2"


def test_a_malformed_history_tag_is_named_and_the_rest_still_shown(trained_workspace: Path) -> None:
    key = "mlvs.alias_move.00000000000000000001.0001.champion"
    with sqlite3.connect(trained_workspace / "mlflow.db") as db:
        db.execute(
            "INSERT INTO registered_model_tags (key, value, name) VALUES (?, ?, ?)",
            (key, '{"time": "yesterday", "alias": "champion"}', MODEL),
        )
    result = mlvs(trained_workspace, "registry", "history")
    assert result.returncode == 0, result.stderr
    assert key in result.stderr and "not an alias move" in result.stderr
    assert "Traceback" not in result.stderr
    assert "pipeline" in result.stdout  # the good record is still listed


def test_a_deploy_whose_aliases_moved_after_its_gate_is_refused_naming_the_move(
    deploy_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _history_checks import history_findings, read_moves

    from mlvs.backends.mlflow.history import MoveReason
    from mlvs.backends.mlflow.registry import model_tags, move_alias
    from mlvs.errors import AliasRaceError
    from mlvs.ops import deploy as deploying
    from mlvs.paths import ProjectPaths

    paths = ProjectPaths(deploy_ws)

    def another_clone_moves(name: str) -> None:  # between this deploy's gate and its move
        if name == "deploy:gated":
            reason = "version 2 does not beat version 1: roc_auc gain -0.5"
            move_alias(paths, MODEL, "challenger", "2", MoveReason("pipeline", reason))

    monkeypatch.setattr(deploying, "fault_point", another_clone_moves)
    with pytest.raises(AliasRaceError) as refused:
        deploying.deploy(paths, "2", force=True)

    message = str(refused.value)
    assert refused.value.exit_code == 1 and "\n" not in message
    assert message.startswith("version 2 was not deployed: ")
    assert "challenger moved from unset to version 2 by pipeline" in message
    assert "the gate had compared it with version 1" in message
    assert aliases(deploy_ws) == {"champion": "1", "challenger": "2"}  # the other move stands
    assert history_findings(read_moves(model_tags(paths, MODEL, "mlvs.alias_move."))) == []
