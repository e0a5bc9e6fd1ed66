"""The wall (``/``): the whole city at a glance for command staff, on a large screen read from across a room.

A map of the city's districts and unit grid with devices by status (a grid-cell choropleth at city scale),
incidents by severity (a correlated parent once; its linked incidents on demand) and crews with their task and
route; a strip of vital signs; the live incident feed; overdue work orders. In wall mode the view rotates
between the city, the hottest district and the SLA board, and pauses while someone interacts.

Callbacks are thin wrappers; the work is in the plain functions below (``vital_tiles``, ``feed``, ``overdue``,
``map_update``, ``next_wall_state``), which the unit tests call directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.auth import AccessRefusedError, require
from dashboard.context import Context
from dashboard.format import age, count, duration, each_row, is_missing, local_time, share
from dashboard.queries import VitalSigns
from domain.access import Permission, Principal
from domain.geo import Position

MODES = ("city", "district", "sla")
MODE_LABELS = {"city": "City overview", "district": "Hot district", "sla": "SLA board"}
FEED_LENGTH = 11
OVERDUE_LENGTH = 7


# --- layout ---------------------------------------------------------------------------------------------------------
def layout(context: Context, principal: Principal) -> html.Div:
    require(principal, Permission.VIEW_CITY)
    settings = context.config.settings
    now = context.now()
    snapshot = map_snapshot(context, expanded=None)
    state = {"mode": "city", "paused_until": None, "focus": None, "expanded": None, "since": now.isoformat()}
    return html.Div(
        className="wall",
        children=[
            html.Div(
                className="wall-top",
                children=[
                    html.Div(
                        [
                            html.Span(context.geometry.display_name, className="wall-city"),
                            html.Span(" · City operations ", className="wall-title"),
                            html.Span("城市运行一网统管", className="zh"),
                        ]
                    ),
                    html.Div(
                        className="wall-modes",
                        children=[
                            html.Button(
                                MODE_LABELS[m], id={"type": "wall-mode", "mode": m}, className="mode-button", n_clicks=0
                            )
                            for m in MODES
                        ],
                    ),
                    html.Div(id="wall-rotation", className="wall-rotation", children="wall mode: rotating"),
                    html.Div(
                        id="wall-clock", className="wall-clock", children=local_time(now, context.zone, seconds=False)
                    ),
                ],
            ),
            html.Div(id="wall-vitals", className="vitals", children=vital_tiles(_vitals(context, now), now)),
            html.Div(
                className="wall-main",
                children=[
                    html.Div(
                        className="wall-left",
                        children=[
                            html.Div(
                                id="wall-map-box",
                                className="wall-map-box",
                                children=[
                                    dcc.Graph(
                                        id="wall-map",
                                        figure=figures.city_map(context.geometry, snapshot),
                                        config={"displaylogo": False, "scrollZoom": True, "displayModeBar": False},
                                        style={"height": "100%", "width": "100%"},
                                    ),
                                    html.Div(
                                        id="wall-district-panel", className="district-panel", style={"display": "none"}
                                    ),
                                ],
                            ),
                            html.Div(
                                id="wall-sla-box",
                                className="wall-sla-box",
                                style={"display": "none"},
                                children=dcc.Graph(
                                    id="wall-sla", config={"displayModeBar": False}, style={"height": "100%"}
                                ),
                            ),
                        ],
                    ),
                    html.Div(
                        className="wall-right",
                        children=[
                            html.H2(["Live incidents ", html.Span("实时事件", className="zh")]),
                            html.Div(
                                id="wall-feed",
                                className="feed",
                                children=feed(context.queries.open_incidents(limit=FEED_LENGTH), now, context),
                            ),
                            html.H2(["Overdue work orders ", html.Span("超时工单", className="zh")]),
                            html.Div(
                                id="wall-overdue",
                                className="overdue",
                                children=overdue(
                                    context.queries.overdue_work_orders(now=now, limit=OVERDUE_LENGTH), now, context
                                ),
                            ),
                        ],
                    ),
                ],
            ),
            dcc.Interval(id="wall-tick", interval=int(settings.refresh_s * 1000)),
            dcc.Interval(id="wall-rotate", interval=int(settings.wall_rotate_s * 1000)),
            dcc.Store(id="wall-state", data=state),
            dcc.Store(id="wall-digest", data={**map_digests(snapshot), "view": "city:None"}),
        ],
    )


def _vitals(context: Context, now: datetime) -> VitalSigns:
    return context.queries.vital_signs(now=now, day_start=context.day_start(now))


# --- vital signs ----------------------------------------------------------------------------------------------------
def _tile(label: str, label_zh: str, value: str, detail: Any, *, tone: str = "", tile_id: str) -> html.Div:
    return html.Div(
        className=f"tile {tone}".strip(),
        id=tile_id,
        children=[
            html.Div([label, html.Span(label_zh, className="zh")], className="tile-label"),
            html.Div(value, className="tile-value"),
            html.Div(detail, className="tile-detail"),
        ],
    )


def vital_tiles(vitals: VitalSigns, now: datetime) -> list[html.Div]:
    """The strip of city vital signs (城市生命体征), one tile each."""
    statuses = vitals.devices_by_status
    online_share = vitals.devices_online_share
    down = statuses.get("offline", 0) + statuses.get("faulty", 0)
    online_tone = (
        "" if online_share is None else "good" if online_share >= 0.98 else "warn" if online_share >= 0.9 else "bad"
    )

    by_severity = vitals.incidents.groupby("severity")["n"].sum() if len(vitals.incidents) else pd.Series(dtype=int)
    chips = [
        html.Span(f"{int(by_severity.get(s, 0))} {s}", className=f"chip sev-{s}")
        for s in figures.SEVERITY_ORDER
        if int(by_severity.get(s, 0))
    ]
    families = (
        vitals.incidents.groupby("family")["n"].sum().sort_values(ascending=False).head(3)
        if len(vitals.incidents)
        else pd.Series(dtype=int)
    )
    open_total = int(by_severity.sum()) if len(by_severity) else 0
    incident_tone = "bad" if by_severity.get("critical", 0) else "warn" if by_severity.get("high", 0) else ""

    states = (
        dict(zip(vitals.work_orders["state"], vitals.work_orders["n"], strict=True)) if len(vitals.work_orders) else {}
    )
    awaiting = sum(int(states.get(s, 0)) for s in ("created", "rejected", "reopened"))
    with_crew = sum(int(states.get(s, 0)) for s in ("dispatched", "accepted", "en_route", "on_site"))
    checking = sum(int(states.get(s, 0)) for s in ("resolved", "verifying"))
    closed = int(states.get("closed", 0))
    open_orders = awaiting + with_crew + checking

    on_time = vitals.on_time_share
    sla_tone = (
        "" if on_time is None else "good" if on_time >= figures.SLA_TARGET else "warn" if on_time >= 0.75 else "bad"
    )
    rate = vitals.alarms_per_operator_hour
    alarm_tone = "good" if rate <= figures.ALARM_ACCEPTABLE else "warn" if rate <= figures.ALARM_UNMANAGEABLE else "bad"
    return [
        _tile(
            "Devices online",
            "设备在线率",
            share(online_share),
            f"{count(statuses.get('online', 0))} of {count(vitals.devices_total)} · {count(down)} down",
            tone=online_tone,
            tile_id="vital-devices",
        ),
        _tile(
            "Readings",
            "数据流量",
            f"{vitals.readings_per_s:,.1f}/s",
            "over the last 5 full minutes",
            tile_id="vital-readings",
        ),
        _tile(
            "Open incidents",
            "未结事件",
            count(open_total),
            [*chips, html.Div(" · ".join(f"{f} {int(n)}" for f, n in families.items()), className="tile-sub")],
            tone=incident_tone,
            tile_id="vital-incidents",
        ),
        _tile(
            "Work orders",
            "工单",
            count(open_orders),
            [
                dcc.Graph(
                    figure=figures.work_order_bar(vitals.work_orders[vitals.work_orders["state"] != "cancelled"]),
                    config={"displayModeBar": False, "staticPlot": True},
                    className="tile-bar",
                ),
                html.Div(
                    f"{awaiting} awaiting · {with_crew} with crews · {checking} verifying · {closed} closed today"
                ),
            ],
            tile_id="vital-work-orders",
        ),
        _tile(
            "On time today",
            "今日按时率",
            share(on_time) if on_time is not None else "—",
            f"{vitals.deadlines_met} of {vitals.deadlines_due} deadlines met",
            tone=sla_tone,
            tile_id="vital-sla",
        ),
        _tile(
            "Mean time to resolve",
            "平均用时",
            duration(vitals.mean_resolve_s),
            [
                html.Div(
                    f"to dispatch {duration(vitals.mean_dispatch_s)} · to arrive {duration(vitals.mean_arrive_s)}"
                ),
                html.Div("work orders of the last 24 h", className="tile-sub"),
            ],
            tile_id="vital-times",
        ),
        html.Div(
            className=f"tile tile-gauge {alarm_tone}",
            id="vital-alarms",
            children=[
                html.Div(["Alarms per operator-hour", html.Span("报警负荷", className="zh")], className="tile-label"),
                html.Div(f"{rate:.1f}", className="tile-value"),
                dcc.Graph(
                    figure=figures.alarm_load_gauge(rate),
                    config={"displayModeBar": False, "staticPlot": True},
                    className="tile-gauge-graph",
                ),
                html.Div(
                    f"{vitals.alarms_last_hour} in the last hour, {max(1, vitals.operators)} operator(s) · "
                    "ISA-18.2: ≤ 6 fine, > 12 unmanageable",
                    className="tile-detail",
                ),
            ],
        ),
    ]


# --- the feed and the overdue panel -----------------------------------------------------------------------------------
def feed(incidents: pd.DataFrame, now: datetime, context: Context) -> list[Any]:
    """Open incidents, most severe first and newest first within a severity; each opens its case page."""
    if not len(incidents):
        return [html.Div("No open incidents.", className="empty")]
    items = []
    for row in each_row(incidents.head(FEED_LENGTH)):
        linked = f" · +{int(row.children)} linked" if int(row.children) else ""
        order = (
            figures.STATE_LABELS.get(str(row.work_order_state), str(row.work_order_state))
            if not is_missing(row.work_order_id)
            else "no work order"
        )
        place = context.geometry.district_name(row.district_code if not is_missing(row.district_code) else None)
        items.append(
            dcc.Link(
                href=f"/incidents/{row.id}",
                className=f"feed-item sev-{row.severity}",
                id={"type": "feed-item", "id": str(row.id)},
                children=[
                    html.Div(
                        [
                            html.Span(str(row.severity).upper(), className="feed-severity"),
                            html.Span(str(row.title), className="feed-title"),
                        ]
                    ),
                    html.Div(
                        f"{place} · {age(row.opened_at, now)} · {order}{linked}"
                        + (" · ✓ ack" if bool(row.acknowledged) else ""),
                        className="feed-detail",
                    ),
                ],
            )
        )
    return items


def _code(value: Any) -> str | None:
    return None if is_missing(value) else str(value)


def overdue(orders: pd.DataFrame, now: datetime, context: Context) -> list[Any]:
    if not len(orders):
        return [html.Div("Nothing overdue.", className="empty good")]
    items = []
    for row in each_row(orders.head(OVERDUE_LENGTH)):
        crew = row.crew_name if not is_missing(row.crew_name) else "no crew"
        escalated = f" · escalated ×{int(row.escalation_level)}" if int(row.escalation_level) else ""
        items.append(
            dcc.Link(
                href=f"/incidents/{row.incident_id}",
                className=f"overdue-item pri-{row.priority}",
                children=[
                    html.Div(
                        [
                            html.Span(str(row.priority), className="overdue-priority"),
                            html.Span(str(row.title), className="feed-title"),
                        ]
                    ),
                    html.Div(
                        f"{row.stage} overdue by {duration(row.overdue_s)} · "
                        f"{figures.STATE_LABELS.get(str(row.state), row.state)} · {crew} · "
                        f"{context.geometry.district_name(_code(row.district_code))}"
                        f"{escalated}",
                        className="feed-detail",
                    ),
                ],
            )
        )
    return items


# --- the map ----------------------------------------------------------------------------------------------------------
def map_snapshot(context: Context, *, expanded: str | None) -> figures.MapSnapshot:
    """What the map shows now: markers up to ``map_marker_limit`` devices, the grid-cell choropleth beyond."""
    queries = context.queries
    aggregate = queries.device_count() > context.config.settings.map_marker_limit
    devices = queries.cell_health() if aggregate else queries.devices_for_map()
    incidents = queries.open_incidents()
    children = queries.incident_children([expanded]) if expanded else incidents.iloc[0:0]
    crews = queries.crews_on_duty()
    routes: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    for row in each_row(crews):
        if is_missing(row.work_order_id) or is_missing(row.lon) or is_missing(row.task_lon):
            continue
        if row.task_state in ("dispatched", "accepted", "en_route"):
            routes[str(row.crew_id)] = context.route(
                Position(float(row.lon), float(row.lat)), Position(float(row.task_lon), float(row.task_lat))
            )
    empty_devices = pd.DataFrame(
        {c: [] for c in ("id", "type_code", "status", "lon", "lat", "district_code", "battery_pct")}
    )
    return figures.MapSnapshot(
        devices=empty_devices if aggregate else devices,
        cells=devices
        if aggregate
        else pd.DataFrame({"grid_cell_code": [], "devices": [], "not_online": [], "open_incidents": []}),
        incidents=incidents,
        children=children,
        crews=crews,
        routes=routes,
        aggregate=aggregate,
    )


# Live trace groups: patched only when what they show changed since the last update.
_GROUPS: Mapping[str, tuple[str, ...]] = {
    "cells": tuple(n for n in figures.MAP_LIVE if n.startswith("cell")),
    "devices": tuple(n for n in figures.MAP_LIVE if n.startswith("devices")),
    "incidents": tuple(n for n in figures.MAP_LIVE if n.startswith("incidents") or n == "linked incidents"),
    "crews": ("crews", "crew routes"),
}


def _digest(frame: pd.DataFrame | Mapping[str, Any]) -> str:
    if isinstance(frame, pd.DataFrame):
        raw = frame.to_json(orient="split", date_format="iso", default_handler=str).encode()
    else:
        raw = json.dumps(frame, sort_keys=True, default=str).encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def map_digests(snapshot: figures.MapSnapshot) -> dict[str, str]:
    return {
        "cells": _digest(snapshot.cells),
        "devices": _digest(snapshot.devices),
        "incidents": _digest(snapshot.incidents) + _digest(snapshot.children),
        "crews": _digest(snapshot.crews) + _digest({k: list(v) for k, v in snapshot.routes.items()}),
    }


def map_update(
    context: Context,
    principal: Principal | None,
    state: Mapping[str, Any],
    digests: Mapping[str, str] | None,
) -> tuple[Patch, dict[str, str]]:
    """A Patch of the live traces whose content changed, and of the axes when the view changed.

    ``digests`` say what the browser's figure shows now (stored beside it, updated with it): a response the
    browser drops (a newer tick overtook it) changes neither, so the next update patches what is still stale.
    """
    require(principal, Permission.VIEW_CITY)
    focus = state.get("focus") if state.get("mode") == "district" else None
    snapshot = map_snapshot(context, expanded=state.get("expanded"))
    fresh = map_digests(snapshot)
    fresh["view"] = f"{state.get('mode')}:{focus}"
    mode_changed = not digests or digests.get("view") != fresh["view"]
    stale = [group for group in _GROUPS if mode_changed or not digests or digests.get(group) != fresh[group]]
    patch = Patch()
    if not stale:
        return patch, fresh  # the usual tick: nothing changed, nothing is built or sent
    live = figures.live_map_traces(context.geometry, snapshot, focus=focus)
    for group in stale:
        for name in _GROUPS[group]:
            index = figures.MAP_TRACES.index(name)
            patch["data"][index] = live[index - figures.FIRST_LIVE_TRACE].to_plotly_json()
    if mode_changed:
        focus_index = figures.MAP_TRACES.index("focus")
        patch["data"][focus_index] = live[focus_index - figures.FIRST_LIVE_TRACE].to_plotly_json()
        view = figures.map_layout(context.geometry, focus=focus, revision=f"{state.get('mode')}:{focus}")
        patch["layout"]["xaxis"]["range"] = view["xaxis"]["range"]
        patch["layout"]["yaxis"]["range"] = view["yaxis"]["range"]
        patch["layout"]["uirevision"] = view["uirevision"]
    return patch, fresh


def district_panel(context: Context, district: str | None, now: datetime) -> list[Any]:
    """The hot district's numbers, over the zoomed map."""
    if not district:
        return [html.Div("No district has open incidents.", className="empty good")]
    incidents = context.queries.open_incidents()
    here = incidents[incidents["district_code"] == district] if len(incidents) else incidents
    overdue_orders = context.queries.overdue_work_orders(now=now, limit=500)
    late = overdue_orders[overdue_orders["district_code"] == district] if len(overdue_orders) else overdue_orders
    by_severity = here.groupby("severity").size() if len(here) else pd.Series(dtype=int)
    return [
        html.H3([context.geometry.district_name(district), html.Span(" hot district · 重点区域", className="zh")]),
        html.Div(
            [html.Span(f"{int(by_severity.get(s, 0))} {s}", className=f"chip sev-{s}") for s in figures.SEVERITY_ORDER]
        ),
        html.Div(f"{len(here)} open incidents · {len(late)} overdue work orders", className="tile-detail"),
        html.Ul([html.Li(f"{r.severity}: {r.title} ({age(r.opened_at, now)})") for r in each_row(here.head(6))]),
    ]


