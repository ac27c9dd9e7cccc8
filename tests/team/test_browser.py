"""The project in a real browser: the reports index and the MLflow UI of `make ui`, rendered by Chromium.

One trained workspace gets a drill and a snapshot, the way a user makes them;
its `reports/` is then served on loopback and opened in headless Chromium, and
`make ui` is started on it. The tests read what the browser rendered. Chromium
comes from the system's packages (`.ci/system-deps`): without it these tests fail.
"""

from __future__ import annotations

import json
import struct
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import clean_env, copy_workspace, mlvs

from mlvs.ops.reports_index import notebook_title

from ._browser import (
    Chromium,
    Started,
    answers,
    chromium,
    free_port,
    http,
    listening_addresses,
    make_target,
    static_server,
    wait_until,
)

pytestmark = pytest.mark.slow

SCENARIO = "model_deleted"
SNAPSHOT, MESSAGE = "reviewed", "after the first drill"
ROWS = """JSON.stringify(Object.fromEntries(['runs', 'drills', 'snapshots'].map(id =>
  [id, [...document.querySelectorAll('#' + id + ' tr')].slice(1).map(tr => [...tr.cells].map(td => td.innerText.trim()))])))"""


@dataclass
class UI:
    """`make ui` running on a workspace, and its JSON API."""

    server: Started
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, route: str, **query: str) -> tuple[int, bytes]:
        status, payload, _ = http(
            f"{self.url}/{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        )
        return status, payload

    def api(self, endpoint: str, body: dict | None = None, **query: str) -> dict:
        if body is None:
            status, payload = self.get(f"ajax-api/2.0/mlflow/{endpoint}", **query)
        else:
            status, payload, _ = http(f"{self.url}/ajax-api/2.0/mlflow/{endpoint}", "POST", body)
        assert status == 200, payload[:500]
        return json.loads(payload)


@dataclass
class Story:
    """A trained workspace after a drill and a snapshot, its index after each step, and `make ui` on it."""

    root: Path
    index_after_pipeline: str
    index_after_drill: str
    artifacts: Path
    ui: UI

    @property
    def reports(self) -> Path:
        return self.root / "reports"


@pytest.fixture(scope="module")
def story(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    base = tmp_path_factory.mktemp("browser")
    root = copy_workspace(_trained_template, base / "ws")
    index = root / "reports" / "index.html"
    after_pipeline = index.read_text()
    # `make ui` first, as a user keeps it open: it starts while the drill runs.
    port = free_port()
    server = make_target(root, "ui", base / "ui.log", clean_env(root), UI_PORT=str(port))
    try:
        drill = mlvs(root, "drill", SCENARIO)
        assert drill.returncode == 0, drill.stderr[-3000:]
        after_drill = index.read_text()
        snapshot = mlvs(root, "snapshot", "create", SNAPSHOT, "-m", MESSAGE)
        assert snapshot.returncode == 0, snapshot.stderr[-3000:]
        artifacts = base / "artifacts"
        artifacts.mkdir()
        yield Story(root, after_pipeline, after_drill, artifacts, UI(server, port))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    with chromium(tmp_path_factory.mktemp("chromium")) as opened:
        yield opened


@pytest.fixture(scope="module")
def served_reports(story: Story) -> Iterator[str]:
    with static_server(story.reports) as url:
        yield url


# --- the reports index ---------------------------------------------------------------


def test_the_pipeline_a_drill_and_a_snapshot_each_rebuild_the_index(story: Story) -> None:
    assert 'href="01_prepare.html"' in story.index_after_pipeline
    assert 'href="02_train.html"' in story.index_after_pipeline
    assert SCENARIO not in story.index_after_pipeline
    assert f'href="incidents/{SCENARIO}/03_incident.html"' in story.index_after_drill
    assert SNAPSHOT not in story.index_after_drill
    assert f'data-snapshot="{SNAPSHOT}"' in (story.reports / "index.html").read_text()


def test_the_index_in_chromium_lists_the_runs_the_drill_and_the_snapshot(
    story: Story, browser: Chromium, served_reports: str
) -> None:
    browser.open(served_reports + "index.html")
    assert browser.status() == 200
    assert browser.evaluate("document.title") == "mlvs reports"
    tables = json.loads(browser.evaluate(ROWS))

    runs = {row[0]: row for row in tables["runs"]}
    assert set(runs) == {"01_prepare", "02_train"}
    assert runs["01_prepare"][1] == "01 · Prepare the customer data"
    assert runs["02_train"][1] == "02 · Train and evaluate the churn model"
    assert all(row[5] == "ok" for row in runs.values())

    record = json.loads((story.reports / "incidents" / SCENARIO / "record.json").read_text())
    [drill] = tables["drills"]
    assert drill[0] == SCENARIO and drill[1] == "model"
    assert drill[2:4] == [record["detected_by"], record["rung"]]
    assert drill[6] == "recovered"

    [snapshot] = tables["snapshots"]
    assert snapshot[0] == SNAPSHOT and snapshot[2:4] == ["made", MESSAGE]
    assert snapshot[4] == "1"  # the model version it recorded
    assert browser.evaluate("document.getElementById('summary').innerText") == (
        "2 executed notebook(s), 1 incident drill(s) (1 recovered), 1 snapshot(s)."
    )


def test_the_rendered_index_is_kept_as_a_screenshot(
    story: Story, browser: Chromium, served_reports: str
) -> None:
    from PIL import Image

    browser.open(served_reports + "index.html")
    shot = browser.screenshot(story.artifacts / "reports-index.png")
    payload = shot.read_bytes()
    assert payload[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", payload[16:24])
    assert (width, height) == (1280, 900)
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, table rules, the outcome's colour
        green = sum(n for n, (r, g, b) in colours if g > 100 and g > r + 40 and g > b + 40)
        assert green > 20, "the green 'recovered' outcome is not on the page"


def test_every_link_of_the_index_opens_its_report_in_chromium(
    story: Story, browser: Chromium, served_reports: str
) -> None:
    browser.open(served_reports + "index.html")
    links = browser.evaluate("[...document.links].map(a => a.href)")
    assert links and all(link.startswith(served_reports) for link in links)
    assert browser.evaluate(
        "[...document.links].every(a => !/^([a-z]+:|\\/)/i.test(a.getAttribute('href')))"
    ), "every link is relative, so the index works from disk and from any server"
    opened = {"html": 0, "json": 0, "ipynb": 0}
    for link in links:
        relative = Path(urllib.parse.unquote(link[len(served_reports) :]))
        suffix = relative.suffix.lstrip(".")
        if suffix == "ipynb":  # a download, not a page: fetch it as the browser would
            status, payload, _ = http(link)
            assert status == 200
            assert nbformat.reads(payload.decode(), as_version=4) == nbformat.read(
                story.reports / relative, 4
            )
        elif suffix == "html":
            browser.open(link)
            assert browser.status() == 200, link
            title = notebook_title(
                json.loads((story.reports / relative).with_suffix(".ipynb").read_text())
            )
            assert title and browser.evaluate("document.title") == title
            assert (
                browser.evaluate("document.querySelector('h1').innerText.replace(/¶$/, '').trim()")
                == title
            )
            assert browser.evaluate("document.querySelectorAll('.jp-Cell').length") > 5
        else:
            assert suffix == "json", link
            browser.open(link)
            assert json.loads(browser.evaluate("document.body.innerText"))["scenario"] == SCENARIO
        opened[suffix] += 1
    assert opened == {"html": 3, "json": 1, "ipynb": 2}


# --- the MLflow UI of `make ui` ----------------------------------------------------------


@pytest.fixture(scope="module")
def ui(story: Story) -> UI:
    wait_until(lambda: answers(f"{story.ui.url}/health"), 180, "the MLflow UI", story.ui.server)
    return story.ui


def runs_by_name(ui: UI) -> tuple[str, dict[str, dict]]:
    experiment = ui.api("experiments/get-by-name", experiment_name="mlvs")["experiment"][
        "experiment_id"
    ]
    runs = ui.api("runs/search", {"experiment_ids": [experiment], "max_results": 100})["runs"]
    return experiment, {run["info"]["run_name"]: run for run in runs}


def test_make_ui_listens_on_loopback_and_serves_its_web_app(ui: UI) -> None:
    assert listening_addresses(ui.port) == {"127.0.0.1"}
    status, page = ui.get("")
    assert status == 200 and b'id="root"' in page and b"<title>MLflow</title>" in page


def test_make_ui_serves_each_run_with_its_executed_notebook(story: Story, ui: UI) -> None:
    _, runs = runs_by_name(ui)
    reports = {
        "01_prepare": story.reports / "01_prepare.ipynb",
        "02_train": story.reports / "02_train.ipynb",
        "03_incident": story.reports / "incidents" / SCENARIO / "03_incident.ipynb",
    }
    assert set(reports) <= set(runs)
    for name, report in reports.items():
        run_id = runs[name]["info"]["run_id"]
        assert ui.api("runs/get", run_id=run_id)["run"]["info"]["status"] == "FINISHED"
        listed = {
            f["path"] for f in ui.api("artifacts/list", run_uuid=run_id, path="notebook")["files"]
        }
        assert {f"notebook/{name}.ipynb", f"notebook/{name}.html"} <= listed
        status, payload = ui.get("get-artifact", path=f"notebook/{name}.ipynb", run_uuid=run_id)
        assert status == 200 and payload == report.read_bytes()


def test_the_run_page_of_make_ui_renders_in_chromium(ui: UI, browser: Chromium) -> None:
    experiment, runs = runs_by_name(ui)
    run_id = runs["02_train"]["info"]["run_id"]
    browser.open(f"{ui.url}/#/experiments/{experiment}/runs/{run_id}")
    assert browser.wait_for("document.body.innerText.includes('02_train')", timeout=60)
    assert browser.wait_for("document.body.innerText.includes('test_roc_auc')", timeout=30)
