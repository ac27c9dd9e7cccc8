"""MLflow: runs, metrics, artifacts, the registry and the champion alias.

Everything honours `MLFLOW_TRACKING_URI` (and `MLFLOW_REGISTRY_URI`); without
them the embedded default is MLflow's own `sqlite:///mlflow.db` in the project
root, so a plain `mlflow ui` there shows the same runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlvs._io import atomic_write_text
from mlvs.backends.dvc.outputs import pipeline_written, stage_input_hashes
from mlvs.backends.git.run import git_answer
from mlvs.backends.mlflow.handoff import handed_run_id
from mlvs.backends.mlflow.history import MoveReason
from mlvs.backends.mlflow.registry import move_alias, read_registry
from mlvs.backends.mlflow.store import (
    is_tracking_server,
    registry_uri,
    server_problem,
    tracking_uri,
)
from mlvs.errors import ExternalToolError, MlvsError
from mlvs.logs import get_logger
from mlvs.mappings import flatten
from mlvs.ml.modelio import TRUSTED_TYPES
from mlvs.ml.params import load_stage
from mlvs.paths import PACKAGE_DIR, STAGE_NOTEBOOKS, ProjectPaths
from mlvs.settings import RUN_HANDOFF

EXPERIMENT = "mlvs"


CHAMPION = "champion"


CHALLENGER = "challenger"


def configure(paths: ProjectPaths) -> Any:
    """Point MLflow at the project's store and experiment; return the `mlflow` module."""
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    # No pooled SQLite connections: a connection held open across a restore of
    # mlflow.db from its backup would keep writing to the replaced file.
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    # mlflow imports tqdm.auto, which warns inside a kernel without ipywidgets; the
    # warning would land in every executed notebook and break nbval comparisons.
    warnings.filterwarnings("ignore", message="IProgress not found")
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow

    # MLflow announces every new database engine at INFO; with NullPool that is every
    # connection, which would clutter each executed notebook.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

    # Read before set_tracking_uri, which exports MLFLOW_TRACKING_URI itself.
    embedded = "MLFLOW_TRACKING_URI" not in os.environ
    mlflow.set_tracking_uri(tracking_uri(paths))
    if os.environ.get("MLFLOW_REGISTRY_URI"):
        mlflow.set_registry_uri(os.environ["MLFLOW_REGISTRY_URI"])
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    if mlflow.get_experiment_by_name(name) is None:
        # Artifacts next to the database, by absolute URI, so runs started from
        # notebooks/ (JupyterLab, nbval) land in the same place as CLI runs.
        location = (paths.root / "mlartifacts").as_uri() if embedded else None
        # An experiment created meanwhile by a concurrent run is just as good.
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)
    return mlflow


def git_tags(root: Path, generated: Sequence[str] = ()) -> dict[str, str]:
    """Git commit and dirty flag of the working tree, as MLflow tags.

    `generated`: paths (files or directories, relative to `root`) that the pipeline
    writes itself. Their changes say nothing about the user's code and parameters, so
    they do not make the tree dirty: `dvc repro` rewrites `dvc.lock` after each stage
    and deletes a stage's outputs before running it.
    """
    commit = git_answer(root, "rev-parse", "HEAD") or "none"
    excluded = [f":(exclude,literal){path}" for path in generated]
    # mlvs's git runs take every pathspec literally (GIT_LITERAL_PATHSPECS); the exclusions
    # need pathspec magic, and each one keeps its own path literal.
    changes = git_answer(
        root,
        "--no-literal-pathspecs",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        *excluded,
    )
    dirty = "true" if changes else "false"
    return {"mlflow.source.git.commit": commit, "git_commit": commit, "git_dirty": dirty}


def generated_paths(paths: ProjectPaths) -> list[str]:
    """What the pipeline and mlvs write themselves: DVC's lock and outputs, reports, runtime state."""
    own = (paths.reports, paths.state, paths.mlflow_db, paths.root / "mlartifacts")
    try:
        written = pipeline_written(paths)
    except ExternalToolError:  # not a git repository: no commit to be dirty against either
        written = ["dvc.lock"]
    return sorted({*written, *(p.relative_to(paths.root).as_posix() for p in own)})


