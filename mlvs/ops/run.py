"""Running a notebook headless with papermill, safely parameterised and always reported.

papermill escapes parameter values but writes parameter names verbatim into
code, so every name is checked here first: a Python identifier, and one the
notebook's parameters cell declares. Values given with `-p` must be scalars
(papermill would turn lists and dicts into strings); `-f FILE.yaml` keeps types.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import json
import keyword
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlvs._io import atomic_write_text
from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.kernel import fork_kernel_template, ipc_kernel_config, template_directory
from mlvs.backends.mlflow import tracking
from mlvs.backends.mlflow.handoff import RunHandoff
from mlvs.backends.mlflow.store import require_server, store_exists, unreachable_message
from mlvs.errors import BadInputError, ExternalToolError, NotebookFailedError
from mlvs.logs import get_logger
from mlvs.ml.params import load_stage, read_yaml
from mlvs.ops.reports_index import notebook_title, refresh_index
from mlvs.ops.verify import check_tracked_files
from mlvs.paths import STAGE_NOTEBOOKS, ProjectPaths
from mlvs.settings import ROOT, RUN_HANDOFF
from mlvs.sidecar import Sidecar
from mlvs.state.lock import state_lock

log = get_logger("runner")


SCALARS = (str, int, float, bool, type(None))


@dataclass
class NotebookResult:
    """What one notebook execution produced."""

    notebook: str
    output: Path
    html: Path
    run_id: str
    seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)


def resolve_notebook(paths: ProjectPaths, name: str) -> Path:
    """The notebook `name` refers to (a path in `notebooks/` or a bare stem), refusing anything else."""
    if not name or "\x00" in name:
        raise BadInputError("the notebook name is empty; give one of the notebooks in notebooks/")
    candidate = Path(name)
    if candidate.suffix != ".ipynb":
        candidate = candidate.with_name(candidate.name + ".ipynb")
    if not candidate.is_absolute() and candidate.parts[:1] != ("notebooks",):
        candidate = Path("notebooks") / candidate
    resolved = (
        (paths.root / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    )
    available = sorted(p.stem for p in paths.notebooks.glob("*.ipynb"))
    if resolved.parent != paths.notebooks.resolve() or not resolved.is_file():
        raise BadInputError(
            f"notebook '{name}' is not one of this project's notebooks; choose one of: {', '.join(available)}"
        )
    return resolved


def check_name(name: str) -> str:
    """Refuse a parameter name that is not a plain Python identifier."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise BadInputError(
            f"parameter name {name!r} is not a Python identifier; use letters, digits and '_', not starting with a digit"
        )
    return name


def parse_value(name: str, text: str) -> Any:
    """A `-p` value: YAML scalar typing (42, 0.5, true, null), never a list or mapping."""
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text
    if isinstance(value, (datetime.date, datetime.datetime)):
        return text  # YAML reads 2020-01-01 as a date; a notebook parameter wants the text
    if not isinstance(value, SCALARS):
        raise BadInputError(
            f"parameter {name} = {text!r} is a {type(value).__name__}; -p takes a single value, "
            "put lists and mappings in a YAML file given with -f"
        )
    return value


def collect_parameters(pairs: list[tuple[str, str]], files: list[Path]) -> dict[str, Any]:
    """Merge `-f` files (in order) then `-p` pairs into one validated mapping."""

    merged: dict[str, Any] = {}
    for path in files:
        data = read_yaml(Path(path))
        for name, value in data.items():
            merged[check_name(name)] = value
    for name, text in pairs:
        merged[check_name(name)] = parse_value(name, text)
    return merged


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters the notebook's `parameters` cell declares, with their defaults."""
    # deferred: papermill (~0.7 s) is imported only when this runs
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    return {name: info["default"] for name, info in declared.items()}


