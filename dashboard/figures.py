"""Pure figure builders: ``(DataFrame[, geometry]) -> go.Figure``. No database, no Dash, no clock.

Colours carry meaning and are the same on every page: severity (critical red, high orange, medium yellow, low
blue), device status (online green, offline red, faulty amber, never heard grey), work-order state. The wall is
read from across a room, so markers and type are large and the background dark.

The city map keeps a fixed trace order (:data:`MAP_TRACES`): the static layers first (roads, cell outlines,
districts, their labels), then the live ones. A live update therefore replaces only the live traces by index
(``dash.Patch``), and the city's geometry is sent to the browser once.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.format import each_row
from dashboard.geometry import Bounds, CityGeometry, Coordinates
from dashboard.thresholds import Threshold

# --- the palette --------------------------------------------------------------------------------------------------
BACKGROUND = "#070c16"
PANEL = "#0e1626"
GRID = "#1c2a40"
TEXT = "#e6edf7"
MUTED = "#8aa0bd"
ACCENT = "#38bdf8"

SEVERITY_ORDER = ("critical", "high", "medium", "low")
SEVERITY_COLOURS: Mapping[str, str] = {
    "critical": "#ff3b4e",
    "high": "#ff8a1f",
    "medium": "#ffd23f",
    "low": "#5ec8ff",
}
SEVERITY_SIZES: Mapping[str, int] = {"critical": 24, "high": 20, "medium": 16, "low": 13}

STATUS_ORDER = ("online", "offline", "faulty", "provisioned", "decommissioned")
STATUS_COLOURS: Mapping[str, str] = {
    "online": "#22c55e",
    "offline": "#ef4444",
    "faulty": "#f59e0b",
    "provisioned": "#64748b",
    "decommissioned": "#334155",
}
STATUS_LABELS: Mapping[str, str] = {
    "online": "online",
    "offline": "offline",
    "faulty": "faulty",
    "provisioned": "never heard",
    "decommissioned": "decommissioned",
}

STATE_ORDER = (
    "created",
    "rejected",
    "reopened",
    "dispatched",
    "accepted",
    "en_route",
    "on_site",
    "resolved",
    "verifying",
    "closed",
    "cancelled",
)
STATE_COLOURS: Mapping[str, str] = {
    "created": "#a78bfa",
    "rejected": "#f472b6",
    "reopened": "#fb7185",
    "dispatched": "#60a5fa",
    "accepted": "#38bdf8",
    "en_route": "#22d3ee",
    "on_site": "#2dd4bf",
    "resolved": "#a3e635",
    "verifying": "#facc15",
    "closed": "#22c55e",
    "cancelled": "#64748b",
}
STATE_LABELS: Mapping[str, str] = {
    "created": "awaiting dispatch",
    "rejected": "rejected by crew",
    "reopened": "reopened",
    "dispatched": "dispatched",
    "accepted": "accepted",
    "en_route": "en route",
    "on_site": "on site",
    "resolved": "resolved",
    "verifying": "verifying",
    "closed": "closed",
    "cancelled": "cancelled",
}

# Grid-cell choropleth: share of a cell's devices that are not online.
HEALTH_BINS: tuple[tuple[float, float, str, str], ...] = (
    (0.0, 0.0, "all online", "#14532d"),
    (0.0, 0.10, "< 10 % down", "#4d7c0f"),
    (0.10, 0.25, "10-25 % down", "#a16207"),
    (0.25, 0.50, "25-50 % down", "#c2410c"),
    (0.50, 1.0, "> 50 % down", "#b91c1c"),
)

# --- the map's trace order -----------------------------------------------------------------------------------------
MAP_STATIC = ("roads", "cells", "districts", "district labels")
MAP_LIVE = (
    *(f"cells {label}" for _, _, label, _ in HEALTH_BINS),
    "cell summary",
    *(f"devices {status}" for status in STATUS_ORDER),
    "crew routes",
    *(f"incidents {severity}" for severity in reversed(SEVERITY_ORDER)),
    "linked incidents",
    "crews",
    "focus",
)
MAP_TRACES = (*MAP_STATIC, *MAP_LIVE)
# What the legend says for each trace (the key stays in the trace's ``meta``, for patching and for tests).
MAP_LEGEND: Mapping[str, str] = {
    **{f"cells {label}": label for _, _, label, _ in HEALTH_BINS},
    **{f"devices {status}": STATUS_LABELS[status] for status in STATUS_ORDER},
    **{f"incidents {severity}": severity for severity in SEVERITY_ORDER},
    "linked incidents": "linked incidents",
    "crews": "crews (task: pink)",
    "crew routes": "way to the task",
}


def _labelled(traces: list[go.Scatter]) -> list[go.Scatter]:
    for trace in traces:
        trace.meta = trace.name
        trace.name = MAP_LEGEND.get(trace.name, trace.name)
    return traces


FIRST_LIVE_TRACE = len(MAP_STATIC)
CELL_OUTLINE_LIMIT = 3000  # more cells than this: outlines are left out of the city view (they would be a grey wash)


def typed(values: Any) -> dict[str, str]:
    """Coordinates as a plotly.js typed array: float32, base64. The map's layers are tens of thousands of
    coordinates; as JSON numbers Montréal's wall was a 2.5 MB response that the browser took over a second to parse,
    as typed arrays a third of the bytes, decoded without a number parser. float32 keeps a longitude or a latitude
    to about half a metre; NaN still breaks a line between rings."""
    data = np.ascontiguousarray(np.asarray(values, dtype=float), dtype="<f4")
    return {"dtype": "f4", "bdata": base64.b64encode(data.tobytes()).decode("ascii")}


def untyped(values: Any) -> Any:
    """The values of :func:`typed` back (for tests and for code that reads a figure), anything else as it is."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype="<f4").astype(float)
    return values


