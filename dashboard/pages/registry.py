"""Dispatcher views of the city's devices and of how departments do: the device registry
(``/dispatch/devices``), a time series for any device or district from the rollups with the rule thresholds drawn
(``/dispatch/series``), and department evaluation (``/dispatch/evaluation``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
from dash import Dash, Input, Output, dcc, html
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.auth import AccessRefusedError, require
from dashboard.context import Context
from dashboard.format import age, duration, each_row, is_missing
from dashboard.thresholds import thresholds_for
from domain.access import Permission, Principal
from domain.devices import DeviceStatus
from domain.evaluation import EvaluationRow, EvaluationScope
from domain.sla import SlaStage

SPANS = {"6h": timedelta(hours=6), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PAGE_SIZE = 100
LOW_BATTERY_PCT = 20.0


# --- devices ----------------------------------------------------------------------------------------------------------
def devices_layout(context: Context, principal: Principal) -> html.Div:
    require(principal, Permission.VIEW_DEVICES)
    types = context.queries.device_types()
    return html.Div(
        className="page dispatch",
        children=[
            html.H1(["Devices ", html.Span("设备", className="zh")]),
            html.Div(
                className="filters",
                children=[
                    dcc.Dropdown(
                        id="dev-district",
                        options=[{"label": a.name, "value": a.code} for a in context.geometry.districts],
                        placeholder="every district",
                    ),
                    dcc.Dropdown(
                        id="dev-status",
                        options=[{"label": s.value, "value": s.value} for s in DeviceStatus],
                        placeholder="every status",
                    ),
                    dcc.Dropdown(
                        id="dev-type",
                        options=[{"label": n, "value": c} for c, n in zip(types["code"], types["name"], strict=True)],
                        placeholder="every type",
                    ),
                    dcc.Input(id="dev-search", placeholder="device id contains…", debounce=True, className="note"),
                    dcc.Input(id="dev-page", type="number", min=1, value=1, className="page-number"),
                ],
            ),
            html.Div(id="dev-table", children=device_table(context, principal, None, None, None, "", 1)),
        ],
    )


def device_table(
    context: Context,
    principal: Principal | None,
    district: str | None,
    status: str | None,
    type_code: str | None,
    search: str,
    page: int,
) -> Any:
    require(principal, Permission.VIEW_DEVICES)
    page = max(1, int(page or 1))
    frame, total = context.queries.device_registry(
        district=district,
        status=status,
        type_code=type_code,
        search=(search or "").strip()[:64],
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    now = context.now()
    rows = []
    for row in each_row(frame):
        battery = "—" if is_missing(row.battery_pct) else f"{float(row.battery_pct):.0f} %"
        low = not is_missing(row.battery_pct) and float(row.battery_pct) < LOW_BATTERY_PCT
        silent = ""
        if not is_missing(row.last_seen_at):
            quiet_s = (now - pd.Timestamp(row.last_seen_at).to_pydatetime()).total_seconds()
            silent = " late" if quiet_s > 3 * int(row.expected_interval_s) else ""
        rows.append(
            html.Tr(
                [
                    html.Td(dcc.Link(str(row.id), href=f"/dispatch/series?device={row.id}")),
                    html.Td(str(row.type_code)),
                    html.Td(
                        context.geometry.district_name(
                            None if is_missing(row.district_code) else str(row.district_code)
                        )
                    ),
                    html.Td(str(row.grid_cell_code or "")),
                    html.Td(html.Span(str(row.status), className=f"chip status-{row.status}")),
                    html.Td(age(row.last_seen_at, now), className=silent.strip()),
                    html.Td(battery, className="low" if low else ""),
                ]
            )
        )
    head = html.Tr([html.Th(h) for h in ("device", "type", "district", "grid cell", "status", "last seen", "battery")])
    pages = max(1, -(-total // PAGE_SIZE))
    return [
        html.Div(
            f"{total:,} devices · page {page} of {pages} · not online and low batteries first",
            className="table-caption",
        ),
        html.Table([html.Thead(head), html.Tbody(rows)], className="table", id="devices-table"),
    ]


# --- time series ------------------------------------------------------------------------------------------------------
def series_layout(context: Context, principal: Principal, query: str = "") -> html.Div:
    require(principal, Permission.VIEW_DEVICES)
    params = parse_qs(query.lstrip("?"))
    device = params.get("device", [""])[0]
    district = params.get("district", [None])[0]
    metric = params.get("metric", [None])[0]
    types = context.queries.device_types()
    metrics = sorted({m for ms in types["metrics"] for m in ms}) if len(types) else []
    if device and not metric:
        found = context.queries.device(device)
        if found and found["metrics"]:
            metric = (
                next(m for m in found["metrics"] if m != "battery_pct")
                if len(found["metrics"]) > 1
                else found["metrics"][0]
            )
    return html.Div(
        className="page dispatch",
        children=[
            html.H1(["Time series ", html.Span("时序", className="zh")]),
            html.Div(
                className="filters",
                children=[
                    dcc.Input(id="ser-device", placeholder="device id", value=device, debounce=True, className="note"),
                    dcc.Dropdown(
                        id="ser-district",
                        options=[{"label": a.name, "value": a.code} for a in context.geometry.districts],
                        value=district,
                        placeholder="or a district",
                    ),
                    dcc.Dropdown(
                        id="ser-metric",
                        options=[{"label": m, "value": m} for m in metrics],
                        value=metric,
                        placeholder="metric",
                    ),
                    dcc.RadioItems(id="ser-span", options=list(SPANS), value="6h", inline=True),
                ],
            ),
            html.Div(id="ser-graph", children=series_panel(context, principal, device, district, metric, "6h")),
        ],
    )


def series_panel(
    context: Context,
    principal: Principal | None,
    device: str | None,
    district: str | None,
    metric: str | None,
    span: str,
) -> Any:
    """A device's (or a district's) metric from the rollups, with the rule catalogue's levels across it."""
    require(principal, Permission.VIEW_DEVICES)
    if not metric or not (device or district):
        return html.Div("Choose a device or a district, and a metric.", className="empty")
    end = context.now()
    start = end - SPANS.get(span, SPANS["24h"])
    device_type = None
    if device:
        found = context.queries.device(device.strip())
        if found is None:
            return html.Div(f"There is no device {device!r}.", className="empty")
        device_type = str(found["type_code"])
        frame = context.queries.device_series(str(found["id"]), metric, start=start, end=end)
        title = f"{found['id']} ({found['type_name']}) · {metric}"
    else:
        assert district is not None
        frame = context.queries.district_series(district, metric, start=start, end=end)
        title = f"{context.geometry.district_name(district)} · {metric} (every device reporting it)"
    table = "1-minute" if end - start <= timedelta(hours=12) else "1-hour"
    figure = figures.time_series(
        frame, thresholds_for(context.config.rules, metric, device_type), title=title, unit=metric.rsplit("_", 1)[-1]
    )
    return [
        dcc.Graph(id="series-figure", figure=figure, className="series", config={"displaylogo": False}),
        html.Div(
            f"{len(frame)} {table} buckets from the rollups, over {duration((end - start).total_seconds())}",
            className="table-caption",
        ),
    ]


