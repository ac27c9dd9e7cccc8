"""Running the whole pipeline through DVC; what it ran, skipped and measured."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from mlvs._io import atomic_write_bytes, sync_file_system
from mlvs.backends.dvc.command import dvc
from mlvs.backends.dvc.outputs import dvc_files, dvc_outputs
from mlvs.backends.kernel import WARM_STAGE_MODULES, template_directory
from mlvs.backends.mlflow.backups import backup_mlflow_db
from mlvs.backends.mlflow.store import require_server, server_problem, unreachable_message
from mlvs.backends.uris import redact_credentials
from mlvs.errors import (
    BadInputError,
    ExternalToolError,
    MlvsError,
    NotebookFailedError,
    storage_failure,
)
from mlvs.logs import get_logger
from mlvs.ml.params import STAGES, load_stage
from mlvs.ops.repair import RecoveryOutcome, evidence_dir, restore_recorded_files, undo_pipeline
from mlvs.ops.run import temporary_environment
from mlvs.paths import STAGE_NOTEBOOKS, ProjectPaths
from mlvs.sidecar import WarmSideProcesses
from mlvs.state.interrupted import (
    recover_interrupted,
)
from mlvs.state.journal import Journal
from mlvs.state.lock import locked
from mlvs.state.room import reserve_room
from mlvs.testing.faults import armed

log = get_logger("pipeline")


def read_metrics(paths: ProjectPaths) -> dict[str, float]:
    """The metrics of the last successful training run (`reports/metrics.json`)."""
    try:
        return json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass
class StageOutcome:
    """How one stage run ended, and where its executed notebook is."""

    stage: str
    ok: bool
    report: str | None
    restored: list[str]


@dataclass(frozen=True)
class PipelineStage:
    """One stage of a pipeline run: run again, or skipped because nothing it depends on changed."""

    stage: str
    ran: bool


@dataclass
class PipelineResult:
    """What `mlvs pipeline` did: each stage in DVC's order, how long it took, the metrics it left."""

    stages: list[PipelineStage]
    seconds: float
    metrics: dict[str, float]
    reports: list[str]  # the executed notebooks' HTML pages, relative to the project

    @property
    def ran(self) -> list[str]:
        return [s.stage for s in self.stages if s.ran]

    @property
    def skipped(self) -> list[str]:
        return [s.stage for s in self.stages if not s.ran]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "metrics": self.metrics,
            "reports": self.reports,
        }


def _stages(output: str) -> list[PipelineStage]:
    """The stages `dvc repro` reported, in its order: run, or unchanged and skipped."""
    return [
        PipelineStage(found["ran"] or found["skipped"], bool(found["ran"]))
        for found in re.finditer(
            r"Running stage '(?P<ran>[^']+)'|Stage '(?P<skipped>[^']+)' didn't change, skipping",
            output,
        )
    ]


# `dvc repro` ends a successful run with this advice, unconditionally (dvc/commands/repro.py:
# no setting turns it off); mlvs pushes by itself right afterwards, so it is not shown.
DVC_PUSH_HINT = "Use `dvc push` to send your updates to remote storage."
# What `dvc repro` prints instead when no stage ran or was checked out from its run cache.
DVC_NOTHING_DONE = "Data and pipelines are up to date."
# DVC's lines that the stage progress says better: a stage's start, its command, the lock update.
_STAGE_START = re.compile(r"Running stage '(?P<stage>[^']+)':")
_STAGE_SKIPPED = re.compile(r"Stage '(?P<stage>[^']+)' didn't change, skipping")
_STAGE_RECORDED = re.compile(r"(Generating|Updating) lock file 'dvc.lock'")


CHILD_ERROR = "mlvs: error: "


class StageProgress:
    """What `mlvs pipeline` shows of `dvc repro`: one line when a stage starts, one when it ends.

    Every other line DVC or a stage prints (its errors above all) goes through as it is.
    """

    def __init__(self) -> None:
        self.stage: str | None = None
        self.started = 0.0
        self.command_next = False

    def line(self, text: str) -> str | None:
        """The line to show for one line of DVC's output, or None to leave it out."""
        stripped = text.strip()
        if stripped == DVC_PUSH_HINT:
            return None
        if found := _STAGE_START.match(stripped):
            self.finish(ok=True)
            self.stage, self.started, self.command_next = found["stage"], time.perf_counter(), True
            log.info("stage %s: started", self.stage)
            return None
        if self.command_next and stripped.startswith("> "):
            self.command_next = False
            log.debug("stage %s runs: %s", self.stage, stripped[2:])
            return None
        if found := _STAGE_SKIPPED.match(stripped):
            log.info("stage %s: unchanged, skipped", found["stage"])
            return None
        if _STAGE_RECORDED.match(stripped):
            self.finish(ok=True)
            return None
        if self.stage is not None and stripped.startswith(CHILD_ERROR):
            # The stage's own `mlvs run` failed: its reason is shown as the stage's, so that the
            # pipeline's own error stays the one `mlvs: error:` line.
            log.warning("stage %s: %s", self.stage, stripped.removeprefix(CHILD_ERROR))
            return None
        return text

    def finish(self, ok: bool) -> None:
        """The end of the stage that is running, if one is."""
        if self.stage is not None:
            took = time.perf_counter() - self.started
            log.info("stage %s: %s %.1f s", self.stage, "done in" if ok else "failed after", took)
        self.stage = None


