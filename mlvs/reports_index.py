"""`reports/index.html`: one page linking every run report, drill postmortem and snapshot."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from mlvs.hashing import atomic_write_text
from mlvs.paths import ProjectPaths

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .6rem;text-align:left;font-size:.92rem}
th{background:#f4f4f4}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
"""


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _drills(paths: ProjectPaths) -> list[dict[str, Any]]:
    records = []
    for record_file in sorted((paths.reports / "incidents").glob("*/record.json")):
        try:
            records.append({**json.loads(record_file.read_text(encoding="utf-8")), "_dir": record_file.parent})
        except ValueError:
            continue
    return records


def _snapshots(paths: ProjectPaths) -> list[Any]:
    try:
        from mlvs.snapshots import list_snapshots

        return list_snapshots(paths)
    except Exception:  # no git repository, or no snapshots yet: the index still renders
        return []


def write_index(paths: ProjectPaths) -> Path:
    """Write `reports/index.html` from what is in `reports/` and the snapshot list."""
    rows_runs = []
    for name in ("01_prepare", "02_train", "04_rollback"):
        page = paths.reports / f"{name}.html"
        if page.is_file():
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(page.stat().st_mtime))
            rows_runs.append(f"<tr><td>{_link(page.name, name)}</td><td>{stamp}</td></tr>")
    rows_drills = []
    for record in _drills(paths):
        folder: Path = record["_dir"]
        page = folder / "03_incident.html"
        link = _link(page.relative_to(paths.reports).as_posix(), record["scenario"]) if page.is_file() else html.escape(record["scenario"])
        status = '<span class="ok">recovered</span>' if record.get("recovered") else '<span class="bad">NOT recovered</span>'
        rows_drills.append(
            f"<tr><td>{link}</td><td>{html.escape(record.get('family', ''))}</td>"
            f"<td>{html.escape(str(record.get('detected_by')))}</td><td>{html.escape(str(record.get('rung')))}</td>"
            f"<td>{record.get('time_to_detect_s', 0):.3f}</td><td>{record.get('time_to_recover_s', 0):.3f}</td>"
            f"<td>{status}</td><td>{_link((folder / 'record.json').relative_to(paths.reports).as_posix(), 'record')}</td></tr>"
        )
    rows_snapshots = []
    for manifest in _snapshots(paths):
        data = manifest.to_dict() if hasattr(manifest, "to_dict") else dict(manifest.__dict__)
        rows_snapshots.append(
            f"<tr><td>{html.escape(str(data.get('name')))}</td><td>{html.escape(str(data.get('created_at')))}</td>"
            f"<td>{html.escape(str(data.get('message', '')))}</td><td>{html.escape(str(data.get('commit', ''))[:12])}</td></tr>"
        )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlvs reports</title>
<style>{STYLE}</style></head><body>
<h1>mlvs reports</h1>
<h2>Pipeline runs</h2>
<table><tr><th>notebook</th><th>executed</th></tr>{''.join(rows_runs) or '<tr><td colspan=2>none yet: make run</td></tr>'}</table>
<h2>Incident drills</h2>
<table><tr><th>scenario</th><th>family</th><th>detected by</th><th>repaired by</th><th>detect (s)</th><th>recover (s)</th><th>outcome</th><th></th></tr>
{''.join(rows_drills) or '<tr><td colspan=8>none yet: mlvs drill all</td></tr>'}</table>
<h2>Snapshots</h2>
<table><tr><th>name</th><th>created</th><th>message</th><th>commit</th></tr>
{''.join(rows_snapshots) or '<tr><td colspan=4>none yet: mlvs snapshot create NAME</td></tr>'}</table>
</body></html>
"""
    target = paths.reports / "index.html"
    atomic_write_text(target, body)
    return target