def _scatter(**properties: Any) -> go.Scatter:
    """A scatter trace without plotly's per-element validation: the map's traces carry tens of thousands of
    coordinates, and validating them costs about half a second per figure at city scale. Their shapes are fixed
    here and checked by the unit tests, which validate the whole figure once (``go.Figure(figure.to_dict())``)."""
    return go.Scatter(**properties, _validate=False)


def _base_layout(**overrides: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "paper_bgcolor": BACKGROUND,
        "plot_bgcolor": BACKGROUND,
        "font": {"color": TEXT, "family": "DejaVu Sans, Noto Sans CJK SC, WenQuanYi Zen Hei, sans-serif", "size": 16},
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
    }
    layout.update(overrides)
    return layout


# --- the city map --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MapSnapshot:
    """What the map shows now.

    * ``devices`` (marker mode): id, type_code, status, lon, lat, district_code, battery_pct;
    * ``cells`` (aggregate mode): grid_cell_code, devices, not_online, open_incidents;
    * ``incidents``: id, title, severity, state, lon, lat, district_code, opened_at, children (int), acknowledged;
    * ``children``: the linked incidents of the parents being shown, same columns;
    * ``crews``: crew_id, name, status, lon, lat, work_order_id, task_title, task_state, priority;
    * ``routes``: crew id -> (lons, lats) of its way to its task.
    """

    devices: pd.DataFrame
    cells: pd.DataFrame
    incidents: pd.DataFrame
    children: pd.DataFrame
    crews: pd.DataFrame
    routes: Mapping[str, tuple[Sequence[float], Sequence[float]]]
    aggregate: bool


def city_map(
    geometry: CityGeometry, snapshot: MapSnapshot, *, focus: str | None = None, revision: str = "city"
) -> go.Figure:
    """The whole map: the city's layers and what is live on them. ``focus`` zooms to (and outlines) a district."""
    traces = [*static_map_traces(geometry, outline_cells=len(geometry.cells) <= CELL_OUTLINE_LIMIT)]
    traces += live_map_traces(geometry, snapshot, focus=focus)
    figure = go.Figure(data=traces, _validate=False)
    figure.update_layout(**map_layout(geometry, focus=focus, revision=revision))
    return figure