def input_provenance(paths: ProjectPaths, notebook: str) -> dict[str, str]:
    """`dvc_lock.<path>` -> MD5 of each input the stage of `notebook` reads, as `dvc.lock` records it."""
    stages = [stage for stage, name in STAGE_NOTEBOOKS.items() if name == notebook]
    if not stages:
        return {}
    return {f"dvc_lock.{path}": md5 for path, md5 in stage_input_hashes(paths, stages[0]).items()}


def _notebook_tags(paths: ProjectPaths, notebook: str) -> dict[str, str]:
    """The tags of a notebook's run: the code it ran (git), the notebook, its inputs' hashes."""
    return {
        **git_tags(paths.root, generated_paths(paths)),
        "notebook": notebook,
        "mlflow.source.name": f"notebooks/{notebook}.ipynb",
        **input_provenance(paths, notebook),
    }


def start_notebook_run(paths: ProjectPaths, notebook: str) -> str:
    """Create the MLflow run of one notebook execution and return its id (left unfinished)."""
    mlflow = configure(paths)
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    run = client.create_run(
        experiment.experiment_id, run_name=notebook, tags=_notebook_tags(paths, notebook)
    )
    return run.info.run_id


# MLflow's warnings on every dataset and model it records, true and not actionable here:
# two of its dataset source types claim a local file path alike (it picks one), and integer
# columns cannot hold missing values (the declared schema forbids them anyway).
KNOWN_WARNINGS = (".*can be interpreted in multiple ways", ".*integer column")


def _ignore_known_warnings() -> None:
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


@dataclass(frozen=True)
class NotebookRun:
    """The MLflow run a notebook logs to; it stays the active run until `end`."""

    notebook: str
    run_id: str

    def log(
        self,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Log parameters (nested ones flattened), metrics at `step` and tags in one batch."""
        # deferred: mlflow (~1.7 s) is imported only when this runs
        import mlflow
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        mlflow.MlflowClient().log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in flatten(params).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_dataset(
        self,
        frame: Any,
        name: str,
        source: Path,
        digest: str,
        context: str,
        targets: str | None = None,
    ) -> None:
        """Record `frame` as a dataset input of the run, named, with its DVC hash as the digest,
        so the MLflow UI shows which data a run read (`context`: training, testing, monitoring)."""
        # deferred: mlflow (~1.7 s) is imported only when this runs
        import mlflow
        from mlflow.data.pandas_dataset import from_pandas

        with warnings.catch_warnings():
            _ignore_known_warnings()
            dataset = from_pandas(
                frame, source=str(source), targets=targets, name=name, digest=digest[:36]
            )
            mlflow.log_input(dataset, context=context)

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure under `plots/<name>.png`; in a notebook, show that same image.

        The inline backend would draw the figure again at the end of the cell. Drawing it
        once, as the inline backend does, and showing those bytes saves a render per plot
        (about a second for the largest); the cell's output is the one it always had.
        """
        # deferred: mlflow (~1.7 s) is imported only when this runs
        import mlflow

        shell = _inline_shell()
        if shell is None:
            mlflow.MlflowClient().log_figure(self.run_id, figure, f"plots/{name}.png")
            return
        # deferred: IPython and pyplot exist in a kernel, where alone this branch runs
        import matplotlib.pyplot as plt
        from IPython.core.pylabtools import print_figure
        from IPython.display import display

        png = print_figure(figure, "png", bbox_inches="tight", base64=False)
        with tempfile.TemporaryDirectory() as folder:
            image = Path(folder) / f"{name}.png"
            image.write_bytes(png)
            mlflow.MlflowClient().log_artifact(self.run_id, str(image), "plots")
        display({"image/png": png, "text/plain": repr(figure)}, raw=True)
        plt.close(figure)  # shown already: the inline backend has nothing left to draw

    def log_file(self, path: Path, artifact_dir: str) -> None:
        """Attach a file under `artifact_dir`."""
        # deferred: mlflow (~1.7 s) is imported only when this runs
        import mlflow

        mlflow.MlflowClient().log_artifact(self.run_id, str(path), artifact_dir)

    def end(self) -> None:
        """End the run here (the runner, when there is one, sets its final status)."""
        # deferred: mlflow (~1.7 s) is imported only when this runs
        import mlflow

        mlflow.end_run()


def _inline_shell() -> Any:
    """The IPython kernel whose inline backend shows figures, or None (a script, a command)."""
    if "matplotlib_inline" not in sys.modules or "IPython" not in sys.modules:
        return None
    # deferred: both are imported already when this runs (checked above)
    import matplotlib
    from IPython import get_ipython

    if "inline" not in matplotlib.get_backend():
        return None
    return get_ipython()


SYSTEM_METRICS_SECONDS = 1.0


def start_run(notebook: str, paths: ProjectPaths) -> NotebookRun:
    """The run of `notebook`: the one `mlvs run` created (its handoff file, or MLFLOW_RUN_ID), or a new one when run by hand."""
    mlflow = configure(paths)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    handoff = RUN_HANDOFF.get()
    if not run_id and handoff is not None:
        run_id = handed_run_id(handoff)  # `mlvs run` names the run it is creating meanwhile
    if mlflow.active_run() is not None:
        mlflow.end_run()
    # The machine's CPU, memory and disk while the notebook runs (MLflow's system metrics,
    # with psutil), sampled each second: a notebook lasts seconds, not MLflow's default ten.
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_SECONDS)
    mlflow.set_system_metrics_samples_before_logging(1)
    # Its start and stop are announced at INFO, which would land in every executed notebook.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    if run_id:
        started = mlflow.start_run(run_id=run_id, log_system_metrics=True)
    else:
        started = mlflow.start_run(
            run_name=notebook, tags=_notebook_tags(paths, notebook), log_system_metrics=True
        )
    return NotebookRun(notebook, started.info.run_id)