def validate_parameters(paths: ProjectPaths, notebook: Path, parameters: dict[str, Any]) -> None:
    """Refuse names the notebook does not declare and values its stage's params schema forbids."""

    declared = notebook_parameters(notebook)
    for name in parameters:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BadInputError(
                f"{notebook.name} has no parameter '{name}'{hint}; its parameters are: {', '.join(declared) or 'none'}"
            )
    # A stage's notebook takes its overrides through the stage's params schema.
    stage = next((s for s, stem in STAGE_NOTEBOOKS.items() if stem == notebook.stem), None)
    if stage:
        load_stage(stage, paths.root, overrides=parameters)


@contextmanager
def temporary_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then put the old values back."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def render_html(notebook: Path, html: Path) -> None:
    """Render an executed notebook to a standalone HTML page, titled with the notebook's own title."""
    # deferred: nbformat (~0.2 s) and nbconvert (~0.8 s) are imported only when this runs
    import nbformat
    from nbconvert import HTMLExporter

    node = nbformat.read(notebook, as_version=4)
    title = notebook_title(node) or notebook.stem
    body, _ = HTMLExporter().from_notebook_node(node, resources={"metadata": {"name": title}})
    atomic_write_text(html, body)


def _finish_tracked_run(
    paths: ProjectPaths,
    run_id: str,
    notebook: Path,
    artifacts: list[Path],
    failed: bool,
    before: tuple[str, dict[str, str]] | None,
) -> None:
    """Attach the report to the run and close it; if the tracking server is gone, keep both for `mlvs recover`.

    The server is asked first when the notebook failed: MLflow's client would retry a
    refused connection for minutes, and a notebook that failed may have failed for that reason.
    """

    problem = tracking.server_problem(paths) if failed else None
    if problem is None:
        try:
            tracking.finish_run(run_id, paths, artifacts, failed=failed)
            return
        except Exception:
            problem = tracking.server_problem(paths)
            if problem is None:
                raise
    tracking.record_unfinished_run(paths, run_id, notebook.stem, artifacts, before)
    raise ExternalToolError(
        unreachable_message(
            paths,
            problem,
            f"run `mlvs recover` to close run {run_id} of {notebook.name} and withdraw what it registered "
            f"(its executed notebook is kept at {artifacts[0]})",
        )
    ) from None


# What the side process of `mlvs run` does (see mlvs.sidecar): the MLflow and nbconvert work
# that the kernel does not wait for, on the other core.


def _quiet_store_errors() -> None:
    """In the side process as in the command: MLflow logs a database error with its traceback,
    then raises it; the raised one is what mlvs reports, in one line."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if _below_error not in logger.filters:
        logger.addFilter(_below_error)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def open_tracking(paths: ProjectPaths) -> None:
    """Import MLflow and open the project's tracking store, so that the run starts without waiting."""
    _quiet_store_errors()
    tracking.configure(paths)


def begin_tracked_run(
    paths: ProjectPaths, notebook: str
) -> tuple[tuple[str, dict[str, str]] | None, str, dict[str, str]]:
    """The registry's aliases before the run, the new run's id, and the MLflow settings the kernel inherits.

    MLflow exports its settings (tracking URI, experiment) to the environment when it is
    configured; the kernel has always run with them, so they are handed back for its environment.
    """
    _quiet_store_errors()
    before_env = dict(os.environ)
    before = tracking.aliases_before_run(paths)
    run_id = tracking.start_notebook_run(paths, notebook)
    exported = {k: v for k, v in os.environ.items() if before_env.get(k) != v}
    return before, run_id, exported


def prepare_html() -> None:
    """Import nbconvert's HTML exporter while the kernel runs (about 1 s), so the report is quick."""
    # deferred: nbconvert (~0.8 s) only in the side process, while the notebook runs
    from nbconvert import HTMLExporter

    HTMLExporter()


