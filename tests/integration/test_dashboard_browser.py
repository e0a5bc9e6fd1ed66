"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `cityops dashboard` (a child
process) over a real PostgreSQL seeded through the platform's own write paths (tests/integration/dashboard_city.py).

Screenshots of the wall, a case page and the crew page are written to tests/artifacts/ (git-ignored); the wall's
is copied to docs/img/wall.png for the README.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cityops.bench.dashboard import CHROMIUM, CHROMIUM_FLAGS
from cityops.children import CityopsProcess
from cityops.paths import MIGRATIONS_DIR, REPO_ROOT
from cityops.services.postgres import Postgres
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings
from store.migrations import migrate
from tests.integration.dashboard_city import PASSWORD, SeededCity, seed

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
API_CLI = REPO_ROOT / "cityops" / "cli_api.py"
WALL = {"width": 1920, "height": 1080}
PHONE = {"width": 390, "height": 844}


@dataclass
class Running:
    settings: Settings
    conninfo: str
    city: SeededCity
    base_url: str
    api: CityopsProcess | None


def _wait_http(url: str, process: CityopsProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.running:
            raise AssertionError(f"{' '.join(process.args)} exited:\n{process.output()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout_s} s:\n{process.output()[-4000:]}")


@pytest.fixture(scope="module")
def running(supervisor: Supervisor, settings: Settings) -> Iterator[Running]:
    postgres = supervisor.service("postgres")
    assert isinstance(postgres, Postgres)
    name = f"dashboard_{uuid.uuid4().hex[:8]}"
    with postgres.superuser_connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(settings.db.user))
        )
    with postgres.superuser_connect(name) as conn:
        conn.execute("CREATE EXTENSION postgis")
    conninfo = make_conninfo(settings.db.conninfo(), dbname=name)
    migrate(conninfo, MIGRATIONS_DIR, timescale=False)
    with psycopg.connect(conninfo) as conn:
        city = seed(conn, datetime.now(UTC))
    ours = settings.model_copy(
        update={
            "db": settings.db.model_copy(update={"name": name}),
            "dashboard": settings.dashboard.model_copy(update={"refresh_s": 2.0, "wall_rotate_s": 600.0}),
        }
    )
    logs = ARTIFACTS / "logs"  # kept after the run (git-ignored), for reading what the servers said
    for old in logs.glob("*.log"):
        old.unlink()
    api = CityopsProcess(ours, "api", log_dir=logs).start() if API_CLI.exists() else None
    dashboard = CityopsProcess(ours, "dashboard", log_dir=logs).start()
    base_url = f"http://{ours.dashboard.host}:{ours.dashboard.port}"
    try:
        _wait_http(base_url + "/healthz", dashboard)
        if api is not None:
            _wait_http(f"http://{ours.api.host}:{ours.api.port}/health", api)
        yield Running(ours, conninfo, city, base_url, api)
    finally:
        dashboard.stop()
        if api is not None:
            api.stop()
        with postgres.superuser_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # launch() starts Chromium on a fresh temporary profile (its own --user-data-dir) every time.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


def _signed_in(
    browser: Browser, running: Running, username: str, viewport: dict[str, int] = WALL
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=viewport, base_url=running.base_url)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    # The form posts and redirects; waiting for that navigation, not for "networkidle": a signed-in page polls
    # every refresh, and on a busy machine its callbacks may leave no half-second of quiet. A refusal stays on
    # /login and says why.
    with page.expect_navigation():
        page.click("#sign-in")
    if "/login" in page.url:
        raise AssertionError(page.inner_text("body")[:500])
    return context, page


def _map_traces(page: Page, graph: str = "wall-map") -> dict[str, int]:
    """Each trace of a Plotly graph by name, with how many points (non-null x) it draws."""
    result: dict[str, int] = page.evaluate(
        """(id) => {
            const gd = document.querySelector('#' + id + ' .js-plotly-plot');
            const counts = {};
            // _fullData: what plotly.js drew, with binary arrays decoded; null and NaN only break a line.
            for (const t of gd._fullData) counts[t.meta || t.name] = Array.from(t.x || []).filter(v => v !== null && v === v).length;
            return counts;
        }""",
        graph,
    )
    return result