# What a run records besides a notebook's work: the `mlvs.kind` tag, and the tags each kind adds.
KIND_TAG = "mlvs.kind"
INCIDENT = "incident"
ROLLBACK = "rollback"
DEPLOY = "deploy"
MONITOR = "monitor"
RUN_KIND_TAGS: dict[str, tuple[str, ...]] = {
    MONITOR: ("batch", "model_version", "labelled", "alerts_open"),
    INCIDENT: ("incident", "detected_by", "rung"),
    ROLLBACK: ("automatic_snapshot",),
    DEPLOY: ("candidate", "champion", "decision", "forced", "snapshot"),
}


def kind_tags(kind: str, **details: Any) -> dict[str, str]:
    """The tags of a run of `kind`: `mlvs.kind`, then exactly the kind's own tags, as text."""
    expected = RUN_KIND_TAGS[kind]
    if set(details) != set(expected):
        raise ValueError(
            f"a {kind} run is tagged with {', '.join(expected)}, not {sorted(details)}"
        )
    return {KIND_TAG: kind, **{name: str(details[name]) for name in expected}}


def log_kind_run(
    paths: ProjectPaths,
    notebook: str,
    kind: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    details: dict[str, Any],
    figures: dict[str, Any] | None = None,
    files: Sequence[tuple[Path, str]] = (),
) -> str:
    """Log a finished piece of work as one run of `kind` (its tags from `details`); return the run id.

    `figures` go under `plots/` by name, each of `files` (path, artifact folder) into its folder.
    """
    run = start_run(notebook, paths)
    run.log(params, metrics, tags=kind_tags(kind, **details))
    for name, figure in (figures or {}).items():
        run.log_figure(figure, name)
    for path, folder in files:
        run.log_file(path, folder)
    run.end()
    return run.run_id


def log_operation_run(
    paths: ProjectPaths,
    run_name: str,
    kind: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    details: dict[str, Any],
    files: Sequence[tuple[Path, str]] = (),
) -> str:
    """Log a command's decision as one finished run of `kind`, apart from any active run; return its id.

    Unlike `log_kind_run` it never joins the run of a notebook that happens to be running
    (a drill's kernel has one), and it records the code it ran (git), not a notebook.
    """
    mlflow = configure(paths)
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    tags = {**git_tags(paths.root, generated_paths(paths)), **kind_tags(kind, **details)}
    run = client.create_run(experiment.experiment_id, run_name=run_name, tags=tags)
    run_id = str(run.info.run_id)
    # deferred: mlflow (~1.7 s) is imported only when this runs
    from mlflow.entities import Metric, Param
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in flatten(params).items()],
    )
    for path, folder in files:
        client.log_artifact(run_id, str(path), folder)
    with contextlib.redirect_stdout(
        sys.stderr
    ):  # the run's link, printed by MLflow against a server
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def _installed(*distributions: str) -> str:
    """`name==version` of the first of `distributions` installed here (one module, several wheels)."""
    for name in distributions:
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    raise PackageNotFoundError(distributions[0])