def report_and_finish(
    paths: ProjectPaths,
    run_id: str,
    notebook: Path,
    output: Path,
    html: Path,
    failed: bool,
    before: tuple[str, dict[str, str]] | None,
) -> None:
    """Render the executed notebook to HTML, attach both to the run and set its final status."""
    _quiet_store_errors()
    if output.exists():
        try:
            render_html(output, html)
        except Exception as exc:  # nbformat raises its own kinds for a notebook that is not JSON
            if not failed:
                raise
            # A run that failed writing its report (a full disk) leaves it cut short: no HTML of it.
            log.warning("%s could not be rendered to HTML (%s)", output.name, type(exc).__name__)
    _finish_tracked_run(paths, run_id, notebook, [output, html], failed, before)


def run_notebook(
    paths: ProjectPaths,
    name: str,
    parameters: dict[str, Any] | None = None,
    output_dir: Path | None = None,
    progress: bool = True,
) -> NotebookResult:
    """Execute one notebook with papermill and keep its executed copy and HTML as a report.

    The MLflow run is created here and handed to the kernel through
    MLFLOW_RUN_ID, so the notebook's own logging lands in it; the report is
    attached afterwards and the run is marked FAILED when a cell fails.
    Raises NotebookFailedError (exit 1) after the report is written. The run
    holds the state lock, which the kernel's own operations share. MLflow and the
    HTML rendering work in a side process, beside papermill and the kernel.
    """
    parameters = dict(parameters or {})
    notebook = resolve_notebook(paths, name)
    with Sidecar() as side, template_directory() as template_dir:
        # The side process imports what the kernel needs and forks it a template first,
        # before it opens the store (the template must hold no SQLite handle).
        template = side.submit(fork_kernel_template, template_dir)
        # MLflow's import and store opening (2 s or more) overlap papermill's import below.
        side.submit(open_tracking, paths)
        validate_parameters(paths, notebook, parameters)
        with state_lock(paths):
            return _execute_notebook(
                paths, notebook, parameters, output_dir, progress, side, (template, template_dir)
            )


def _execute_notebook(
    paths: ProjectPaths,
    notebook: Path,
    parameters: dict[str, Any],
    output_dir: Path | None,
    progress: bool,
    side: Sidecar,
    template: tuple[int, str],
) -> NotebookResult:
    """`run_notebook` once its inputs are checked and the lock is held.

    `template`: the side process's ticket for the kernel template, and its directory.
    """
    # deferred: a refused name or parameter should not pay for papermill (~0.7 s).
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir = output_dir or paths.reports
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    html = output.with_suffix(".html")

    # A tracking server that does not answer: refuse now, with nothing run or written.
    require_server(paths, f"run {notebook.name} again")
    # The kernel starts while the side process creates the run (MLflow's import and store
    # take seconds); the notebook's `start_run` waits for the run's id in the handoff file.
    # papermill writes into the state folder, so that a run that could not be created
    # leaves the last report where it was.
    running = paths.state / "running"
    with contextlib.suppress(OSError):  # a disk that refuses it fails papermill's write instead
        running.mkdir(parents=True, exist_ok=True)
    _clear_dead_runs(running)
    staged = running / f"{os.getpid()}-{notebook.name}"
    template_dir = _warm_template(side, *template)
    began = side.submit(begin_tracked_run, paths, notebook.stem)
    side.submit(prepare_html)
    handoff = _handoff(paths, running / f"{os.getpid()}.run")
    begun: tuple[tuple[str, dict[str, str]] | None, str, dict[str, str]] = (None, "", {})
    if handoff is None:  # the run first, as its id is then in the kernel's environment
        begun = side.result(began)
        env = {**begun[2], ROOT.name: str(paths.root), "MLFLOW_RUN_ID": begun[1]}
    else:
        handoff.relay(lambda: side.result(began), lambda created: created[1])
        env = {ROOT.name: str(paths.root), RUN_HANDOFF.name: str(handoff.path)}
    log.info("running %s", notebook.name)
    started = time.perf_counter()
    failed, error = False, ""
    try:
        try:
            with temporary_environment(env), ipc_kernel_config(template_dir) as kernel_config:
                papermill.execute_notebook(
                    str(notebook),
                    str(staged),
                    parameters=parameters,
                    kernel_name="python3",
                    progress_bar=progress,
                    request_save_on_cell_execute=False,
                    cwd=str(paths.notebooks),
                    config=kernel_config,  # papermill hands it to nbclient's kernel manager
                )
        except PapermillExecutionError as exc:
            failed, error = True, f"{exc.ename}: {exc.evalue}"
        except Exception as exc:  # the kernel died or could not start: still a failed, reported run
            failed, error = True, f"{type(exc).__name__}: {exc}"
        # A run never created: its error, and no report.
        before, run_id, _ = handoff.result() if handoff is not None else begun
        if staged.exists():
            _publish_report(staged, output)
    finally:
        if handoff is not None:
            handoff.close()
        staged.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    side.call(report_and_finish, paths, run_id, notebook, output, html, failed, before)

    refresh_index(paths)
    if failed:
        raise NotebookFailedError(
            f"{notebook.name} failed ({error}); the executed notebook with the failing cell is kept at {output}"
        )
    log.info(
        "%s finished in %.1f s (MLflow run %s); report: %s", notebook.name, seconds, run_id, output
    )
    return NotebookResult(notebook.stem, output, html, run_id, seconds, parameters)