def map_layout(geometry: CityGeometry, *, focus: str | None, revision: str) -> dict[str, Any]:
    area = geometry.district(focus) if focus else None
    bounds = (area.bounds if area else geometry.bounds).padded(0.06 if area else 0.03)
    return _base_layout(
        xaxis={"visible": False, "range": [bounds.lon_min, bounds.lon_max], "constrain": "domain"},
        yaxis={
            "visible": False,
            "range": [bounds.lat_min, bounds.lat_max],
            "scaleanchor": "x",
            "scaleratio": geometry.aspect,
            "constrain": "domain",
        },
        showlegend=True,
        legend={
            "x": 0.005,
            "y": 0.995,
            "bgcolor": "rgba(7,12,22,0.78)",
            "bordercolor": GRID,
            "borderwidth": 1,
            "font": {"size": 15},
            "itemclick": "toggle",
        },
        hovermode="closest",
        hoverlabel={"font": {"size": 16}},
        uirevision=revision,
        dragmode="pan",
    )


def static_map_traces(geometry: CityGeometry, *, outline_cells: bool) -> list[go.Scatter]:
    cell_lons, cell_lats = geometry.cell_outlines() if outline_cells else ([], [])
    district_lons = np.array([v if v is not None else np.nan for a in geometry.districts for v in a.lons], dtype=float)
    district_lats = np.array([v if v is not None else np.nan for a in geometry.districts for v in a.lats], dtype=float)
    return _labelled(
        [
            _scatter(
                name="roads",
                x=typed(geometry.roads_lons),
                y=typed(geometry.roads_lats),
                mode="lines",
                line={"color": "#24344d", "width": 1.2},
                hoverinfo="skip",
                showlegend=False,
            ),
            _scatter(
                name="cells",
                x=typed(cell_lons),
                y=typed(cell_lats),
                mode="lines",
                line={"color": "#15233a", "width": 0.6},
                hoverinfo="skip",
                showlegend=False,
            ),
            _scatter(
                name="districts",
                x=typed(district_lons),
                y=typed(district_lats),
                mode="lines",
                fill="toself",
                fillcolor="rgba(56,189,248,0.05)",
                line={"color": "#3b82c4", "width": 2.2},
                hoverinfo="skip",
                showlegend=False,
            ),
            _scatter(
                name="district labels",
                x=[area.label_lon for area in geometry.districts],
                y=[area.label_lat for area in geometry.districts],
                mode="text",
                text=[area.name for area in geometry.districts],
                textfont={"color": "#7fa6cf", "size": 17},
                hoverinfo="skip",
                showlegend=False,
            ),
        ]
    )


def live_map_traces(geometry: CityGeometry, snapshot: MapSnapshot, *, focus: str | None = None) -> list[go.Scatter]:
    """The live traces, always :data:`MAP_LIVE` in that order (empty ones included), for patching by index."""
    traces: list[go.Scatter] = []
    traces += _cell_health_traces(geometry, snapshot.cells if snapshot.aggregate else _empty_cells())
    traces += _device_traces(snapshot.devices if not snapshot.aggregate else snapshot.devices.iloc[0:0])
    traces.append(_route_trace(snapshot.routes))
    traces += _incident_traces(snapshot.incidents)
    traces.append(_linked_trace(snapshot.children))
    traces.append(_crew_trace(snapshot.crews))
    traces.append(_focus_trace(geometry, focus))
    assert [t.name for t in traces] == list(MAP_LIVE)
    return _labelled(traces)


def _empty_cells() -> pd.DataFrame:
    return pd.DataFrame({"grid_cell_code": [], "devices": [], "not_online": [], "open_incidents": []})


def health_bin(share_down: float) -> int:
    """Index into :data:`HEALTH_BINS` for a share of devices not online."""
    if share_down <= 0:
        return 0
    for index, (low, high, _, _) in enumerate(HEALTH_BINS[1:], start=1):
        if low < share_down <= high:
            return index
    return len(HEALTH_BINS) - 1