def restore_last_good_outputs(paths: ProjectPaths) -> list[str]:
    """After a failed stage: put back the outputs `dvc.lock` records (DVC deleted or half-wrote them)."""

    outcome = RecoveryOutcome()
    restore_recorded_files(paths, evidence_dir(paths), outcome)
    return [r.artifact for r in outcome.repairs]


@locked
def run_stage(
    paths: ProjectPaths, stage: str, fault: str | None = None, restore_on_failure: bool = True
) -> StageOutcome:
    """Re-run one stage (forced); with `fault`, a drill's failure is armed at its point `<stage>:<fault>`."""

    with temporary_environment(armed(f"{stage}:{fault}") if fault else {}):
        result = dvc(paths, "repro", "--force", "--single-item", stage, check=False)
    notebook = STAGE_NOTEBOOKS.get(stage, stage)
    report = paths.reports / f"{notebook}.ipynb"
    restored: list[str] = []
    if result.returncode != 0 and restore_on_failure:
        restored = restore_last_good_outputs(paths)
    return StageOutcome(
        stage, result.returncode == 0, str(report) if report.exists() else None, restored
    )


@locked
def run_pipeline(paths: ProjectPaths, force: bool = False) -> PipelineResult:
    """`dvc repro` the pipeline, push its data to the DVC remote; what ran, what was skipped.

    The stages' own `mlvs run` share the lock this holds (`mlvs.state.lock`).
    """
    # The pipeline changes data, models and the registry: never beside a rollback or snapshot.
    recover_interrupted(paths)
    if not (paths.root / ".dvc").is_dir():
        raise BadInputError(f"{paths.root} is not a DVC repository; run `dvc init` there first")

    # A broken params file is bad input: refuse it in one line before DVC touches anything.
    for stage in STAGES:
        load_stage(stage, paths.root)

    # Every stage logs to MLflow: a tracking server that does not answer is refused up front.
    require_server(paths, "run the pipeline again")
    started = time.perf_counter()
    args = ["repro", "--force"] if force else ["repro"]
    # On a full disk a failed stage must still be undone: the room for that is taken first.
    room = reserve_room(paths)
    journal, kept = _begin_journal(paths)
    progress = StageProgress()
    try:
        # Each stage's `mlvs run` gets its side process forked warm from one process here.
        # Forced, every stage runs: the imports start now, beside DVC's own start.
        with (
            template_directory() as warm_dir,
            WarmSideProcesses(warm_dir, WARM_STAGE_MODULES, eager=force) as warm,
        ):
            result = dvc(
                paths,
                *args,
                check=False,
                echo=True,
                on_line=progress.line,
                extra_env=warm.environment(),
            )
    except BaseException:
        progress.finish(ok=False)
        room.release()
        undo_pipeline(paths, kept)
        journal.clear()
        raise
    room.release()
    progress.finish(ok=result.returncode == 0)
    if result.returncode != 0:
        failed = re.findall(r"failed to reproduce '([^']+)'", result.stdout)
        restored = undo_pipeline(paths, kept)
        journal.clear()
        log.info("restored the last good outputs: %s", ", ".join(restored) or "none needed")
        reason = _failure_reason(result.stdout)
        problem = server_problem(paths)
        if problem is not None:
            raise ExternalToolError(
                f"the pipeline failed in stage {failed[0] if failed else '?'} and the last good outputs are back in "
                f"place: "
                + unreachable_message(
                    paths, problem, "run `mlvs recover` to close the interrupted run"
                )
            )
        storage = _storage_failure_in(result.stdout)
        if storage:
            raise MlvsError(
                f"the pipeline could not write its outputs: {storage} ({reason}); the last good outputs are back "
                "in place; free disk space or make the project writable, then run it again"
            )
        if not failed:
            raise ExternalToolError(
                f"`dvc {' '.join(args)}` failed before any stage ran ({reason}); "
                "the last good outputs are back in place"
            )
        raise NotebookFailedError(
            f"the pipeline failed in stage {failed[0]}; the last good outputs are back in place "
            f"and the failed notebook is kept in {paths.reports}"
        )
    stages = _stages(result.stdout)
    if DVC_NOTHING_DONE not in result.stdout:
        # DVC wrote dvc.lock, the outputs and their cache objects without fsync: flushed first, so
        # that from "reproduced" on a power cut keeps the new outputs, complete and in dvc.lock.
        sync_file_system(paths.root)
    journal.update("reproduced")

    backup_mlflow_db(paths)
    fingerprint = _push_fingerprint(paths)
    if DVC_NOTHING_DONE in result.stdout and _pushed_already(paths, fingerprint):
        log.debug("dvc push skipped: the last push sent these outputs to this remote")
    else:
        _push(paths, fingerprint)
    outcome = PipelineResult(
        stages=stages,
        seconds=time.perf_counter() - started,
        metrics=read_metrics(paths),
        reports=sorted(str(p.relative_to(paths.root)) for p in paths.reports.glob("*.html")),
    )
    journal.clear()
    return outcome