def _warm_template(side: Sidecar, ticket: int, directory: str) -> str | None:
    """The directory of the side process's kernel template, or None to start the kernel cold.

    Waited for here, before the run's other calls to the side process are read from another
    thread: the template is ready once the side process has imported what the kernel needs.
    """
    try:
        pid = side.result(ticket)
    except Exception as exc:  # a platform or process that cannot fork one: the kernel starts cold
        log.debug("no kernel template (%s: %s); the kernel starts cold", type(exc).__name__, exc)
        return None
    return directory if pid is not None else None


def _handoff(paths: ProjectPaths, path: Path) -> RunHandoff | None:
    """A handoff for a kernel that starts while the run is created, or None to create it first.

    First: when the tracking store does not exist yet (creating its tables is for one
    process at a time), or when the handoff file cannot be written (the run's own error,
    once it fails, is the one to report).
    """
    if not store_exists(paths):
        return None
    try:
        return RunHandoff(path)
    except OSError:
        return None


def _clear_dead_runs(running: Path) -> None:
    """Delete what killed `mlvs run`s left in `running` (each file starts with its process id).

    Not part of crash recovery: a notebook's kernel shares its command's state lock, and a
    drill it runs recovers the project while the command's own files are in use.
    """
    if not running.is_dir():
        return
    for entry in running.iterdir():
        owner = re.match(r"\d+", entry.name)
        if owner is None or not _process_exists(int(owner.group())):
            entry.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: it exists
        return True
    return True


def _publish_report(staged: Path, output: Path) -> None:
    """Move the executed notebook to its report path; papermill's record of where it wrote follows."""
    text = staged.read_text(encoding="utf-8")
    written = f'"output_path": {json.dumps(str(staged))}'
    atomic_write_text(output, text.replace(written, f'"output_path": {json.dumps(str(output))}', 1))


def outputs_out_of_step(paths: ProjectPaths) -> list[str]:
    """After a one-off run (not a stage of `dvc repro`): the DVC-tracked files that no longer match `dvc.lock`.

    DVC sets `DVC_STAGE` for the commands of its stages; a run without it wrote the
    stage's outputs outside the pipeline, so `dvc.lock` may describe other bytes now.
    """
    if os.environ.get("DVC_STAGE"):
        return []
    hashes = HashCache(paths)
    try:
        return sorted({f.artifact for f in check_tracked_files(paths, ObjectStore(paths), hashes)})
    finally:
        hashes.close()