def _cell_health_traces(geometry: CityGeometry, cells: pd.DataFrame) -> list[go.Scatter]:
    # Vectorised: at city scale this is thousands of cells on every refresh.
    codes = cells["grid_cell_code"].astype(str).to_numpy()
    rows = np.array([geometry.cell_index.get(code, -1) for code in codes], dtype=np.int64)
    devices = cells["devices"].to_numpy(dtype=np.int64)
    down = cells["not_online"].to_numpy(dtype=np.int64)
    incidents = cells["open_incidents"].to_numpy(dtype=np.int64)
    keep = (rows >= 0) & (devices > 0)
    codes, rows, devices, down, incidents = codes[keep], rows[keep], devices[keep], down[keep], incidents[keep]
    shares = down / np.maximum(devices, 1)
    bins = np.array([health_bin(float(share)) for share in shares], dtype=np.int64)
    # Hover for the cells with something to say (devices down, open incidents): a quiet cell's colour says it all,
    # and an invisible marker per cell of a city (thousands of SVG elements) slowed the wall's first render. The
    # text is put together in the browser from a row per cell (a tenth of the bytes of the text).
    notable = (down > 0) | (incidents > 0)
    summary = [
        [code, n, d, round(100 * share), i]
        for code, n, d, share, i in zip(
            codes[notable].tolist(),
            devices[notable].tolist(),
            down[notable].tolist(),
            shares[notable].tolist(),
            incidents[notable].tolist(),
            strict=True,
        )
    ]
    traces = []
    for index, (_, _, label, colour) in enumerate(HEALTH_BINS):
        chosen = rows[bins == index]
        lons, lats = geometry.ring_lons[chosen].ravel(), geometry.ring_lats[chosen].ravel()
        traces.append(
            _scatter(
                name=f"cells {label}",
                legendgroup="cells",
                legendgrouptitle={"text": "grid cells"} if label == HEALTH_BINS[0][2] else None,
                x=typed(lons),
                y=typed(lats),
                mode="lines",
                fill="toself",
                fillcolor=colour,
                line={"color": colour, "width": 0.5},
                hoverinfo="skip",
                showlegend=bool(len(chosen)),
                opacity=0.85,
            )
        )
    traces.append(
        _scatter(
            name="cell summary",
            x=typed(geometry.centre_lons[rows[notable]]),
            y=typed(geometry.centre_lats[rows[notable]]),
            mode="markers",
            marker={"size": 6, "color": "rgba(0,0,0,0)"},
            customdata=summary,
            hovertemplate=(
                "<b>%{customdata[0]}</b><br>%{customdata[1]} devices, %{customdata[2]} not online "
                "(%{customdata[3]}%)<br>%{customdata[4]} open incidents<extra></extra>"
            ),
            showlegend=False,
        )
    )
    return traces


def _device_traces(devices: pd.DataFrame) -> list[go.Scatter]:
    traces = []
    for status in STATUS_ORDER:
        rows = devices[devices["status"] == status] if len(devices) else devices
        battery = rows["battery_pct"] if "battery_pct" in rows else pd.Series([None] * len(rows))
        text = [
            f"<b>{device}</b> ({kind})<br>{STATUS_LABELS[status]}" + (f" · battery {b:.0f}%" if pd.notna(b) else "")
            for device, kind, b in zip(rows["id"], rows["type_code"], battery, strict=True)
        ]
        traces.append(
            _scatter(
                name=f"devices {status}",
                legendgroup="devices",
                legendgrouptitle={"text": "devices"} if status == STATUS_ORDER[0] else None,
                x=list(rows["lon"]),
                y=list(rows["lat"]),
                mode="markers",
                marker={"size": 6 if status == "online" else 9, "color": STATUS_COLOURS[status], "opacity": 0.85},
                text=text,
                customdata=[["device", d] for d in rows["id"]],
                hovertemplate="%{text}<extra></extra>",
                showlegend=len(rows) > 0,
            )
        )
    return traces


def _incident_hover(row: Any) -> str:
    children = int(row.children) if pd.notna(row.children) else 0
    linked = f"<br>{children} linked incidents (click to show)" if children else ""
    acknowledged = " · acknowledged" if bool(row.acknowledged) else ""
    return f"<b>{row.title}</b><br>{row.severity} · {row.state}{acknowledged}{linked}<br>{row.id}"