# --- evaluation -------------------------------------------------------------------------------------------------------
EVALUATION_SPANS = {"today": None, "7 days": timedelta(days=7), "30 days": timedelta(days=30)}


def evaluation_layout(context: Context, principal: Principal) -> html.Div:
    require(principal, Permission.VIEW_EVALUATION)
    return html.Div(
        className="page dispatch",
        children=[
            html.H1(["Evaluation ", html.Span("考核评价", className="zh")]),
            html.Div(
                className="filters",
                children=[
                    dcc.RadioItems(
                        id="eval-scope", options=[s.value for s in EvaluationScope], value="department", inline=True
                    ),
                    dcc.RadioItems(id="eval-span", options=list(EVALUATION_SPANS), value="30 days", inline=True),
                ],
            ),
            html.Div(id="eval-body", children=evaluation_panel(context, principal, "department", "30 days")),
        ],
    )


def evaluation_frame(rows: list[EvaluationRow], names: dict[str, str]) -> pd.DataFrame:
    """One row per department (or district): rates in %, times in minutes (store.evaluation's definitions)."""

    def pct(value: float | None) -> float | None:
        return None if value is None else round(value * 100, 1)

    def minutes(value: float | None) -> float | None:
        return None if value is None else value / 60

    return pd.DataFrame(
        [
            {
                "key": row.key,
                "name": names.get(row.key, row.key),
                "cases": row.cases,
                "closed": row.closed,
                "closure_pct": pct(row.closure_rate),
                **{f"{stage.value}_pct": pct(row.stages[stage].on_time_rate) for stage in SlaStage},
                **{f"{stage.value}_min": minutes(row.stages[stage].mean_s) for stage in SlaStage},
                **{f"{stage.value}_p90_min": minutes(row.stages[stage].p90_s) for stage in SlaStage},
                "reopen_pct": pct(row.reopen_rate),
                "breaches": row.breaches,
            }
            for row in rows
        ],
        columns=[
            "key", "name", "cases", "closed", "closure_pct", *(f"{s.value}_pct" for s in SlaStage),
            *(f"{s.value}_min" for s in SlaStage), *(f"{s.value}_p90_min" for s in SlaStage), "reopen_pct", "breaches",
        ],
    )  # fmt: skip