def _requirements() -> list[str]:
    """Pinned requirements of a saved model, given explicitly (inference costs ~5 s)."""
    pinned = [_installed(pkg) for pkg in ("scikit-learn", "skops", "pandas", "numpy", "mlflow")]
    # The trees of two model types: PyPI's CPU-only wheel on Linux and Windows, the full one on macOS.
    return [*pinned, _installed("xgboost-cpu", "xgboost")]


@contextlib.contextmanager
def _requirements_taken_as_given(*modules: Any) -> Iterator[None]:
    """Skip MLflow's check, in each of `modules`, that this environment satisfies the model's
    requirements.

    They are this environment's own versions, read one by one in `_requirements`, so the
    check cannot fail; it maps every installed package's files to learn that (about 1.2 s
    of each training run: MLflow runs it when it writes the model and again when it loads
    it to try the input example). Where a module has no such check, nothing is skipped.
    """
    name = "warn_dependency_requirement_mismatches"
    checks = [(module, getattr(module, name)) for module in modules if hasattr(module, name)]
    for module, _ in checks:
        setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        for module, check in checks:
            setattr(module, name, check)


def log_and_register_model(model: Any, input_example: Any, registry: Any) -> Any:
    """Log the model to the active run (skops, signature, input example, explicit requirements) and register it.

    skops is told to trust exactly mlvs's own list of types (`mlvs.ml.modelio.TRUSTED_TYPES`).
    """
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow
    import mlflow.pyfunc
    import mlflow.utils.environment
    from mlflow.models import infer_signature

    package_dir = PACKAGE_DIR
    with warnings.catch_warnings():
        _ignore_known_warnings()
        signature = infer_signature(input_example, model.predict_proba(input_example)[:, 1])
    # MLflow then validates the input example by loading the model through its own
    # loader, which mlvs keeps disabled (no pickle, no trust list read from the file),
    # and logs a warning; mlvs proves the saved model with its golden predictions instead.
    model_logger = logging.getLogger("mlflow.models.model")
    level = model_logger.level
    model_logger.setLevel(logging.ERROR)
    try:
        with (
            _quiet_registration(),
            _requirements_taken_as_given(mlflow.utils.environment, mlflow.pyfunc),
        ):
            return _log_model(
                mlflow, model, signature, input_example, registry, TRUSTED_TYPES, package_dir
            )
    finally:
        model_logger.setLevel(level)


@contextlib.contextmanager
def _quiet_registration() -> Iterator[None]:
    """Keep MLflow's console chatter of a registration out of the training report.

    Its event stream prints "Successfully registered" and "Created version" (mlvs shows
    the version and the gate's decision itself) and warns, with the clock, that pip's
    version is unknown (the environment is uv's, without pip; the requirements are given
    explicitly). Two of its dataset source types claim the run's local data files alike,
    and it says so on every registration. Failures still raise.
    """
    # MLflow's own switch, counted: the contexts log_model enters cannot turn the stream back on.
    # deferred: part of mlflow (~1.7 s), imported only when a model is logged
    from mlflow.utils.autologging_utils import MlflowEventsAndWarningsBehaviorGlobally

    with (
        MlflowEventsAndWarningsBehaviorGlobally(
            disable_event_logs=True, disable_warnings=False, reroute_warnings=False
        ),
        warnings.catch_warnings(),
    ):
        _ignore_known_warnings()
        yield


def _log_model(
    mlflow: Any,
    model: Any,
    signature: Any,
    input_example: Any,
    registry: Any,
    trusted_types: tuple[str, ...],
    package_dir: Path,
) -> Any:
    return mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="skops",
        skops_trusted_types=list(trusted_types),
        signature=signature,
        input_example=input_example,
        pip_requirements=_requirements(),
        # The model's preprocessing calls mlvs.ml.features: ship the package with it.
        code_paths=[str(package_dir)],
        registered_model_name=registry.model_name,
    )


def finish_run(run_id: str, paths: ProjectPaths, artifacts: list[Path], failed: bool) -> None:
    """Attach the executed notebook (and HTML) to the run and set its final status."""
    mlflow = configure(paths)
    client = mlflow.MlflowClient()
    for artifact in artifacts:
        if artifact.exists():
            client.log_artifact(run_id, str(artifact), artifact_path="notebook")
    # Against a server MLflow prints the run's link on stdout, which `--json` keeps for its document.
    with contextlib.redirect_stdout(sys.stderr):
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def unfinished_dir(paths: ProjectPaths) -> Path:
    """Where runs the tracking server could not be told the end of wait (one folder per run)."""
    return paths.state / "unfinished-runs"


