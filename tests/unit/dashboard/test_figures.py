"""The figure builders over small frames: layers present, counts right, colours by severity and status."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import figures
from dashboard.thresholds import thresholds_for
from tests.unit.dashboard.fakes import GEOMETRY, RULES, devices, incidents


def _snapshot(
    device_frame: pd.DataFrame, incident_frame: pd.DataFrame, *, aggregate: bool = False, cells: Any = None
) -> figures.MapSnapshot:
    empty_cells = pd.DataFrame({"grid_cell_code": [], "devices": [], "not_online": [], "open_incidents": []})
    return figures.MapSnapshot(
        devices=device_frame,
        cells=cells if cells is not None else empty_cells,
        incidents=incident_frame,
        children=incident_frame.iloc[0:0],
        crews=pd.DataFrame(
            columns=["crew_id", "name", "status", "lon", "lat", "work_order_id", "task_title", "task_state"]
        ),
        routes={"crew-1": ((24.94, 24.95), (60.16, 60.17))},
        aggregate=aggregate,
    )


def _by_key(figure: Any) -> dict[str, Any]:
    return {trace.meta: trace for trace in figure.data}


def _points(trace: Any) -> int:
    """Points a trace draws: None and NaN only break its line."""
    values = figures.untyped(trace.x)
    return len([x for x in (values if values is not None else ()) if x is not None and x == x])


def test_the_map_has_every_layer_in_its_fixed_order() -> None:
    figure = figures.city_map(GEOMETRY, _snapshot(devices(["online"]), incidents(["low"])))
    assert [trace.meta for trace in figure.data] == list(figures.MAP_TRACES)
    traces = _by_key(figure)
    assert _points(traces["district labels"]) == len(GEOMETRY.districts) == 5
    assert _points(traces["cells"]) == len(GEOMETRY.cells) * 5  # one closed ring per grid cell
    assert _points(traces["roads"]) > 1000
    assert _points(traces["crew routes"]) == 2
    assert figure.layout.yaxis.scaleanchor == "x"
    assert figure.layout.yaxis.scaleratio == pytest.approx(GEOMETRY.aspect)


def test_devices_are_counted_and_coloured_by_status() -> None:
    statuses = ["online"] * 5 + ["offline"] * 2 + ["faulty", "provisioned"]
    traces = _by_key(figures.city_map(GEOMETRY, _snapshot(devices(statuses), incidents([]))))
    for status, expected in {"online": 5, "offline": 2, "faulty": 1, "provisioned": 1, "decommissioned": 0}.items():
        trace = traces[f"devices {status}"]
        assert _points(trace) == expected
        assert trace.marker.color == figures.STATUS_COLOURS[status]
        assert trace.showlegend is (expected > 0)
    assert traces["devices offline"].name == "offline"  # the legend says the status, the key stays in meta


def test_incidents_are_coloured_and_sized_by_severity_with_the_most_severe_on_top() -> None:
    frame = incidents(["critical", "high", "high", "low"], children=2)
    traces = _by_key(figures.city_map(GEOMETRY, _snapshot(devices([]), frame)))
    assert [_points(traces[f"incidents {s}"]) for s in figures.SEVERITY_ORDER] == [1, 2, 0, 1]
    for severity in figures.SEVERITY_ORDER:
        assert traces[f"incidents {severity}"].marker.color == figures.SEVERITY_COLOURS[severity]
    assert traces["incidents critical"].marker.size > traces["incidents low"].marker.size
    order = [t.meta for t in figures.city_map(GEOMETRY, _snapshot(devices([]), incidents(["low"]))).data]
    assert order.index("incidents critical") > order.index("incidents low")
    # A parent with linked incidents is drawn once, marked so, and carries its children count for the click.
    parent = traces["incidents critical"]
    assert list(parent.marker.symbol) == ["circle-dot"]
    assert list(parent.customdata[0]) == ["incident", "inc-0", 2]
    assert list(traces["incidents low"].marker.symbol) == ["circle"]


def test_at_city_scale_the_map_draws_a_grid_cell_choropleth_instead_of_markers() -> None:
    cells = pd.DataFrame(
        {
            "grid_cell_code": GEOMETRY_CELLS[:5],
            "devices": [10, 10, 10, 10, 10],
            "not_online": [0, 1, 2, 4, 9],
            "open_incidents": [0, 0, 1, 0, 3],
        }
    )
    many = devices(["online"] * 50)
    traces = _by_key(figures.city_map(GEOMETRY, _snapshot(many, incidents([]), aggregate=True, cells=cells)))
    assert sum(_points(traces[f"devices {s}"]) for s in figures.STATUS_ORDER) == 0
    bins = [_points(traces[f"cells {label}"]) // 5 for _, _, label, _ in figures.HEALTH_BINS]
    assert bins == [1, 1, 1, 1, 1]  # 0 %, 10 %, 20 %, 40 %, 90 % down: one cell in each bin
    assert _points(traces["cell summary"]) == 4  # hover for the cells with something to say: not the all-online one
    assert list(traces["cell summary"].customdata[-1]) == [GEOMETRY_CELLS[4], 10, 9, 90, 3]
    assert "not online" in traces["cell summary"].hovertemplate


GEOMETRY_CELLS = sorted(GEOMETRY.cells)


@pytest.mark.parametrize(
    ("share", "index"), [(0.0, 0), (0.01, 1), (0.10, 1), (0.11, 2), (0.25, 2), (0.3, 3), (0.5, 3), (0.51, 4), (1.0, 4)]
)
def test_health_bins_have_closed_upper_bounds(share: float, index: int) -> None:
    assert figures.health_bin(share) == index


def test_focus_outlines_and_zooms_to_a_district() -> None:
    area = GEOMETRY.districts[1]
    figure = figures.city_map(GEOMETRY, _snapshot(devices([]), incidents([])), focus=area.code)
    assert _points(_by_key(figure)["focus"]) > 3
    low, high = figure.layout.xaxis.range
    assert low <= area.bounds.lon_min
    assert high >= area.bounds.lon_max
    assert high - low < GEOMETRY.bounds.lon_max - GEOMETRY.bounds.lon_min + 0.01


def test_the_alarm_gauge_marks_the_isa_18_2_levels() -> None:
    gauge = figures.alarm_load_gauge(14.0).data[0].gauge
    assert [tuple(step.range) for step in gauge.steps][:2] == [(0, 6.0), (6.0, 12.0)]
    assert gauge.threshold.value == 12.0
    assert figures.alarm_load_gauge(40.0).data[0].gauge.axis.range[1] >= 40


def test_work_orders_stack_in_workflow_order_and_skip_empty_states() -> None:
    figure = figures.work_order_bar(pd.DataFrame({"state": ["closed", "created", "on_site"], "n": [4, 2, 0]}))
    assert [t.name for t in figure.data] == ["awaiting dispatch", "closed"]
    assert [t.x[0] for t in figure.data] == [2, 4]


def test_a_time_series_draws_the_rule_thresholds_across_it() -> None:
    series = pd.DataFrame(
        {
            "bucket": pd.date_range("2026-06-01", periods=3, freq="1h", tz="UTC"),
            "mean": [1.0, 20.0, 3.0],
            "min": [0.0, 15, 2],
            "max": [2.0, 30, 4],
        }
    )
    lines = thresholds_for(RULES, "water_level_cm", "water_level")
    figure = figures.time_series(series, lines, title="wl-1", unit="cm")
    assert [t.name for t in figure.data] == ["min-max", "mean"]
    assert sorted(shape.y0 for shape in figure.layout.shapes) == sorted(t.value for t in lines)


def test_the_sla_board_shows_each_department_against_the_target() -> None:
    board = pd.DataFrame(
        {
            "department_code": ["water", "gas"],
            "name": ["Water", "Gas"],
            "due": [10, 0],
            "met": [8, 0],
            "overdue_acknowledge": [1, 0],
            "overdue_arrive": [0, 2],
            "overdue_resolve": [0, 0],
        }
    )
    figure = figures.sla_board(board)
    on_time = figure.data[0]
    assert dict(zip(on_time.y, on_time.text, strict=True)) == {"Water": "80%  (8/10)", "Gas": "no deadline yet"}
    assert [t.name for t in figure.data[1:]] == ["overdue to acknowledge", "overdue to arrive", "overdue to resolve"]


def test_evaluation_keeps_nothing_to_judge_apart_from_zero() -> None:
    from datetime import UTC, datetime

    from dashboard.pages.registry import evaluation_frame
    from domain.evaluation import EvaluationRow, EvaluationScope, StageFigures
    from domain.sla import SlaStage

    moment = datetime(2026, 6, 1, tzinfo=UTC)
    row = EvaluationRow(
        scope=EvaluationScope.DEPARTMENT,
        key="water",
        since=moment,
        until=moment,
        cases=4,
        closed=1,
        cancelled=0,
        closure_rate=0.25,
        stages={
            SlaStage.ACKNOWLEDGE: StageFigures(reached=4, on_time_rate=0.75, mean_s=300.0, p90_s=540.0),
            SlaStage.ARRIVE: StageFigures(reached=2, on_time_rate=1.0, mean_s=1200.0, p90_s=1500.0),
            SlaStage.RESOLVE: StageFigures(reached=0, on_time_rate=None, mean_s=None, p90_s=None),
        },
        reopen_rate=None,
        breaches=1,
    )
    frame = evaluation_frame([row], {"water": "Water and drainage"})
    record = frame.iloc[0]
    assert (record["name"], record["acknowledge_pct"], record["arrive_min"]) == ("Water and drainage", 75.0, 20.0)
    assert record["resolve_pct"] is None
    assert record["reopen_pct"] is None
    figure = figures.evaluation_figure(frame)
    assert [t.name for t in figure.data][:3] == ["accepted on time", "arrived on time", "resolved on time"]


def test_every_figure_is_valid_plotly_even_though_the_map_skips_validation() -> None:
    frame = incidents(["critical", "low"], children=1)
    built = [
        figures.city_map(GEOMETRY, _snapshot(devices(["online", "offline"]), frame), focus=GEOMETRY.districts[0].code),
        figures.place_map(
            GEOMETRY, pd.DataFrame({"lon": [24.94], "lat": [60.17], "label": ["x"], "kind": ["incident"]})
        ),
        figures.alarm_load_gauge(3.0),
        figures.work_order_bar(pd.DataFrame({"state": ["created", "closed"], "n": [1, 2]})),
    ]
    for figure in built:
        go.Figure(figure.to_dict())  # raises ValueError on any property plotly does not know