def evaluation_panel(context: Context, principal: Principal | None, scope: str, span: str) -> Any:
    require(principal, Permission.VIEW_EVALUATION)
    until = context.now()
    length = EVALUATION_SPANS.get(span)
    since = context.day_start(until) if length is None else until - length
    chosen = EvaluationScope(scope)
    if chosen is EvaluationScope.DEPARTMENT:
        departments = context.queries.departments()
        names = dict(zip(departments["code"], departments["name"], strict=True))
    else:
        names = {area.code: area.name for area in context.geometry.districts}
    frame = evaluation_frame(context.queries.evaluation(chosen, since=since, until=until), names)
    if not len(frame):
        return html.Div("No work orders were registered in this period.", className="empty")

    def cell(value: Any, unit: str) -> str:
        return "—" if is_missing(value) else f"{float(value):.0f}{unit}"

    head = html.Tr(
        [html.Th(h) for h in (scope, "cases", "closure rate", "accept on time", "arrive on time", "resolve on time",
                               "to accept", "to arrive", "to resolve (p90)", "reopened", "breaches")]
    )  # fmt: skip
    rows = [
        html.Tr(
            [
                html.Td(str(r.name)),
                html.Td(str(r.cases)),
                html.Td(cell(r.closure_pct, " %")),
                html.Td(cell(r.acknowledge_pct, " %")),
                html.Td(cell(r.arrive_pct, " %")),
                html.Td(cell(r.resolve_pct, " %")),
                html.Td(cell(r.acknowledge_min, " min")),
                html.Td(cell(r.arrive_min, " min")),
                html.Td(f"{cell(r.resolve_min, ' min')} ({cell(r.resolve_p90_min, ' min')})"),
                html.Td(cell(r.reopen_pct, " %")),
                html.Td(str(r.breaches)),
            ]
        )
        for r in each_row(frame)
    ]
    return [
        html.P(
            f"Work orders registered from {since:%Y-%m-%d %H:%M} UTC; definitions: domain/evaluation.py "
            "(on time = stages reached without a recorded SLA breach).",
            className="table-caption",
        ),
        dcc.Graph(figure=figures.evaluation_figure(frame), className="series"),
        html.Table([html.Thead(head), html.Tbody(rows)], className="table", id="evaluation-table"),
    ]


def register(app: Dash, context: Context) -> None:
    @app.callback(
        Output("dev-table", "children"),
        Input("dev-district", "value"),
        Input("dev-status", "value"),
        Input("dev-type", "value"),
        Input("dev-search", "value"),
        Input("dev-page", "value"),
        prevent_initial_call=True,
    )
    def _devices(
        district: str | None, status: str | None, type_code: str | None, search: str | None, page: int | None
    ) -> Any:
        try:
            return device_table(context, context.principal(), district, status, type_code, search or "", page or 1)
        except AccessRefusedError as error:
            raise PreventUpdate from error

    @app.callback(
        Output("eval-body", "children"),
        Input("eval-scope", "value"),
        Input("eval-span", "value"),
        prevent_initial_call=True,
    )
    def _evaluation(scope: str, span: str) -> Any:
        try:
            return evaluation_panel(context, context.principal(), scope, span)
        except AccessRefusedError as error:
            raise PreventUpdate from error

    @app.callback(
        Output("ser-graph", "children"),
        Input("ser-device", "value"),
        Input("ser-district", "value"),
        Input("ser-metric", "value"),
        Input("ser-span", "value"),
        prevent_initial_call=True,
    )
    def _series(device: str | None, district: str | None, metric: str | None, span: str) -> Any:
        try:
            return series_panel(context, context.principal(), device, district, metric, span)
        except AccessRefusedError as error:
            raise PreventUpdate from error
