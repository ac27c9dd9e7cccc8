"""`reports/index.html` from a reports directory built by hand: what it lists, and that it escapes what it shows.

Parameters and scenario names come from users (`-p`, the incident catalog); the
index shows them in a page a browser opens, so they must arrive as text, never as markup.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from mlvs.ops.reports_index import render_index, write_index
from mlvs.paths import ProjectPaths

HOSTILE = "<script>alert(1)</script>"


def executed(path: Path, title: str, parameters: dict, failed: bool) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\nText.")]
    )
    notebook.metadata["papermill"] = {
        "parameters": parameters,
        "exception": True if failed else None,
        "end_time": "2026-01-02T03:04:05.678+00:00",
        "duration": 12.34,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    path.with_suffix(".html").write_text(f"<html><title>{title}</title></html>")


def reports(tmp_path: Path) -> ProjectPaths:
    paths = ProjectPaths(tmp_path)  # no git repository: no snapshots, and the index still renders
    executed(
        paths.reports / "01_prepare.ipynb",
        "01 · Prepare",
        {"n_rows": 400, "label": HOSTILE},
        failed=False,
    )
    executed(paths.reports / "02_train.ipynb", "02 · Train", {}, failed=True)
    (paths.reports / "02_train.ipynb.unrendered").write_text("")  # not a report: not listed
    drill = paths.reports / "incidents" / "data_noise"
    drill.mkdir(parents=True)
    (drill / "record.json").write_text(
        json.dumps(
            {
                "scenario": "data_noise",
                "family": HOSTILE,
                "detected_by": "schema",
                "rung": "dvc_cache",
                "time_to_detect_s": 0.1234,
                "time_to_recover_s": 1.5,
                "recovered": False,
            }
        )
    )
    (drill / "03_incident.html").write_text("<html></html>")
    crashed = paths.reports / "incidents" / "model_deleted"
    crashed.mkdir()
    (crashed / "03_incident.html").write_text(
        "<html></html>"
    )  # the notebook failed before its record
    (paths.reports / "incidents" / "empty").mkdir()
    return paths


def rows(page: str, table: str) -> list[str]:
    section = page.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    return [line for line in section.splitlines() if line.startswith("<tr data-")]


def test_the_index_lists_each_report_with_its_status_and_outcome(tmp_path: Path) -> None:
    page = render_index(reports(tmp_path))

    prepare, train = rows(page, "runs")
    assert '<a href="01_prepare.html">01_prepare</a>' in prepare and "01 · Prepare" in prepare
    assert (
        "2026-01-02 03:04:05" in prepare
        and "<td>12.3</td>" in prepare
        and 'class="ok">ok<' in prepare
    )
    assert '<a href="02_train.html">02_train</a>' in train and 'class="bad">failed<' in train

    noise, deleted = rows(page, "drills")
    assert '<a href="incidents/data_noise/03_incident.html">data_noise</a>' in noise
    assert 'class="bad">NOT recovered<' in noise and "<td>0.123</td>" in noise
    assert '<a href="incidents/data_noise/record.json">record</a>' in noise
    assert '<a href="incidents/model_deleted/03_incident.html">model_deleted</a>' in deleted
    assert "notebook failed, no record" in deleted

    assert rows(page, "snapshots") == [] and "none yet: mlvs snapshot create NAME" in page
    assert "2 executed notebook(s), 2 incident drill(s) (0 recovered), 0 snapshot(s)." in page


def test_user_values_reach_the_page_as_text_not_markup(tmp_path: Path) -> None:
    page = render_index(reports(tmp_path))
    assert "<script>" not in page
    assert "label=&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page  # the drill's family


def test_the_same_reports_give_the_same_page(tmp_path: Path) -> None:
    paths = reports(tmp_path)
    first = write_index(paths).read_bytes()
    assert write_index(paths).read_bytes() == first == render_index(paths).encode()