def _screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def _query(running: Running, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(running.conninfo) as conn:
        return conn.execute(text, params).fetchall()


def test_the_wall_draws_the_city_with_its_layers_and_counts(browser: Browser, running: Running) -> None:
    context, page = _signed_in(browser, running, "chief")
    assert page.url.rstrip("/") == running.base_url, page.url
    page.wait_for_selector("#wall-map .js-plotly-plot .main-svg")
    page.wait_for_selector("#vital-devices .tile-value")
    traces = _map_traces(page)

    # The city's own layers: every district's label, every grid cell's outline (one ring = 5 points), roads.
    assert traces["district labels"] == running.city.districts
    cells = _query(running, "SELECT count(*) FROM grid_cells")[0][0]
    assert traces["cells"] == cells * 5
    assert traces["roads"] > 1000
    # Devices by status, as registered (fewer than the marker limit: markers, not the choropleth).
    for status in ("online", "offline", "faulty", "provisioned"):
        expected = sum(1 for s in running.city.devices.values() if s == status)
        assert traces[f"devices {status}"] == expected, (status, traces)
    assert sum(v for k, v in traces.items() if k.startswith("cells ") and k != "cells") == 0
    # Incidents by severity: the open top-level ones (the correlated parent once, its children not drawn).
    rows = _query(
        running, "SELECT severity, count(*) FROM incidents WHERE state = 'open' AND parent_id IS NULL GROUP BY severity"
    )
    for severity, n in rows:
        assert traces[f"incidents {severity}"] == n, (severity, traces)
    assert traces["linked incidents"] == 0
    assert traces["crews"] == 2
    assert traces["crew routes"] > 2  # water-1 dispatched, water-2 en route: both ways drawn

    # Vital signs and the live panels.
    assert "%" in page.inner_text("#vital-devices .tile-value")
    feed = page.locator("#wall-feed a")
    assert feed.count() >= 3
    assert "critical" in (feed.first.get_attribute("class") or "")  # the most severe first
    assert page.locator("#wall-overdue a").count() >= 1  # the flood's order is past its deadline
    assert "rotating" in page.inner_text("#wall-rotation")  # rendering the page is not an interaction
    # A wall screen does not scroll.
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight + 1")

    # The parent's linked incidents appear on demand: a first click on the parent draws them.
    page.evaluate(
        """(id) => {
            const gd = document.querySelector('#wall-map .js-plotly-plot');
            const index = gd.data.findIndex(t => (t.customdata || []).some(c => c[1] === id));
            const point = gd.data[index].customdata.findIndex(c => c[1] === id);
            gd.emit('plotly_click', {points: [{curveNumber: index, pointNumber: point, customdata: gd.data[index].customdata[point]}]});
        }""",
        running.city.parent_id,
    )
    page.wait_for_function(
        "() => document.querySelector('#wall-map .js-plotly-plot').data.find(t => t.meta === 'linked incidents').x.length > 0"
    )
    assert _map_traces(page)["linked incidents"] == len(running.city.children)

    time.sleep(2.5)  # one live refresh (refresh_s = 2) so the screenshot shows updated panels
    wall = _screenshot(page, "wall.png")
    (REPO_ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wall, REPO_ROOT / "docs" / "img" / "wall.png")

    # Wall mode by hand: the hot district (the map zooms to it and outlines it), then the SLA board.
    page.click('button:has-text("Hot district")')
    page.wait_for_selector("#wall-district-panel h3")
    page.wait_for_function(
        "() => document.querySelector('#wall-map .js-plotly-plot').data.find(t => t.meta === 'focus').x.length > 0"
    )
    hot = _query(
        running,
        "SELECT d.name FROM incidents i JOIN districts d ON d.code = i.district_code WHERE i.state = 'open'"
        " AND i.parent_id IS NULL GROUP BY d.name ORDER BY count(*) DESC LIMIT 1",
    )[0][0]
    assert hot in page.inner_text("#wall-district-panel")
    assert "paused" in page.inner_text("#wall-rotation")
    _screenshot(page, "wall-district.png")
    page.click('button:has-text("SLA board")')
    page.wait_for_selector("#wall-sla-box .js-plotly-plot .main-svg")
    assert page.is_visible("#wall-sla-box")
    assert not page.is_visible("#wall-map-box")
    assert "Water and drainage" in page.inner_text("#wall-sla-box")
    _screenshot(page, "wall-sla.png")
    context.close()


def test_clicking_an_incident_opens_its_case_with_the_whole_chain(browser: Browser, running: Running) -> None:
    context, page = _signed_in(browser, running, "chief")
    page.wait_for_selector("#wall-feed a")
    page.click("text=Incidents")  # the dispatcher's list holds cleared incidents too; this one's work is done
    page.click(f'#incidents-table a[href="/incidents/{running.city.closed_case}"]')
    page.wait_for_selector("#case-chain")
    assert page.url.endswith(f"/incidents/{running.city.closed_case}")
    stages = page.eval_on_selector_all("#case-chain li", "items => items.map(i => i.dataset.stage)")
    for stage in ("discover", "register", "dispatch", "handle", "report", "verify", "close"):
        assert stage in stages, (stage, stages)
    chain = page.inner_text("#case-chain")
    assert "reading water_level_cm" in chain  # the raw evidence
    assert "rule drainage.waterlogging.depth" in chain
    assert "≥ 15 cm" in chain
    assert "accepted by crew Drainage crew 1" in chain
    assert "Cleared leaves from the street inlet" in chain  # the crew's note
    assert "incident cleared" in chain  # the sensor saw the water go down
    assert "resolved → verifying" in chain
    assert "verifying → closed" in chain
    assert "at 60." in chain  # a transition's position
    summary = page.inner_text("#case-summary")
    assert "verified" in summary
    assert "closed after" in summary
    page.wait_for_selector(".case-series .js-plotly-plot")
    evidence = _map_traces(page, "page .case-series")  # the first evidence chart
    assert evidence.get("evidence", 0) >= 2
    assert evidence.get("readings", 0) >= 10
    page.set_viewport_size({"width": 1920, "height": 1400})
    _screenshot(page, "case.png")
    context.close()


def test_a_crew_sees_only_its_own_tasks(browser: Browser, running: Running) -> None:
    context, page = _signed_in(browser, running, "crew1", PHONE)
    assert page.url.endswith("/crew")
    page.wait_for_selector("#crew-tasks button")
    page.inner_text("#crew-tasks")
    content = page.content()
    assert page.locator(f'[id*="{running.city.crew_task}"]').count() >= 1
    # Nothing of the other crew's order in the page, nor in any callback answer the page received.
    assert running.city.other_crew_task not in content
    assert "water-2" not in content
    page.wait_for_selector("#crew-task .crew-map .js-plotly-plot")
    _screenshot(page, "crew.png")
    # The crew cannot open the wall or the board.
    page.goto("/")
    page.wait_for_selector("#refused")
    page.goto("/dispatch/work-orders")
    page.wait_for_selector("#refused")
    context.close()


@pytest.mark.skipif(not API_CLI.exists(), reason="cityops/cli_api.py (the HTTP API) does not exist yet")
def test_a_crew_accepts_its_task_through_the_api_and_the_board_shows_it(browser: Browser, running: Running) -> None:
    task = running.city.crew_task
    context, page = _signed_in(browser, running, "crew1", PHONE)
    page.wait_for_selector(f'#crew-task button[id*="{task}"][id*="accept"]')
    page.fill("#crew-note", "On it, 10 minutes away.")
    page.click(f'#crew-task button[id*="{task}"][id*="accept"]')
    page.wait_for_function("() => document.querySelector('#crew-result').innerText.startsWith('Done')", timeout=15000)
    assert _query(running, "SELECT state FROM work_orders WHERE id = %s", (task,)) == [("accepted",)]
    note = _query(
        running,
        "SELECT actor_kind, actor_id, note FROM work_order_events WHERE work_order_id = %s AND action = 'accept'",
        (task,),
    )
    assert note == [("crew", "water-1", "On it, 10 minutes away.")]
    context.close()

    context, page = _signed_in(browser, running, "li.dispatch")
    page.goto("/dispatch/work-orders")
    card = page.locator(f'[id*="board-card"][id*="{task}"]')
    card.wait_for()
    assert card.get_attribute("data-state") == "accepted"
    _screenshot(page, "board.png")

    # A dispatcher's action from the board: escalate, confirmed with a note, through the API.
    page.click(f'[id*="board-card"][id*="{task}"] button:has-text("Escalate")')
    page.wait_for_selector("#board-panel-title")
    page.fill("#board-note", "crew slow to arrive")
    page.click("#board-confirm")
    page.wait_for_function("() => document.querySelector('#board-result').innerText.startsWith('Escalate: done')")
    assert _query(running, "SELECT priority, escalation_level FROM work_orders WHERE id = %s", (task,)) == [("P1", 1)]
    assert _query(
        running,
        "SELECT actor_id, note FROM work_order_events WHERE work_order_id = %s AND action = 'escalate'",
        (task,),
    ) == [("li.dispatch", "crew slow to arrive")]

    # Acknowledging an incident from the list, through the API.
    page.goto("/dispatch/incidents")
    button = page.locator("#incidents-table button").first
    button.wait_for()
    incident = json.loads(button.get_attribute("id") or "{}")["id"]
    button.click()
    page.wait_for_function("() => document.querySelector('#inc-result').innerText === 'Acknowledged.'")
    assert _query(running, "SELECT acknowledged_by FROM incidents WHERE id = %s", (incident,)) == [("li.dispatch",)]

    page.goto("/dispatch/evaluation")
    page.wait_for_selector("#evaluation-table")
    assert "Water and drainage" in page.inner_text("#evaluation-table")
    page.wait_for_selector("#eval-body .js-plotly-plot .main-svg")
    _screenshot(page, "evaluation.png")
    context.close()


def test_a_viewer_cannot_trigger_an_action(browser: Browser, running: Running) -> None:
    task = running.city.crew_task
    before = _query(running, "SELECT state, version FROM work_orders WHERE id = %s", (task,))
    context, page = _signed_in(browser, running, "watcher")
    page.goto("/dispatch/work-orders")
    page.wait_for_selector(".board-column .card")
    assert page.locator(".card-actions button").count() == 0  # read only: no action is offered
    page.goto("/dispatch/incidents")
    page.wait_for_selector("#incidents-table")
    assert page.locator("#incidents-table button").count() == 0
    # Reading is allowed: a device's series from the minute rollups, with the rule's levels drawn across it.
    page.goto("/dispatch/series?device=wl-00")
    page.wait_for_selector("#series-figure .js-plotly-plot .main-svg")
    series = _map_traces(page, "series-figure")
    assert series["mean"] >= 10  # 6 hours by default: minute buckets, an hour of 5-minute readings
    levels = page.evaluate("document.querySelector('#series-figure .js-plotly-plot').layout.shapes.map(s => s.y0)")
    assert sorted(levels) == [5, 15, 30, 50]
    _screenshot(page, "series.png")

    # A forged callback request, as if the confirm button had been pressed: refused by the dashboard itself.
    dependencies = page.request.get("/_dash-dependencies").json()
    confirm = next(d for d in dependencies if any(i["id"] == "board-confirm" for i in d["inputs"]))
    outputs = [
        {"id": o.split(".")[0], "property": o.split(".")[1].split("@")[0]}
        for o in confirm["output"].strip(".").split("...")
    ]
    payload = {
        "output": confirm["output"],
        "outputs": outputs,
        "inputs": [{"id": "board-confirm", "property": "n_clicks", "value": 1}],
        "changedPropIds": ["board-confirm.n_clicks"],
        "state": [
            {"id": "board-pending", "property": "data", "value": {"id": task, "action": "cancel"}},
            {"id": "board-crew", "property": "value", "value": None},
            {"id": "board-note", "property": "value", "value": "forged"},
            {"id": "board-refresh", "property": "data", "value": 0},
        ],
    }
    answer = page.request.post(
        "/_dash-update-component", data=json.dumps(payload), headers={"Content-Type": "application/json"}
    )
    assert answer.ok, answer.text()
    assert "Refused: a viewer may not manage work orders" in answer.text()
    assert _query(running, "SELECT state, version FROM work_orders WHERE id = %s", (task,)) == before
    context.close()

    # Nobody signed in: every Dash endpoint answers 401, pages send to the sign-in form.
    anonymous = httpx.post(running.base_url + "/_dash-update-component", json=payload)
    assert anonymous.status_code == 401
    assert httpx.get(running.base_url + "/dispatch/work-orders").status_code == 302