def aliases_before_run(paths: ProjectPaths) -> tuple[str, dict[str, str]] | None:
    """The registered model's name and aliases (alias -> version), read before a run against a server.

    None with a local store: only a server can vanish between a run's registration and its end,
    and only then are these needed, to put back the aliases the run moved.
    """
    if not is_tracking_server(tracking_uri(paths)):
        return None

    try:
        name = load_stage("train", paths.root).registry.model_name
    except MlvsError:
        return None
    state = read_registry(paths, name, None)
    return None if state.error else (name, state.alias_versions())


def record_unfinished_run(
    paths: ProjectPaths,
    run_id: str,
    notebook: str,
    artifacts: list[Path],
    before: tuple[str, dict[str, str]] | None,
) -> Path:
    """Keep what a run could not send to the lost server: its executed notebook and the aliases before it."""
    folder = unfinished_dir(paths) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        if artifact.is_file():
            shutil.copy2(artifact, folder / artifact.name)
    record = {
        "run_id": run_id,
        "notebook": notebook,
        "model_name": before[0] if before else None,
        "aliases_before": before[1] if before else {},
    }
    atomic_write_text(folder / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return folder


def unfinished_runs(paths: ProjectPaths) -> list[dict[str, Any]]:
    """The runs a lost tracking server left open, as `record_unfinished_run` kept them."""
    directory = unfinished_dir(paths)
    records = []
    for entry in sorted(directory.glob("*/run.json")) if directory.is_dir() else []:
        try:
            records.append(json.loads(entry.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return records


def settle_unfinished_runs(paths: ProjectPaths) -> list[str]:
    """Once the server answers again, close every run it lost as FAILED and withdraw what it registered.

    Such a run's stage failed and its outputs were put back to the last good ones, so a
    model version it registered describes no model in the project: the version is deleted
    and the aliases it took are put back where they were before the run (an alias someone
    moved elsewhere meanwhile is left alone). Each step can be repeated, so an interrupted
    settlement is finished by the next one. Returns one label per thing put right.
    """
    records = unfinished_runs(paths)
    if not records or server_problem(paths) is not None:
        return []
    # deferred: mlflow (~1.7 s) is imported only when this runs
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(paths), registry_uri=registry_uri(paths))
    settled: list[str] = []
    for record in records:
        run_id, name = record["run_id"], record.get("model_name")
        folder = unfinished_dir(paths) / run_id
        try:
            withdrawn = list(client.search_model_versions(f"run_id = '{run_id}'"))
            aliases_now: dict[str, str] = {}
            if name:
                # The model itself gone: every alias it had goes back.
                with contextlib.suppress(mlflow.exceptions.MlflowException):
                    aliases_now = {
                        a: str(v)
                        for a, v in (client.get_registered_model(name).aliases or {}).items()
                    }
            for version in withdrawn:
                client.delete_model_version(version.name, version.version)
                settled.append(
                    f"{version.name} version {version.version} (registered by the unfinished run {run_id})"
                )
            gone = {str(v.version) for v in withdrawn if v.name == name}
            for alias, version in sorted((record.get("aliases_before") or {}).items()):
                if name and (alias not in aliases_now or aliases_now[alias] in gone):
                    move_alias(
                        paths,
                        name,
                        alias,
                        version,
                        MoveReason(
                            "recover",
                            f"put back as before run {run_id}, which the lost tracking server left "
                            "unfinished",
                        ),
                    )
                    settled.append(f"{name}@{alias} (back to version {version})")
            for kept in sorted(folder.iterdir()):
                if kept.name != "run.json":
                    client.log_artifact(run_id, str(kept), artifact_path="notebook")
            with contextlib.redirect_stdout(sys.stderr):  # the run's link, printed by MLflow
                client.set_terminated(run_id, status="FAILED")
        except mlflow.exceptions.MlflowException as error:
            get_logger("tracking").warning(
                "could not settle the unfinished run %s: %s", run_id, error
            )
            continue
        shutil.rmtree(folder, ignore_errors=True)
        settled.append(f"run {run_id} ({record.get('notebook')}) closed as FAILED")
    return settled