def _incident_traces(incidents: pd.DataFrame) -> list[go.Scatter]:
    placed = incidents[incidents["lon"].notna()] if len(incidents) else incidents
    by_severity: dict[str, list[Any]] = {severity: [] for severity in SEVERITY_ORDER}
    for row in each_row(placed):
        by_severity.setdefault(str(row.severity), []).append(row)
    traces = []
    for severity in reversed(SEVERITY_ORDER):  # the most severe drawn last, on top
        rows = by_severity[severity]
        children = [int(row.children) if pd.notna(row.children) else 0 for row in rows]
        traces.append(
            _scatter(
                name=f"incidents {severity}",
                legendgroup="incidents",
                legendgrouptitle={"text": "open incidents"} if severity == "critical" else None,
                x=[row.lon for row in rows],
                y=[row.lat for row in rows],
                mode="markers",
                marker={
                    "size": SEVERITY_SIZES[severity],
                    "color": SEVERITY_COLOURS[severity],
                    "symbol": ["circle-dot" if c else "circle" for c in children],
                    "line": {"color": "#ffffff", "width": 2},
                },
                text=[_incident_hover(row) for row in rows],
                customdata=[["incident", row.id, c] for row, c in zip(rows, children, strict=True)],
                hovertemplate="%{text}<extra></extra>",
                showlegend=len(rows) > 0,
            )
        )
    return traces


def _linked_trace(children: pd.DataFrame) -> go.Scatter:
    rows = children[children["lon"].notna()] if len(children) else children
    return _scatter(
        name="linked incidents",
        x=list(rows["lon"]),
        y=list(rows["lat"]),
        mode="markers",
        marker={
            "size": 12,
            "color": [SEVERITY_COLOURS.get(str(s), MUTED) for s in rows["severity"]],
            "symbol": "circle-open",
            "line": {"width": 3},
        },
        text=[_incident_hover(row) for row in each_row(rows)],
        customdata=[["incident", i, 0] for i in rows["id"]],
        hovertemplate="%{text}<extra>linked</extra>",
        showlegend=len(rows) > 0,
    )


def _crew_trace(crews: pd.DataFrame) -> go.Scatter:
    rows = crews[crews["lon"].notna()] if len(crews) else crews
    text = []
    for row in each_row(rows):
        task = (
            f"<br>task {row.work_order_id}: {row.task_title} ({STATE_LABELS.get(str(row.task_state), row.task_state)})"
            if isinstance(row.work_order_id, str)
            else "<br>no task"
        )
        text.append(f"<b>{row.name}</b> ({row.crew_id}) · {row.status}{task}")
    return _scatter(
        name="crews",
        x=list(rows["lon"]),
        y=list(rows["lat"]),
        mode="markers",
        marker={
            "size": 17,
            "symbol": "diamond",
            "color": ["#e879f9" if isinstance(w, str) else "#94a3b8" for w in rows["work_order_id"]],
            "line": {"color": "#0b1020", "width": 2},
        },
        text=text,
        customdata=[["crew", c] for c in rows["crew_id"]],
        hovertemplate="%{text}<extra></extra>",
        showlegend=len(rows) > 0,
    )