# What the last successful push of a pipeline sent, and where: a pipeline with no stage to run
# does not push again what that push sent. `dvc push` and `mlvs snapshot create` always push.
LAST_PUSH = "last-push.json"
_LAST_PUSH_MAX_BYTES = 1024


def _push_fingerprint(paths: ProjectPaths) -> str:
    """A hash of what a push sends and where: `dvc.lock`, the `.dvc` files, the remote's configuration."""
    digest = hashlib.sha256()
    for relative in ("dvc.lock", ".dvc/config", ".dvc/config.local", *dvc_files(paths.root)):
        digest.update(relative.encode("utf-8") + b"\0")
        try:
            digest.update(hashlib.sha256((paths.root / relative).read_bytes()).digest())
        except FileNotFoundError:
            digest.update(b"absent\0")
    return digest.hexdigest()


def _pushed_already(paths: ProjectPaths, fingerprint: str) -> bool:
    """Whether the last successful push recorded `fingerprint`; anything unreadable says no."""
    marker = paths.state / LAST_PUSH
    try:
        if marker.stat().st_size > _LAST_PUSH_MAX_BYTES:
            return False
        recorded = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("fingerprint") == fingerprint


def _push(paths: ProjectPaths, fingerprint: str) -> None:
    """`dvc push`; on success record what it sent, on failure warn (the data is safe in the cache)."""
    marker = paths.state / LAST_PUSH
    # Forgotten first: a push cut short must never leave an older record that matches.
    marker.unlink(missing_ok=True)
    pushed = dvc(paths, "push", check=False)
    if pushed.returncode == 0:
        try:
            atomic_write_bytes(marker, json.dumps({"fingerprint": fingerprint}).encode("utf-8"))
        except OSError as exc:  # without the record, the next pipeline pushes again: no harm
            log.debug("could not record the push (%s)", exc)
        return
    # The run itself succeeded and its outputs are in the DVC cache: a remote that is down
    # costs nothing but the push, which the next pipeline, snapshot or `dvc push` repeats.
    errors = [line for line in pushed.stderr.splitlines() if line.startswith("ERROR")]
    log.warning(
        "could not push the pipeline's data to the DVC remote (%s); it is safe in the DVC cache: "
        "run `dvc push` or `mlvs snapshot create` once the remote is reachable",
        redact_credentials(errors[-1] if errors else pushed.stderr.strip()[-200:]),
    )


def _begin_journal(paths: ProjectPaths) -> tuple[Journal, dict[str, str | None]]:
    """Journal the pipeline with the bytes DVC's cache does not keep: `dvc.lock` and git-kept outputs (metrics).

    Call under the state lock. A crash before the stages are recorded is then undone
    by the next command: these files put back, the outputs restored from the cache.
    """

    kept: dict[str, str | None] = {}
    for relative in sorted({"dvc.lock", *(o.path for o in dvc_outputs(paths) if not o.cache)}):
        try:
            kept[relative] = (paths.root / relative).read_text(encoding="utf-8")
        except FileNotFoundError:
            kept[relative] = None
    journal = Journal(paths)
    journal.begin("pipeline", {"kept": kept})
    return journal, kept


def _error_lines(output: str) -> list[str]:
    """The error lines DVC and the stages' `mlvs run` printed, without their prefixes."""
    prefixes = ("ERROR:", CHILD_ERROR.rstrip())
    return [
        line.strip().removeprefix(prefixes[1]).removeprefix(prefixes[0]).strip()
        for line in output.splitlines()
        if line.strip().startswith(prefixes)
    ]


def _failure_reason(output: str) -> str:
    """The last error line DVC or a stage's `mlvs run` printed."""
    errors = _error_lines(output)
    return errors[-1] if errors else "no error message"


def _storage_failure_in(output: str) -> str | None:
    """The full disk or unwritable place behind an error line, the last one first (DVC's last
    line may only say that a stage failed; the stage's own line says why)."""
    for line in reversed(_error_lines(output)):
        if found := storage_failure(Exception(line)):
            return found
    return None
