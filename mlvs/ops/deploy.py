"""`mlvs deploy`: gate a candidate version against the champion, snapshot, then move `champion`.

Under the state lock:
1. find the candidate (the version given, else the `challenger`) and the champion;
2. load both models from the files mlvs saved for them, hash first
   (`mlvs.stages.versions`), and score both on the test split;
3. the promotion gate (`mlvs.ml.gate`, the same one the pipeline uses) decides;
4. refused: nothing moves and no snapshot is taken (there is nothing to undo); the
   decision is logged as an MLflow run and written under `reports/deploys/`;
5. passed (or `force`d past a refusal): the snapshot `pre-deploy-v<N>-<UTC time>` is
   taken through the snapshot operation, `champion` moves (and `challenger`, if it
   pointed at the candidate, is removed), the move is recorded in the alias history
   with that snapshot and the gate's reason, and the alias is read back. The move is
   a compare-and-set on the aliases the gate saw: if another clone moved one since
   (`AliasRaceError`), nothing moves and the deploy is refused, naming that move
   (exit 1; the snapshot stays, a state like any other).
`mlvs rollback pre-deploy-...` undoes a deployment. `dry_run` decides and changes
nothing: no lock, no snapshot, no run, no report.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_text
from mlvs.backends.git.refs import list_snapshot_refs
from mlvs.backends.mlflow import tracking
from mlvs.backends.mlflow.history import MoveReason
from mlvs.backends.mlflow.registry import read_registry, set_aliases
from mlvs.backends.mlflow.tracking import CHALLENGER, CHAMPION
from mlvs.errors import (
    AliasRaceError,
    BadInputError,
    ExternalToolError,
    IntegrityError,
    UnhealthyStateError,
)
from mlvs.logs import get_logger
from mlvs.ml import data as datamod
from mlvs.ml.decision import contact_values, fixed_or_default_threshold
from mlvs.ml.gate import (
    GateDecision,
    Margins,
    Scored,
    campaign_customer_values,
    compare,
    rows_sha256,
)
from mlvs.ml.params import load_stage
from mlvs.ops.snapshot.create import create_snapshot
from mlvs.paths import ProjectPaths
from mlvs.stages.versions import load_version_model
from mlvs.state.interrupted import recover_interrupted
from mlvs.state.lock import state_lock
from mlvs.testing.faults import fault_point

log = get_logger("deploy")

_VERSION = re.compile(r"^[1-9][0-9]{0,11}$")
SNAPSHOT_PREFIX = "pre-deploy-"


@dataclass
class DeployResult:
    """What `deploy` decided and did."""

    model_name: str
    candidate: str
    champion_before: str
    decision: GateDecision
    dry_run: bool
    forced: bool = False  # deployed past the gate's refusal
    deployed: bool = False
    snapshot: str | None = None
    run_id: str | None = None
    report: str | None = None  # relative to the project
    moves: list[dict[str, str | None]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether the gate let the candidate through."""
        return self.decision.promote

    @property
    def exit_code(self) -> int:
        """0 deployed (or would be, dry run), 1 refused."""
        return 0 if self.deployed or (self.dry_run and (self.passed or self.forced)) else 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the report, and `mlvs deploy --json`)."""
        return {
            "model_name": self.model_name,
            "candidate": self.candidate,
            "champion_before": self.champion_before,
            "passed": self.passed,
            "forced": self.forced,
            "deployed": self.deployed,
            "dry_run": self.dry_run,
            "snapshot": self.snapshot,
            "run_id": self.run_id,
            "report": self.report,
            "moves": self.moves,
            "decision": self.decision.to_dict(),
            "seconds": round(self.seconds, 3),
        }


def _aliases(paths: ProjectPaths, name: str) -> dict[str, str]:
    state = read_registry(paths, name, None)
    if state.error:
        raise ExternalToolError(
            f"the MLflow registry cannot be read ({state.error}); start the tracking server "
            "(or run `mlvs recover` for the embedded mlflow.db), then deploy again"
        )
    return state.alias_versions()


def _choose(aliases: dict[str, str], name: str, version: str | None) -> tuple[str, str]:
    """(candidate, champion), refusing what cannot be deployed."""
    champion = aliases.get(CHAMPION)
    if champion is None:
        raise BadInputError(
            f"registered model {name!r} has no champion to compare with; run `mlvs pipeline` "
            "(its first version becomes the champion)"
        )
    candidate = version or aliases.get(CHALLENGER)
    if candidate is None:
        raise BadInputError(
            f"registered model {name!r} has no challenger; name the version to deploy: `mlvs deploy VERSION`"
        )
    if candidate == champion:
        raise BadInputError(f"version {candidate} is the champion already; nothing to deploy")
    return candidate, champion


def _snapshot_name(paths: ProjectPaths, candidate: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    taken = {n.casefold() for n, _ in list_snapshot_refs(paths.root)}
    base = f"{SNAPSHOT_PREFIX}v{candidate}-{stamp}"
    for counter in range(1, 1000):
        name = base if counter == 1 else f"{base}-{counter}"
        if name.casefold() not in taken:
            return name
    raise IntegrityError(f"no free snapshot name for {base}; delete old pre-deploy snapshots")


def _decide(paths: ProjectPaths, params: Any, candidate: str, champion: str) -> GateDecision:
    """Both versions scored on the test split, compared by the gate."""
    test = datamod.read_customers(paths.test_data)
    datamod.check_schema(test)
    X_test, y_test = datamod.features_and_target(test)
    data_sha256 = rows_sha256(X_test, y_test)
    name = params.registry.model_name
    scored = []
    for version in (candidate, champion):
        loaded = load_version_model(
            paths, name, version, fixed_or_default_threshold(params.decision_threshold)
        )
        probabilities = loaded.model.predict_proba(X_test)[:, 1]
        scored.append(Scored(f"version {version}", probabilities, data_sha256, loaded.threshold))
    return compare(
        y_test,
        scored[0],
        scored[1],
        campaign_customer_values(y_test, contact_values(params.business, test["monthly_charges"])),
        Margins.from_params(params.registry),
        params.seed,
    )


def _record(paths: ProjectPaths, result: DeployResult) -> None:
    """Write the decision as a report under `reports/deploys/` and log it as an MLflow run."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = paths.reports / "deploys"
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"{stamp}-v{result.candidate}.json"
    result.report = report.relative_to(paths.root).as_posix()
    atomic_write_text(report, json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    try:
        result.run_id = tracking.log_operation_run(
            paths,
            f"deploy v{result.candidate}",
            tracking.DEPLOY,
            params={
                "candidate": result.candidate,
                "champion": result.champion_before,
                "method": result.decision.method,
                "resamples": result.decision.resamples,
                "confidence": result.decision.confidence,
                "seed": result.decision.seed,
                "test_rows": result.decision.rows,
            },
            metrics={**result.decision.figures(), "deployed": float(result.deployed)},
            details={
                "candidate": result.candidate,
                "champion": result.champion_before,
                "decision": "passed" if result.passed else "refused",
                "forced": result.forced,
                "snapshot": result.snapshot or "",
            },
            files=[(report, "deploy")],
        )
    except Exception as error:  # the alias has moved and is recorded; a lost run must not hide that
        log.warning("the deploy decision could not be logged to MLflow: %s", error)
        return
    # The report names its run too.
    atomic_write_text(report, json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")


def deploy(
    paths: ProjectPaths, version: str | None = None, dry_run: bool = False, force: bool = False
) -> DeployResult:
    """Gate `version` (default: the challenger) against the champion; move `champion` if it passes.

    `force` moves it past a refusal (recorded as forced: `mlvs verify` names such a
    champion). Raises BadInputError for an unknown version or a registry without a
    champion or candidate.
    """
    started = time.perf_counter()
    if version is not None and not _VERSION.match(version):
        raise BadInputError(
            f"{version[:40]!r} is not a version number; give one like `mlvs deploy 3`"
        )
    params = load_stage("train", paths.root)
    name = params.registry.model_name
    if dry_run:
        candidate, champion = _choose(_aliases(paths, name), name, version)
        decision = _decide(paths, params, candidate, champion)
        forced = force and not decision.promote
        return DeployResult(
            name,
            candidate,
            champion,
            decision,
            True,
            forced,
            False,
            seconds=time.perf_counter() - started,
        )
    with state_lock(paths):
        recover_interrupted(paths)
        aliases = _aliases(paths, name)
        candidate, champion = _choose(aliases, name, version)
        decision = _decide(paths, params, candidate, champion)
        result = DeployResult(name, candidate, champion, decision, False)
        fault_point("deploy:gated")
        if not decision.promote and not force:
            result.seconds = time.perf_counter() - started
            _record(paths, result)
            return result
        result.forced = not decision.promote
        snapshot = _snapshot_name(paths, candidate)
        try:
            create_snapshot(
                paths,
                snapshot,
                f"before deploying version {candidate} of {name} (champion was version {champion})",
            )
        except UnhealthyStateError as error:
            # No snapshot, no deployment: a deploy must always be undoable.
            raise UnhealthyStateError(
                f"version {candidate} was not deployed: {str(error).split(': ', 1)[-1].split('; fix it')[0]}; "
                "fix it with `mlvs recover` (damage) or `mlvs pipeline` (a stale pipeline), then deploy again"
            ) from None
        result.snapshot = snapshot
        wanted = dict(aliases)
        wanted[CHAMPION] = candidate
        if wanted.get(CHALLENGER) == candidate:
            del wanted[CHALLENGER]  # the challenger has become the champion
        reason = (
            f"forced past the gate's refusal: {decision.reason}"
            if result.forced
            else decision.reason
        )
        try:
            moves = set_aliases(
                paths,
                name,
                wanted,
                MoveReason("deploy", reason, snapshot, forced=result.forced),
                expected=aliases,
            )
        except AliasRaceError as error:
            # The gate compared with a champion that is no longer the champion: its decision is void.
            raise AliasRaceError(
                f"version {candidate} was not deployed: {str(error).removesuffix('; nothing was moved')}, "
                f"and the gate had compared it with version {champion}; run `mlvs deploy {candidate}` "
                "again to gate it against the champion of now"
            ) from None
        result.moves = [{"alias": a, "from": f, "to": t} for a, f, t in moves]
        if _aliases(paths, name).get(CHAMPION) != candidate:
            raise IntegrityError(
                f"{name}@{CHAMPION} does not read back as version {candidate} after the deploy; "
                f"run `mlvs verify`, and `mlvs rollback {snapshot}` to undo it"
            )
        result.deployed = True
        result.seconds = time.perf_counter() - started
        _record(paths, result)
    return result


def report_files(paths: ProjectPaths) -> list[Path]:
    """The deploy reports, oldest first."""
    folder = paths.reports / "deploys"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
