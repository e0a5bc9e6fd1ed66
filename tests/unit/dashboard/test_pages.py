"""Pages' plain functions, called directly: the aggregation switch, vital signs, wall mode, and every refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import httpx
import pytest

from dashboard import figures
from dashboard.api_client import ApiRefusal, ApiUnavailableError, CityopsApi
from dashboard.app import find_route, render_page
from dashboard.auth import AccessRefusedError, landing_path, require
from dashboard.pages import case, crew, dispatch, wall
from domain.access import Permission, Role
from domain.work_orders import WorkOrderAction
from tests.unit.dashboard.fakes import NOW, FakeQueries, RecordingApi, context, session, vitals


def _text(component: Any) -> str:
    """Every string inside a Dash component tree."""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(_text(c) for c in component)
    children = getattr(component, "children", None)
    return _text(children) if children is not None else ""


def test_the_map_switches_to_grid_cells_above_the_marker_limit() -> None:
    few = FakeQueries(device_statuses=["online"] * 10, severities=["high"])
    snapshot = wall.map_snapshot(
        context(few, RecordingApi().client(), session(Role.COMMANDER), marker_limit=10), expanded=None
    )
    assert not snapshot.aggregate
    assert len(snapshot.devices) == 10
    assert few.asked == ["devices_for_map"]
    many = FakeQueries(device_statuses=["online"] * 9 + ["offline"] * 2, severities=["high"])
    snapshot = wall.map_snapshot(
        context(many, RecordingApi().client(), session(Role.COMMANDER), marker_limit=10), expanded=None
    )
    assert snapshot.aggregate
    assert len(snapshot.devices) == 0
    assert many.asked == ["cell_health"]
    assert int(snapshot.cells["devices"].sum()) == 11
    assert int(snapshot.cells["not_online"].sum()) == 2


def test_linked_incidents_are_read_only_for_the_expanded_parent() -> None:
    queries = FakeQueries(device_statuses=["online"], severities=["high"])
    ctx = context(queries, RecordingApi().client(), session(Role.COMMANDER))
    assert len(wall.map_snapshot(ctx, expanded=None).children) == 0
    assert "incident_children" not in queries.asked
    assert list(wall.map_snapshot(ctx, expanded="inc-0").children["id"]) == ["child-a", "child-b"]


def test_vital_signs_show_the_city_against_its_marks() -> None:
    tiles: dict[str, Any] = {tile.id: tile for tile in cast(list[Any], wall.vital_tiles(vitals(), NOW))}
    assert _text(tiles["vital-devices"].children[1]) == "97.0 %"  # decommissioned devices do not count
    assert "warn" in tiles["vital-devices"].className
    assert _text(tiles["vital-incidents"].children[1]) == "6"
    assert "1 critical" in _text(tiles["vital-incidents"])
    assert "bad" in tiles["vital-incidents"].className
    assert _text(tiles["vital-sla"].children[1]) == "90.0 %"
    assert "good" in tiles["vital-sla"].className
    assert "1.5 h" in _text(tiles["vital-times"])
    assert "2 min" in _text(tiles["vital-times"])
    # 26 alarms, 2 operators: 13 per operator-hour, beyond ISA-18.2's 12.
    assert _text(tiles["vital-alarms"].children[1]) == "13.0"
    assert "bad" in tiles["vital-alarms"].className
    quiet: dict[str, Any] = {
        t.id: t for t in cast(list[Any], wall.vital_tiles(vitals(alarms_last_hour=5, operators=0), NOW))
    }
    assert "good" in quiet["vital-alarms"].className  # nobody signed in still counts as one operator


def test_the_feed_is_most_severe_first_and_links_each_case() -> None:
    queries = FakeQueries(device_statuses=[], severities=["critical", "high", "low"])
    items = wall.feed(queries.open_incidents(), NOW, context(queries, RecordingApi().client(), None))
    assert [item.href for item in items] == ["/incidents/inc-0", "/incidents/inc-1", "/incidents/inc-2"]
    assert "sev-critical" in items[0].className
    assert "+2 linked" in _text(items[0])


@pytest.mark.parametrize(
    ("mode", "hot", "expected"),
    [("city", "kallio", "district"), ("city", None, "sla"), ("district", "kallio", "sla"), ("sla", None, "city")],
)
def test_wall_mode_rotates_city_district_sla(mode: str, hot: str | None, expected: str) -> None:
    state, navigate = wall.next_wall_state({"mode": mode}, trigger="rotate", now=NOW, pause_s=60, hot_district=hot)
    assert state["mode"] == expected
    assert navigate is None
    assert state["focus"] == (hot if expected == "district" else None)


def test_wall_mode_pauses_when_someone_interacts() -> None:
    state, _ = wall.next_wall_state({"mode": "city"}, trigger="map-move", now=NOW, pause_s=60, hot_district=None)
    assert state["mode"] == "city"
    held, _ = wall.next_wall_state(
        state, trigger="rotate", now=NOW + timedelta(seconds=30), pause_s=60, hot_district="x"
    )
    assert held["mode"] == "city"
    moved, _ = wall.next_wall_state(
        state, trigger="rotate", now=NOW + timedelta(seconds=61), pause_s=60, hot_district="x"
    )
    assert moved["mode"] == "district"
    assert moved["paused_until"] is None


def test_a_click_on_a_parent_shows_its_children_then_opens_the_case() -> None:
    parent = {"kind": "incident", "id": "p-1", "children": 3}
    state, navigate = wall.next_wall_state(
        {"mode": "city"}, trigger="map-click", now=NOW, pause_s=60, hot_district=None, clicked=parent
    )
    assert state["expanded"] == "p-1"
    assert navigate is None
    _, navigate = wall.next_wall_state(
        state, trigger="map-click", now=NOW, pause_s=60, hot_district=None, clicked=parent
    )
    assert navigate == "/incidents/p-1"
    _, navigate = wall.next_wall_state(
        {},
        trigger="map-click",
        now=NOW,
        pause_s=60,
        hot_district=None,
        clicked={"kind": "incident", "id": "c", "children": 0},
    )
    assert navigate == "/incidents/c"


# --- refusals ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    [
        (Role.VIEWER, Permission.VIEW_CITY, True),
        (Role.VIEWER, Permission.MANAGE_WORK_ORDERS, False),
        (Role.VIEWER, Permission.ACKNOWLEDGE_INCIDENT, False),
        (Role.CREW, Permission.VIEW_CITY, False),
        (Role.CREW, Permission.OWN_TASKS, True),
        (Role.DISPATCHER, Permission.MANAGE_WORK_ORDERS, True),
        (Role.COMMANDER, Permission.OWN_TASKS, False),
    ],
)
def test_require_follows_the_one_permissions_table(role: Role, permission: Permission, allowed: bool) -> None:
    principal = session(role, crew_id="crew-1" if role is Role.CREW else None).principal
    if allowed:
        assert require(principal, permission) is principal
    else:
        with pytest.raises(AccessRefusedError, match=f"a {role.value} may not"):
            require(principal, permission)
    with pytest.raises(AccessRefusedError, match="not signed in"):
        require(None, permission)


def test_a_viewer_cannot_act_on_a_work_order_and_the_api_is_never_called() -> None:
    api = RecordingApi()
    viewer = session(Role.VIEWER)
    ctx = context(FakeQueries(device_statuses=[], severities=[]), api.client(), viewer)
    message = dispatch.act(
        ctx, viewer.principal, viewer.api_token, {"id": "wo-1", "action": "cancel"}, crew_id=None, note=""
    )
    assert message == "Refused: a viewer may not manage work orders."
    assert case.acknowledge(ctx, viewer.principal, viewer.api_token, "inc-1").startswith("Refused: a viewer may not")
    assert api.requests == []


def test_a_dispatcher_acts_through_the_api_with_its_own_token() -> None:
    api = RecordingApi()
    dispatcher = session(Role.DISPATCHER, token="tok-d")
    ctx = context(FakeQueries(device_statuses=[], severities=[]), api.client(), dispatcher)
    needs_crew = dispatch.act(
        ctx, dispatcher.principal, "tok-d", {"id": "wo-1", "action": "reassign"}, crew_id=None, note=""
    )
    assert needs_crew == "Choose the crew to reassign to."
    assert api.requests == []
    crew_only = dispatch.act(
        ctx, dispatcher.principal, "tok-d", {"id": "wo-1", "action": "accept"}, crew_id=None, note=""
    )
    assert crew_only.startswith("Refused: accept is not a dispatcher's action")
    assert api.requests == []
    done = dispatch.act(
        ctx, dispatcher.principal, "tok-d", {"id": "wo-1", "action": "reassign"}, crew_id="water-2", note="closer"
    )
    assert done == "Reassign: done for wo-1, now accepted."
    request = api.requests[0]
    assert (request.method, request.url.path) == ("POST", "/work-orders/wo-1/actions")
    assert request.headers["Authorization"] == "Bearer tok-d"
    assert request.headers["Idempotency-Key"]
    assert api.bodies() == [{"action": "reassign", "note": "closer", "crew_id": "water-2"}]


def test_the_board_offers_exactly_the_dispatcher_moves_of_the_transitions_table() -> None:
    assert dispatch.dispatcher_actions("created") == [
        WorkOrderAction.DISPATCH,
        WorkOrderAction.ESCALATE,
        WorkOrderAction.CANCEL,
    ]
    assert dispatch.dispatcher_actions("on_site") == [
        WorkOrderAction.REASSIGN,
        WorkOrderAction.ESCALATE,
        WorkOrderAction.CANCEL,
    ]
    assert dispatch.dispatcher_actions("resolved") == [WorkOrderAction.ESCALATE, WorkOrderAction.START_VERIFICATION]
    assert dispatch.dispatcher_actions("verifying") == [
        WorkOrderAction.ESCALATE,
        WorkOrderAction.VERIFY,
        WorkOrderAction.FAIL_VERIFICATION,
    ]
    assert dispatch.dispatcher_actions("closed") == []
    assert [a for a, _ in crew.crew_actions("dispatched")] == [WorkOrderAction.ACCEPT, WorkOrderAction.REJECT]
    assert [a for a, _ in crew.crew_actions("en_route")] == [WorkOrderAction.ARRIVE]


def test_a_crew_acts_only_on_its_own_tasks() -> None:
    api = RecordingApi()
    mine = session(Role.CREW, crew_id="water-1", token="tok-c")
    queries = FakeQueries(device_statuses=[], severities=[])
    ctx = context(queries, api.client(), mine)
    refused = crew.crew_act(ctx, mine.principal, "tok-c", {"id": "wo-someone-else", "action": "accept"}, "")
    assert refused == "Refused: that work order is not one of your tasks."
    assert api.requests == []
    assert queries.asked == ["crew_tasks:water-1"]  # read by the session's crew, never one the page names
    assert (
        crew.crew_act(ctx, mine.principal, "tok-c", {"id": "wo-mine", "action": "verify"}, "")
        == "Refused: verify is not a crew's action."
    )
    assert (
        crew.crew_act(ctx, mine.principal, "tok-c", {"id": "wo-mine", "action": "accept"}, "on my way")
        == "Done: accept."
    )
    assert api.bodies() == [{"action": "accept", "note": "on my way"}]
    viewer = session(Role.VIEWER)
    assert crew.crew_act(ctx, viewer.principal, "t", {"id": "wo-mine", "action": "accept"}, "").startswith(
        "Refused: a viewer"
    )


def test_api_refusals_and_outages_are_said_plainly() -> None:
    refusing = RecordingApi(
        status=409, body={"status": 409, "code": "illegal_transition", "detail": "cannot accept when closed"}
    )
    dispatcher = session(Role.DISPATCHER)
    ctx = context(FakeQueries(device_statuses=[], severities=[]), refusing.client(), dispatcher)
    message = dispatch.act(ctx, dispatcher.principal, "t", {"id": "wo-1", "action": "cancel"}, crew_id=None, note="")
    assert message == "The API refused: cannot accept when closed (HTTP 409)"

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = CityopsApi(httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(unreachable)))
    with pytest.raises(ApiUnavailableError, match="not reachable"):
        down.obtain_token("a", "b")
    assert dispatch.act(
        context(FakeQueries(device_statuses=[], severities=[]), down, dispatcher),
        dispatcher.principal,
        "t",
        {"id": "wo-1", "action": "cancel"},
        crew_id=None,
        note="",
    ).startswith("Not done: the cityops API")
    no_token = dispatch.act(ctx, dispatcher.principal, None, {"id": "wo-1", "action": "cancel"}, crew_id=None, note="")
    assert no_token.startswith("Sign in again")
    with pytest.raises(ApiRefusal) as refusal:
        RecordingApi(status=200, body={"token_type": "bearer"}).client().obtain_token("a", "b")
    assert "no access_token" in str(refusal.value)


def test_pages_refuse_roles_without_their_permission() -> None:
    ctx = context(FakeQueries(device_statuses=[], severities=[]), RecordingApi().client(), None)
    crew_member = session(Role.CREW, crew_id="water-1").principal
    refused: Any = render_page(ctx, crew_member, "/")
    assert refused.id == "refused"
    assert "a crew may not view city" in _text(refused)
    assert render_page(ctx, session(Role.COMMANDER).principal, "/crew").id == "refused"
    assert render_page(ctx, None, "/").children[0].children == "Signed out"
    assert find_route("/incidents/abc") is not None
    assert find_route("/incidents/") is None
    assert find_route("/dispatch") is not None
    assert find_route("/nowhere") is None
    assert [
        landing_path(session(r, crew_id="c" if r is Role.CREW else None).principal)
        for r in (Role.CREW, Role.DISPATCHER, Role.VIEWER)
    ] == [
        "/crew",
        "/dispatch/incidents",
        "/",
    ]


def test_every_map_trace_key_has_a_legend_name() -> None:
    assert set(figures.MAP_LIVE) - {"cell summary", "focus"} <= set(figures.MAP_LEGEND)


def _patched(patch: Any) -> set[str]:
    """What a dash.Patch changes: 'data.<index>' and 'layout.<key>' entries."""
    return {".".join(str(part) for part in op["location"][:2]) for op in patch._operations}


def test_a_live_update_patches_only_what_changed_and_the_view_when_it_changed() -> None:
    queries = FakeQueries(device_statuses=["online", "offline"], severities=["high"])
    ctx = context(queries, RecordingApi().client(), session(Role.VIEWER))
    city = {"mode": "city", "focus": None, "expanded": None}
    first, digests = wall.map_update(ctx, ctx.principal(), city, None)
    live = {f"data.{figures.MAP_TRACES.index(name)}" for name in figures.MAP_LIVE}
    assert live <= _patched(first)  # the first update fills every live trace
    assert not any(f"data.{figures.MAP_TRACES.index(name)}" in _patched(first) for name in figures.MAP_STATIC)
    assert "layout.xaxis" in _patched(first)  # the first update sets the view
    unchanged, _ = wall.map_update(ctx, ctx.principal(), city, digests)
    assert _patched(unchanged) == set()  # nothing new: nothing sent
    district = {"mode": "district", "focus": "kallio", "expanded": None}
    zoomed, after = wall.map_update(ctx, ctx.principal(), district, digests)
    assert {"layout.xaxis", "layout.yaxis", "layout.uirevision"} <= _patched(zoomed)
    assert f"data.{figures.MAP_TRACES.index('focus')}" in _patched(zoomed)
    assert after["view"] == "district:kallio"
    with pytest.raises(AccessRefusedError):
        wall.map_update(ctx, session(Role.CREW, crew_id="water-1").principal, city, None)


def test_sessions_keep_the_token_server_side_and_expire() -> None:
    from dashboard.auth import SESSION_TTL, SessionStore

    clock = [NOW]
    store = SessionStore(lambda: clock[0])
    principal = session(Role.DISPATCHER).principal
    sid = store.open(principal, display_name="Li", api_token="secret-token")
    assert len(sid) >= 40  # a random id is all the browser's cookie carries
    found = store.get(sid)
    assert found is not None
    assert found.api_token == "secret-token"
    store.forget_token(sid)  # the API said 401: reading goes on, acting asks to sign in again
    after = store.get(sid)
    assert after is not None
    assert after.api_token is None
    assert store.get("forged-id") is None
    clock[0] = NOW + SESSION_TTL
    assert store.get(sid) is None
