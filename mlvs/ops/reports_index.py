"""`reports/index.html`: one page linking every executed notebook, drill postmortem and snapshot.

It is rebuilt after every notebook execution (`mlvs run`, each pipeline stage, each
drill), every snapshot and every rollback. Links are relative, so the page works
opened from disk or served from `reports/` by any static web server. The page is
built only from what it lists: the same reports give the same bytes.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlvs._io import atomic_write_text
from mlvs.backends.git.refs import list_snapshot_refs
from mlvs.backends.git.run import is_object_id
from mlvs.logs import get_logger
from mlvs.ops.history import alias_history
from mlvs.ops.snapshot.create import require_git
from mlvs.ops.snapshot.manifest import Manifest
from mlvs.ops.snapshot.read import read_snapshots
from mlvs.paths import ProjectPaths

log = get_logger("reports")


STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:76rem;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .6rem;text-align:left;font-size:.92rem;vertical-align:top}
th{background:#f4f4f4}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
code{font-size:.85rem}.muted{color:#666}
"""


INCIDENT_NOTEBOOK = "03_incident"


def notebook_title(notebook: dict[str, Any]) -> str | None:
    """The first markdown heading of a notebook (its title), or None."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        for line in ("".join(source) if isinstance(source, list) else source).splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; empty when the file is missing, unreadable or not an object."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def executed_notebook(path: Path) -> dict[str, Any]:
    """What an executed notebook says about its run: title, end time, duration, parameters, failure."""
    notebook = _read_json(path)
    meta = (notebook.get("metadata") or {}).get("papermill") or {}
    return {
        "title": notebook_title(notebook) or path.stem,
        "end_time": str(meta.get("end_time") or "")[:19].replace("T", " "),
        "duration": meta.get("duration"),
        "parameters": meta.get("parameters") or {},
        "failed": bool(meta.get("exception")),
    }


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(quote(href))}">{html.escape(text)}</a>'


def _cell(value: Any) -> str:
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _seconds(value: Any, digits: int = 1) -> str:
    return f"<td>{value:.{digits}f}</td>" if isinstance(value, (int, float)) else "<td></td>"


def _parameters(values: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(values.items()))
    return (
        f"<td><code>{html.escape(text)}</code></td>"
        if text
        else '<td class="muted">from params/</td>'
    )


def _status(ok: bool, good: str, bad: str) -> str:
    return (
        f'<td><span class="ok">{good}</span></td>'
        if ok
        else f'<td><span class="bad">{bad}</span></td>'
    )


def _run_rows(paths: ProjectPaths) -> list[str]:
    rows = []
    for notebook in sorted(paths.reports.glob("*.ipynb")):
        page = notebook.with_suffix(".html")
        if not page.is_file():
            continue
        run = executed_notebook(notebook)
        rows.append(
            f'<tr data-notebook="{html.escape(notebook.stem)}"><td>{_link(page.name, notebook.stem)}</td>'
            f"{_cell(run['title'])}{_cell(run['end_time'])}{_seconds(run['duration'])}"
            f"{_parameters(run['parameters'])}{_status(not run['failed'], 'ok', 'failed')}"
            f"<td>{_link(notebook.name, 'ipynb')}</td></tr>"
        )
    return rows


def _drill_rows(paths: ProjectPaths) -> list[tuple[str, bool]]:
    """One row per drill folder, and whether that drill recovered."""
    rows = []
    incidents = paths.reports / "incidents"
    folders = sorted(p for p in incidents.iterdir() if p.is_dir()) if incidents.is_dir() else []
    for folder in folders:
        record = _read_json(folder / "record.json")
        page = folder / f"{INCIDENT_NOTEBOOK}.html"
        if not record and not page.is_file():
            continue
        prefix = folder.relative_to(paths.reports).as_posix()
        scenario = str(record.get("scenario") or folder.name)
        name = _link(f"{prefix}/{page.name}", scenario) if page.is_file() else html.escape(scenario)
        if record:
            outcome = _status(bool(record.get("recovered")), "recovered", "NOT recovered")
            evidence = f"<td>{_link(f'{prefix}/record.json', 'record')}</td>"
        else:
            outcome = _status(False, "", "notebook failed, no record")
            evidence = "<td></td>"
        rows.append(
            (
                f'<tr data-scenario="{html.escape(scenario)}"><td>{name}</td>{_cell(record.get("family"))}'
                f"{_cell(record.get('detected_by'))}{_cell(record.get('rung'))}"
                f"{_seconds(record.get('time_to_detect_s'), 3)}{_seconds(record.get('time_to_recover_s'), 3)}"
                f"{outcome}{evidence}</tr>",
                bool(record.get("recovered")),
            )
        )
    return rows


# What the index shows of each snapshot, remembered by commit: a commit's manifest never
# changes, so only snapshots new since the last rebuild are read from git and parsed.
SNAPSHOT_ROWS = "index-snapshots.json"


@dataclass(frozen=True)
class _Shown:
    """What the index shows of one snapshot."""

    name: str
    created_at: str
    automatic: bool
    message: str
    model_version: str | None
    test_roc_auc: float | None

    @classmethod
    def of(cls, manifest: Manifest) -> _Shown:
        roc_auc = manifest.metrics.get("test_roc_auc")
        return cls(
            manifest.name,
            manifest.created_at,
            manifest.automatic,
            manifest.message,
            manifest.model_version,
            float(roc_auc) if isinstance(roc_auc, (int, float)) else None,
        )

    @classmethod
    def read(cls, data: Any) -> _Shown | None:
        """One remembered entry, or None when it is not of this shape (the file is anyone's)."""
        if not isinstance(data, dict) or set(data) != _SHOWN_FIELDS:
            return None
        texts = (data["name"], data["created_at"], data["message"])
        version, roc_auc = data["model_version"], data["test_roc_auc"]
        if (
            not all(type(t) is str for t in texts)
            or type(data["automatic"]) is not bool
            or not (version is None or type(version) is str)
            or not (roc_auc is None or type(roc_auc) is float)
        ):
            return None
        return cls(**data)


_SHOWN_FIELDS = {f.name for f in fields(_Shown)}


def _remembered(paths: ProjectPaths) -> dict[str, _Shown]:
    try:
        document = json.loads((paths.state / SNAPSHOT_ROWS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = document.items() if isinstance(document, dict) else []
    remembered = {}
    for commit, data in entries:
        shown = _Shown.read(data)
        if shown is not None and is_object_id(commit):
            remembered[commit] = shown
    return remembered


def _remember(paths: ProjectPaths, shown: dict[str, _Shown]) -> None:
    # Only a cache: not flushed to disk, and a file that cannot be read later is rebuilt.
    target = paths.state / SNAPSHOT_ROWS
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(
            prefix=f".{SNAPSHOT_ROWS}.", suffix=".tmp", dir=paths.state
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({c: asdict(s) for c, s in shown.items()}, handle, sort_keys=True)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        log.debug("could not remember the index's snapshots: %s", error)


def _shown_snapshots(paths: ProjectPaths) -> list[tuple[str, _Shown]]:
    """(commit, what the index shows) of every snapshot `list_snapshots` lists, oldest first."""
    require_git(paths)
    refs = list_snapshot_refs(paths.root)
    before = _remembered(paths)
    remembered = dict(before)
    # A ref is known when its commit's manifest was read before under the ref's own name.
    unknown = [(n, c) for n, c in refs if c not in remembered or remembered[c].name != n]
    for manifest in read_snapshots(paths, unknown):
        assert manifest.commit is not None
        remembered[manifest.commit] = _Shown.of(manifest)
    listed = {c: remembered[c] for n, c in refs if c in remembered and remembered[c].name == n}
    if listed != before:
        _remember(paths, listed)
    return sorted(listed.items(), key=lambda item: (item[1].created_at, item[1].name))


def _snapshot_rows(paths: ProjectPaths) -> list[str]:
    try:
        snapshots = _shown_snapshots(paths)
    except Exception:  # no git repository, or an unreadable ref: the index still renders
        return []
    rows = []
    for commit, m in snapshots:
        roc_auc = m.test_roc_auc
        rows.append(
            f'<tr data-snapshot="{html.escape(m.name)}">{_cell(m.name)}{_cell(m.created_at[:19].replace("T", " "))}'
            f"{_cell('automatic' if m.automatic else 'made')}{_cell(m.message)}{_cell(m.model_version)}"
            f"{_cell(f'{roc_auc:.4f}' if roc_auc is not None else None)}"
            f"<td><code>{html.escape(commit[:12])}</code></td></tr>"
        )
    return rows


def _history_rows(paths: ProjectPaths) -> list[str]:
    try:
        history = alias_history(paths)
    except Exception:  # no params or no registry yet: the index still renders
        return []
    rows = [
        f'<tr class="bad">{_cell(problem)}<td colspan="6"></td></tr>'
        for problem in history.problems
    ]
    if history.error:
        rows.append(
            f'<tr class="bad">{_cell(f"unreadable: {history.error}")}<td colspan="6"></td></tr>'
        )
    for m in reversed(history.moves):  # newest first, as a reader looks for the last move
        command = m.command + (" --force" if m.forced else "")
        rows.append(
            f'<tr data-alias="{html.escape(m.alias)}">{_cell(m.time[:19].replace("T", " "))}'
            f"{_cell(command)}{_cell(m.alias)}{_cell(m.from_version or '-')}"
            f"{_cell(m.to_version or '-')}{_cell(m.snapshot or '-')}{_cell(m.reason)}</tr>"
        )
    return rows


def _table(table_id: str, header: list[str], rows: list[str], empty: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = (
        "\n".join(rows)
        or f'<tr><td colspan="{len(header)}" class="muted">{html.escape(empty)}</td></tr>'
    )
    return f'<table id="{table_id}">\n<tr>{head}</tr>\n{body}\n</table>'


def _monitoring_link(paths: ProjectPaths) -> str:
    if not (paths.reports / "monitoring.html").is_file():
        return ""
    return '<p><a id="monitoring" href="monitoring.html">Monitoring dashboard</a>: every batch judged after deployment, its alerts and the champion\'s moves.</p>\n'


def render_index(paths: ProjectPaths) -> str:
    """The index page for what `reports/` and the snapshot list hold now."""
    runs, snapshots = _run_rows(paths), _snapshot_rows(paths)
    moves = _history_rows(paths)
    drill_rows = _drill_rows(paths)
    drills, recovered = [row for row, _ in drill_rows], sum(ok for _, ok in drill_rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlvs reports</title>
<style>{STYLE}</style></head><body>
<h1>mlvs reports</h1>
{_monitoring_link(paths)}<p id="summary">{len(runs)} executed notebook(s), {
        len(drills)
    } incident drill(s) ({recovered} recovered), {len(snapshots)} snapshot(s).</p>
<h2>Executed notebooks</h2>
{
        _table(
            "runs",
            ["notebook", "title", "executed (UTC)", "seconds", "parameters", "status", ""],
            runs,
            "none yet: make run",
        )
    }
<h2>Incident drills</h2>
{
        _table(
            "drills",
            [
                "scenario",
                "family",
                "detected by",
                "repaired by",
                "detect (s)",
                "recover (s)",
                "outcome",
                "",
            ],
            drills,
            "none yet: mlvs drill all",
        )
    }
<h2>Snapshots</h2>
{
        _table(
            "snapshots",
            ["name", "created (UTC)", "kind", "message", "model version", "test ROC-AUC", "commit"],
            snapshots,
            "none yet: mlvs snapshot create NAME",
        )
    }
<h2>Alias history</h2>
{
        _table(
            "alias-history",
            ["when (UTC)", "command", "alias", "from", "to", "snapshot taken before", "reason"],
            moves,
            "no alias move recorded yet: mlvs pipeline",
        )
    }
</body></html>
"""


def write_index(paths: ProjectPaths) -> Path:
    """Write `reports/index.html` from what is in `reports/` and the snapshot list."""
    target = paths.reports / "index.html"
    atomic_write_text(target, render_index(paths))
    return target


def refresh_index(paths: ProjectPaths) -> Path | None:
    """Rebuild the index after a command; a failure to write it never fails the command itself."""
    try:
        return write_index(paths)
    except Exception as error:  # the index is a convenience: the reports it lists are already kept
        log.warning("could not rebuild %s: %s", paths.reports / "index.html", error)
        return None