def _route_trace(routes: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> go.Scatter:
    lons: Coordinates = []
    lats: Coordinates = []
    for route_lons, route_lats in routes.values():
        lons.extend(float(x) for x in route_lons)
        lons.append(None)
        lats.extend(float(y) for y in route_lats)
        lats.append(None)
    return _scatter(
        name="crew routes",
        x=lons,
        y=lats,
        mode="lines",
        line={"color": "#e879f9", "width": 3, "dash": "dot"},
        hoverinfo="skip",
        showlegend=bool(routes),
    )


def _focus_trace(geometry: CityGeometry, focus: str | None) -> go.Scatter:
    area = geometry.district(focus) if focus else None
    return _scatter(
        name="focus",
        x=area.lons if area else [],
        y=area.lats if area else [],
        mode="lines",
        line={"color": ACCENT, "width": 5},
        hoverinfo="skip",
        showlegend=False,
    )


# --- vital signs ---------------------------------------------------------------------------------------------------
ALARM_ACCEPTABLE = 6.0  # ISA-18.2 / EEMUA 191: alarms per operator-hour that an operator can handle
ALARM_UNMANAGEABLE = 12.0  # more than this is beyond what one operator can respond to


def alarm_load_gauge(alarms_per_operator_hour: float) -> go.Figure:
    """Alarms per operator-hour against the ISA-18.2 marks: up to 6 acceptable, 6-12 demanding, over 12 unmanageable."""
    top = max(18.0, math.ceil(alarms_per_operator_hour * 1.15))
    figure = go.Figure(
        go.Indicator(
            _validate=False,
            mode="gauge",
            value=round(alarms_per_operator_hour, 1),
            gauge={
                "shape": "bullet",
                "axis": {
                    "range": [0, top],
                    "tickvals": [0, ALARM_ACCEPTABLE, ALARM_UNMANAGEABLE, top],
                    "tickfont": {"size": 13},
                },
                "bar": {"color": TEXT, "thickness": 0.35},
                "steps": [
                    {"range": [0, ALARM_ACCEPTABLE], "color": "#14532d"},
                    {"range": [ALARM_ACCEPTABLE, ALARM_UNMANAGEABLE], "color": "#854d0e"},
                    {"range": [ALARM_UNMANAGEABLE, top], "color": "#7f1d1d"},
                ],
                "threshold": {"line": {"color": "#ff3b4e", "width": 4}, "value": ALARM_UNMANAGEABLE, "thickness": 0.9},
            },
            domain={"x": [0.02, 0.97], "y": [0.35, 1.0]},
        )
    )
    figure.update_layout(**_base_layout(margin={"l": 4, "r": 14, "t": 4, "b": 4}, paper_bgcolor="rgba(0,0,0,0)"))
    return figure


def work_order_bar(counts: pd.DataFrame) -> go.Figure:
    """Work orders by state as one stacked bar (columns: state, n), workflow order left to right."""
    figure = go.Figure(_validate=False)  # rebuilt on every refresh; the unit tests validate it
    known = dict(zip(counts["state"], counts["n"], strict=True)) if len(counts) else {}
    for state in STATE_ORDER:
        n = int(known.get(state, 0))
        if n == 0:
            continue
        figure.add_trace(
            go.Bar(
                _validate=False,
                name=STATE_LABELS[state],
                x=[n],
                y=[""],
                orientation="h",
                marker={"color": STATE_COLOURS[state]},
                text=[str(n)],
                textposition="inside",
                insidetextanchor="middle",
                textfont={"size": 15, "color": "#0b1020"},
                hovertemplate=f"{STATE_LABELS[state]}: %{{x}}<extra></extra>",
            )
        )
    figure.update_layout(
        **_base_layout(
            barmode="stack",
            showlegend=False,
            margin={"l": 0, "r": 0, "t": 0, "b": 0},
            paper_bgcolor="rgba(0,0,0,0)",
            plot_bgcolor="rgba(0,0,0,0)",
            xaxis={"visible": False},
            yaxis={"visible": False},
        )
    )
    return figure


# --- the SLA board -------------------------------------------------------------------------------------------------
SLA_TARGET = 0.9


def sla_board(departments: pd.DataFrame) -> go.Figure:
    """Per department: on-time share of today's deadlines, and open orders overdue by stage.

    Columns: department_code, name, due, met, overdue_acknowledge, overdue_arrive, overdue_resolve, open.
    """
    frame = departments.sort_values("name", ascending=False) if len(departments) else departments
    figure = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("On time today (deadlines met / due)", "Open work orders overdue, by stage"),
    )
    shares = [(m / d) if d else None for m, d in zip(frame["met"], frame["due"], strict=True)]
    figure.add_trace(
        go.Bar(
            name="on time",
            x=[s * 100 if s is not None else 0 for s in shares],
            y=list(frame["name"]),
            orientation="h",
            marker={
                "color": [
                    MUTED if s is None else ("#22c55e" if s >= SLA_TARGET else "#f59e0b" if s >= 0.75 else "#ef4444")
                    for s in shares
                ]
            },
            text=[
                "no deadline yet" if s is None else f"{s:.0%}  ({int(m)}/{int(d)})"
                for s, m, d in zip(shares, frame["met"], frame["due"], strict=True)
            ],
            textposition="auto",
            textfont={"size": 18},
            hovertemplate="%{y}: %{text}<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    stage_colours = {"acknowledge": "#a78bfa", "arrive": "#f59e0b", "resolve": "#ef4444"}
    for stage, colour in stage_colours.items():
        figure.add_trace(
            go.Bar(
                name=f"overdue to {stage}",
                x=list(frame[f"overdue_{stage}"]),
                y=list(frame["name"]),
                orientation="h",
                marker={"color": colour},
                text=[str(int(v)) if v else "" for v in frame[f"overdue_{stage}"]],
                textposition="inside",
                textfont={"size": 16},
            ),
            row=1,
            col=2,
        )
    figure.add_vline(x=SLA_TARGET * 100, line={"color": TEXT, "dash": "dash", "width": 2}, row=1, col=1)
    figure.update_layout(
        **_base_layout(
            barmode="stack",
            margin={"l": 10, "r": 20, "t": 50, "b": 30},
            legend={"orientation": "h", "y": -0.08, "x": 0.55, "font": {"size": 16}},
            font={"color": TEXT, "size": 18},
        )
    )
    figure.update_xaxes(gridcolor=GRID, zeroline=False)
    figure.update_xaxes(range=[0, 105], ticksuffix=" %", row=1, col=1)
    figure.update_yaxes(tickfont={"size": 18})
    figure.update_annotations(font={"size": 20, "color": MUTED})
    return figure


# --- time series ---------------------------------------------------------------------------------------------------
def time_series(
    series: pd.DataFrame,
    thresholds: Sequence[Threshold] = (),
    *,
    title: str,
    unit: str = "",
    evidence: pd.DataFrame | None = None,
    marks: Sequence[tuple[datetime, str]] = (),
) -> go.Figure:
    """A metric over time: the mean line, the min-max band (rollups), the rule thresholds drawn across it.

    ``series`` columns: bucket, mean, min, max (rollups) -- or bucket and mean only (raw readings).
    ``evidence`` (ts, value) is drawn as the readings that decided; ``marks`` as vertical lines (opened, cleared).
    """
    figure = go.Figure()
    if len(series) and "min" in series and "max" in series:
        figure.add_trace(
            _scatter(
                name="min-max",
                x=list(series["bucket"]) + list(series["bucket"])[::-1],
                y=list(series["max"]) + list(series["min"])[::-1],
                fill="toself",
                fillcolor="rgba(56,189,248,0.15)",
                line={"width": 0},
                hoverinfo="skip",
            )
        )
    figure.add_trace(
        _scatter(
            name="mean" if "min" in series else "readings",
            x=list(series["bucket"]),
            y=list(series["mean"]),
            mode="lines" if len(series) > 60 else "lines+markers",
            line={"color": ACCENT, "width": 2.5},
            marker={"size": 6},
        )
    )
    if evidence is not None and len(evidence):
        figure.add_trace(
            _scatter(
                name="evidence",
                x=list(evidence["ts"]),
                y=list(evidence["value"]),
                mode="markers",
                marker={"size": 14, "color": "#ff3b4e", "symbol": "x", "line": {"width": 2, "color": "#fff"}},
                hovertemplate="evidence %{y} at %{x}<extra></extra>",
            )
        )
    for threshold in thresholds:
        colour = SEVERITY_COLOURS.get(threshold.severity, MUTED) if threshold.kind == "trigger" else MUTED
        figure.add_hline(
            y=threshold.value,
            line={"color": colour, "width": 2, "dash": "solid" if threshold.kind == "trigger" else "dot"},
            annotation_text=threshold.label,
            annotation_position="top left",
            annotation_font={"color": colour, "size": 13},
        )
    for moment, label in marks:
        figure.add_vline(x=moment, line={"color": MUTED, "width": 1.5, "dash": "dash"})
        figure.add_annotation(
            x=moment,
            y=1,
            yref="paper",
            text=label,
            showarrow=False,
            font={"color": MUTED, "size": 12},
            yanchor="bottom",
        )
    figure.update_layout(
        **_base_layout(
            title={"text": title, "font": {"size": 18}, "x": 0.01},
            margin={"l": 60, "r": 20, "t": 50, "b": 40},
            paper_bgcolor=PANEL,
            plot_bgcolor=PANEL,
            legend={"orientation": "h", "y": -0.18},
            xaxis={"gridcolor": GRID},
            yaxis={"gridcolor": GRID, "title": {"text": unit}},
            hovermode="x unified",
        )
    )
    return figure


# --- evaluation ----------------------------------------------------------------------------------------------------
def evaluation_figure(groups: pd.DataFrame) -> go.Figure:
    """Evaluation: on-time rate per SLA stage, closure and reopen rates (%); mean minutes to each stage.

    Columns: name, closure_pct, acknowledge_pct, arrive_pct, resolve_pct, reopen_pct, acknowledge_min, arrive_min,
    resolve_min (None where there was nothing to judge).
    """
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Rates (%)", "Mean minutes from registration"))
    names = list(groups["name"])
    for column, label, colour in (
        ("acknowledge_pct", "accepted on time", "#a78bfa"),
        ("arrive_pct", "arrived on time", "#2dd4bf"),
        ("resolve_pct", "resolved on time", "#22c55e"),
        ("closure_pct", "closed", "#38bdf8"),
        ("reopen_pct", "reopened", "#fb7185"),
    ):
        figure.add_trace(go.Bar(name=label, x=names, y=list(groups[column]), marker={"color": colour}), row=1, col=1)
    for column, label, colour in (
        ("acknowledge_min", "to accept", "#a78bfa"),
        ("arrive_min", "to arrive", "#2dd4bf"),
        ("resolve_min", "to resolve", "#facc15"),
    ):
        figure.add_trace(
            go.Bar(name=label, x=names, y=list(groups[column]), marker={"color": colour}, showlegend=True), row=1, col=2
        )
    figure.update_layout(
        **_base_layout(
            barmode="group", paper_bgcolor=PANEL, plot_bgcolor=PANEL, margin={"l": 50, "r": 20, "t": 50, "b": 60}
        )
    )
    figure.update_yaxes(gridcolor=GRID)
    figure.update_yaxes(range=[0, 105], row=1, col=1)
    return figure


# --- a small map for one task or one case ----------------------------------------------------------------------------
def place_map(
    geometry: CityGeometry,
    points: pd.DataFrame,
    *,
    route: tuple[Sequence[float], Sequence[float]] | None = None,
    height_share: float = 1.0,
) -> go.Figure:
    """A few labelled places (columns: lon, lat, label, kind) on the city's layers, zoomed to them.

    ``kind`` picks the marker: ``incident``, ``crew``, ``event`` (a work-order transition's position).
    """
    traces: list[Any] = static_map_traces(geometry, outline_cells=len(geometry.cells) <= CELL_OUTLINE_LIMIT)
    if route is not None:
        traces.append(
            _scatter(
                name="route", x=list(route[0]), y=list(route[1]), mode="lines", line={"color": "#e879f9", "width": 4}
            )
        )
    styles = {
        "incident": {"size": 22, "color": "#ff3b4e", "symbol": "circle", "line": {"color": "#fff", "width": 2}},
        "crew": {"size": 20, "color": "#e879f9", "symbol": "diamond", "line": {"color": "#0b1020", "width": 2}},
        "event": {"size": 12, "color": "#facc15", "symbol": "square", "line": {"color": "#0b1020", "width": 1}},
    }
    for kind, style in styles.items():
        rows = points[points["kind"] == kind] if len(points) else points
        traces.append(
            _scatter(
                name=kind,
                x=list(rows["lon"]),
                y=list(rows["lat"]),
                mode="markers+text",
                marker=style,
                text=list(rows["label"]),
                textposition="top center",
                textfont={"size": 14, "color": TEXT},
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
            )
        )
    figure = go.Figure(data=traces, _validate=False)
    lons = [float(v) for v in points["lon"]] + ([float(v) for v in route[0]] if route else [])
    lats = [float(v) for v in points["lat"]] + ([float(v) for v in route[1]] if route else [])
    if lons:
        bounds = Bounds(min(lons), min(lats), max(lons), max(lats)).padded(0.25)
        span = max(bounds.lon_max - bounds.lon_min, 0.004)
        centre_lon = (bounds.lon_min + bounds.lon_max) / 2
        centre_lat = (bounds.lat_min + bounds.lat_max) / 2
        bounds = Bounds(
            centre_lon - span / 2,
            centre_lat - span / 2 / geometry.aspect * height_share,
            centre_lon + span / 2,
            centre_lat + span / 2 / geometry.aspect * height_share,
        )
    else:
        bounds = geometry.bounds.padded()
    layout = map_layout(geometry, focus=None, revision="place")
    layout["xaxis"]["range"] = [bounds.lon_min, bounds.lon_max]
    layout["yaxis"]["range"] = [bounds.lat_min, bounds.lat_max]
    layout["showlegend"] = False
    figure.update_layout(**layout)
    return figure