# --- wall mode --------------------------------------------------------------------------------------------------------
def next_wall_state(
    state: Mapping[str, Any],
    *,
    trigger: str | None,
    now: datetime,
    pause_s: float,
    hot_district: str | None,
    chosen_mode: str | None = None,
    clicked: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The wall's next state and, if a click asked for it, the page to open.

    ``trigger``: ``rotate`` (the timer), ``mode`` (a mode button; ``chosen_mode``), ``map-click`` (``clicked`` is
    the point's customdata) or ``map-move`` (zoom, pan). Any person's interaction pauses the rotation for
    ``pause_s``; the timer then moves city → hot district → SLA board → city, skipping the district view when no
    district has open incidents.
    """
    new = dict(state)
    paused_until = datetime.fromisoformat(state["paused_until"]) if state.get("paused_until") else None
    navigate: str | None = None
    if trigger == "rotate":
        if paused_until is not None and now < paused_until:
            return new, None
        new["paused_until"] = None
        mode = str(state.get("mode", "city"))
        following = MODES[(MODES.index(mode) + 1) % len(MODES)] if mode in MODES else "city"
        if following == "district" and not hot_district:
            following = "sla"
        new["mode"] = following
        new["focus"] = hot_district if following == "district" else None
        return new, None
    new["paused_until"] = (now + timedelta(seconds=pause_s)).isoformat()
    if trigger == "mode" and chosen_mode in MODES:
        new["mode"] = chosen_mode
        new["focus"] = hot_district if chosen_mode == "district" else None
    elif trigger == "map-click" and clicked:
        kind = clicked.get("kind")
        if kind == "incident":
            incident_id = str(clicked.get("id"))
            if int(clicked.get("children", 0)) and state.get("expanded") != incident_id:
                new["expanded"] = incident_id  # first click on a parent shows its linked incidents
            else:
                navigate = f"/incidents/{incident_id}"
    return new, navigate


def _clicked_point(click: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not click or not click.get("points"):
        return None
    data = click["points"][0].get("customdata")
    if not isinstance(data, list) or not data:
        return None
    point: dict[str, Any] = {"kind": data[0], "id": data[1] if len(data) > 1 else None}
    if len(data) > 2:
        point["children"] = data[2]
    return point


def _moved(relayout: Mapping[str, Any] | None) -> bool:
    return bool(relayout) and any(key.startswith(("xaxis", "yaxis", "dragmode")) for key in (relayout or {}))


def rotation_label(state: Mapping[str, Any], now: datetime) -> str:
    mode = MODE_LABELS.get(str(state.get("mode")), "")
    if state.get("paused_until"):
        until = datetime.fromisoformat(state["paused_until"])
        if until > now:
            return f"{mode} · paused {duration((until - now).total_seconds())}"
    return f"{mode} · rotating"


# --- callbacks --------------------------------------------------------------------------------------------------------
def register(app: Dash, context: Context) -> None:
    settings = context.config.settings

    @app.callback(
        Output("wall-vitals", "children"),
        Output("wall-clock", "children"),
        Input("wall-tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def _vitals_tick(_: int | None) -> tuple[Any, str]:
        try:
            require(context.principal(), Permission.VIEW_CITY)
        except AccessRefusedError as error:
            raise PreventUpdate from error
        now = context.now()
        return vital_tiles(_vitals(context, now), now), local_time(now, context.zone)

    @app.callback(
        Output("wall-feed", "children"),
        Output("wall-overdue", "children"),
        Input("wall-tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def _feed_tick(_: int | None) -> tuple[Any, Any]:
        try:
            require(context.principal(), Permission.VIEW_CITY)
        except AccessRefusedError as error:
            raise PreventUpdate from error
        now = context.now()
        return (
            feed(context.queries.open_incidents(limit=FEED_LENGTH), now, context),
            overdue(context.queries.overdue_work_orders(now=now, limit=OVERDUE_LENGTH), now, context),
        )

    @app.callback(
        Output("wall-map", "figure"),
        Output("wall-digest", "data"),
        Output("wall-map-box", "style"),
        Output("wall-sla-box", "style"),
        Output("wall-sla", "figure"),
        Output("wall-district-panel", "children"),
        Output("wall-district-panel", "style"),
        Input("wall-tick", "n_intervals"),
        Input("wall-state", "data"),
        State("wall-digest", "data"),
        prevent_initial_call=True,
    )
    def _map_tick(_: int | None, state: dict[str, Any], digests: dict[str, str] | None) -> tuple[Any, ...]:
        principal = context.principal()
        try:
            require(principal, Permission.VIEW_CITY)
        except AccessRefusedError as error:
            raise PreventUpdate from error
        now = context.now()
        show, hide = {"display": "block"}, {"display": "none"}
        if state.get("mode") == "sla":
            board = figures.sla_board(context.queries.department_service(now=now, day_start=context.day_start(now)))
            return no_update, no_update, hide, show, board, no_update, hide
        patch, fresh = map_update(context, principal, state, digests)
        if state.get("mode") == "district":
            panel: Any = district_panel(context, state.get("focus"), now)
            panel_style = show
        else:
            panel, panel_style = no_update, hide
        return patch, fresh, show, hide, no_update, panel, panel_style

    @app.callback(
        Output("wall-state", "data"),
        Output("url", "pathname"),
        Output("wall-rotation", "children"),
        Input("wall-rotate", "n_intervals"),
        Input({"type": "wall-mode", "mode": "city"}, "n_clicks"),
        Input({"type": "wall-mode", "mode": "district"}, "n_clicks"),
        Input({"type": "wall-mode", "mode": "sla"}, "n_clicks"),
        Input("wall-map", "clickData"),
        Input("wall-map", "relayoutData"),
        State("wall-state", "data"),
        prevent_initial_call=True,
    )
    def _interact(*args: Any) -> tuple[Any, Any, str]:
        state: dict[str, Any] = args[-1] or {}
        try:
            require(context.principal(), Permission.VIEW_CITY)
        except AccessRefusedError as error:
            raise PreventUpdate from error
        # Components appearing (the page was just rendered) fire this with every input at once, and a graph
        # reports its own size: neither is a person interacting.
        if len(ctx.triggered) != 1 or not ctx.triggered[0].get("value"):
            raise PreventUpdate
        trigger = ctx.triggered_id
        now = context.now()
        chosen = None
        if isinstance(trigger, dict):
            kind, chosen = "mode", str(trigger.get("mode"))
        elif trigger == "wall-rotate":
            kind = "rotate"
        elif trigger == "wall-map" and ctx.triggered and str(ctx.triggered[0]["prop_id"]).endswith("clickData"):
            kind = "map-click"
        else:
            kind = "map-move"
        hot = context.queries.hot_district() if kind in ("rotate", "mode") else state.get("focus")
        if kind == "map-move" and not _moved(args[5]):
            raise PreventUpdate  # the graph reporting its own size is not a person interacting
        new, navigate = next_wall_state(
            state,
            trigger=kind,
            now=now,
            pause_s=settings.wall_pause_s,
            hot_district=hot,
            chosen_mode=chosen,
            clicked=_clicked_point(args[4]) if kind == "map-click" else None,
        )
        return new, navigate if navigate else no_update, rotation_label(new, now)
