"""Dispatcher views: the incident list (``/dispatch/incidents``) and the work-order board (``/dispatch/work-orders``).

The board shows orders by state, each with the actions the work-order transitions table allows from its state
for a dispatcher (dispatch, reassign, escalate, start verification, verify, fail verification, cancel): buttons,
not drag and drop, and each one is confirmed in a panel (with the crew to assign, and a note) before it is sent to
the API. A viewer sees the same board without buttons, and a forged request is refused here and by the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.api_client import ApiRefusal, ApiUnavailableError
from dashboard.auth import AccessRefusedError, require
from dashboard.context import Context
from dashboard.format import age, deadline, each_row, is_missing
from dashboard.pages.case import _data, acknowledge
from domain.access import Permission, Principal
from domain.categories import Severity
from domain.incidents import IncidentState
from domain.work_orders import TRANSITIONS, ActorKind, WorkOrderAction, WorkOrderState
from store.incidents import IncidentFilter

# The board's columns: a heading and the states it gathers, in workflow order.
BOARD_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Awaiting dispatch", ("created", "rejected", "reopened")),
    ("Dispatched", ("dispatched",)),
    ("Accepted · en route", ("accepted", "en_route")),
    ("On site", ("on_site",)),
    ("Resolved · verifying", ("resolved", "verifying")),
    ("Closed today", ("closed", "cancelled")),
)
# What the board offers a dispatcher; crew actions (accept, depart, arrive, resolve) belong to the crew's page.
BOARD_ACTIONS: tuple[WorkOrderAction, ...] = (
    WorkOrderAction.DISPATCH,
    WorkOrderAction.REASSIGN,
    WorkOrderAction.ESCALATE,
    WorkOrderAction.START_VERIFICATION,
    WorkOrderAction.VERIFY,
    WorkOrderAction.FAIL_VERIFICATION,
    WorkOrderAction.CANCEL,
)
ACTION_LABELS = {
    WorkOrderAction.DISPATCH: "Dispatch",
    WorkOrderAction.REASSIGN: "Reassign",
    WorkOrderAction.ESCALATE: "Escalate",
    WorkOrderAction.START_VERIFICATION: "Start verification",
    WorkOrderAction.VERIFY: "Verify",
    WorkOrderAction.FAIL_VERIFICATION: "Fail verification",
    WorkOrderAction.CANCEL: "Cancel",
}
NEEDS_CREW = frozenset({WorkOrderAction.DISPATCH, WorkOrderAction.REASSIGN})


def dispatcher_actions(state: str) -> list[WorkOrderAction]:
    """The board's actions a dispatcher may take from ``state``, as the transitions table says."""
    current = WorkOrderState(state)
    return [
        action
        for action in BOARD_ACTIONS
        if (transition := TRANSITIONS.get((current, action))) is not None and ActorKind.DISPATCHER in transition.actors
    ]


# --- incidents -------------------------------------------------------------------------------------------------------
def incidents_layout(context: Context, principal: Principal) -> html.Div:
    require(principal, Permission.VIEW_INCIDENTS)
    families = sorted({code.split(".", 1)[0] for code in context.config.rules.category_names})
    return html.Div(
        className="page dispatch",
        children=[
            html.H1(["Incidents ", html.Span("事件", className="zh")]),
            html.Div(
                className="filters",
                children=[
                    dcc.Dropdown(
                        id="inc-district",
                        options=[{"label": a.name, "value": a.code} for a in context.geometry.districts],
                        placeholder="every district",
                        clearable=True,
                    ),
                    dcc.Dropdown(
                        id="inc-category",
                        options=[{"label": f, "value": f} for f in families],
                        placeholder="every category",
                        clearable=True,
                    ),
                    dcc.Dropdown(
                        id="inc-severity",
                        options=[{"label": f"{s.value} and worse", "value": s.value} for s in Severity],
                        placeholder="every severity",
                        clearable=True,
                    ),
                    dcc.Checklist(
                        id="inc-states",
                        options=[{"label": s.value, "value": s.value} for s in IncidentState],
                        value=["open", "cleared"],
                        inline=True,
                    ),
                ],
            ),
            html.Div(id="inc-result", className="action-result"),
            html.Div(
                id="inc-table",
                children=incident_table(
                    context, principal, IncidentFilter(states=(IncidentState.OPEN, IncidentState.CLEARED))
                ),
            ),
            dcc.Interval(id="inc-tick", interval=int(context.config.settings.refresh_s * 1000)),
        ],
    )


def incident_filter(
    district: str | None, category: str | None, severity: str | None, states: Sequence[str] | None
) -> IncidentFilter:
    return IncidentFilter(
        states=tuple(IncidentState(s) for s in (states or [])),
        district=district or None,
        category_code=category or None,
        min_severity=Severity(severity) if severity else None,
        limit=200,
    )


def incident_table(context: Context, principal: Principal | None, where: IncidentFilter) -> Any:
    principal = require(principal, Permission.VIEW_INCIDENTS)
    frame = context.queries.incidents(where)
    if not len(frame):
        return html.Div("No incidents match.", className="empty")
    now = context.now()
    can_ack = principal.may(Permission.ACKNOWLEDGE_INCIDENT)
    rows = []
    for row in each_row(frame):
        acknowledged = not is_missing(row.acknowledged_by)
        action: Any = ""
        if can_ack and not acknowledged and row.state != "closed":
            action = html.Button(
                "Acknowledge", id={"type": "inc-ack", "id": str(row.id)}, n_clicks=0, className="action small"
            )
        order_state = (
            "—"
            if is_missing(row.work_order_state)
            else figures.STATE_LABELS.get(str(row.work_order_state), row.work_order_state)
        )
        rows.append(
            html.Tr(
                className=f"sev-row-{row.severity}",
                children=[
                    html.Td(html.Span(str(row.severity), className=f"chip sev-{row.severity}")),
                    html.Td(dcc.Link(str(row.title), href=f"/incidents/{row.id}")),
                    html.Td(
                        context.geometry.district_name(
                            None if is_missing(row.district_code) else str(row.district_code)
                        )
                    ),
                    html.Td(str(row.category_code)),
                    html.Td(age(row.opened_at, now)),
                    html.Td(str(row.state)),
                    html.Td("✓ " + str(row.acknowledged_by) if acknowledged else ""),
                    html.Td(order_state),
                    html.Td(action),
                ],
            )
        )
    head = html.Tr(
        [
            html.Th(h)
            for h in (
                "severity",
                "incident",
                "district",
                "category",
                "opened",
                "state",
                "acknowledged",
                "work order",
                "",
            )
        ]
    )
    return html.Table([html.Thead(head), html.Tbody(rows)], className="table", id="incidents-table")


# --- the work-order board ---------------------------------------------------------------------------------------------
def board_layout(context: Context, principal: Principal) -> html.Div:
    require(principal, Permission.VIEW_WORK_ORDERS)
    departments = context.queries.departments()
    fixed = principal.department_code
    return html.Div(
        className="page dispatch",
        children=[
            html.H1(["Work orders ", html.Span("工单", className="zh")]),
            html.Div(
                className="filters",
                children=[
                    dcc.Dropdown(
                        id="board-department",
                        options=[
                            {"label": n, "value": c}
                            for c, n in zip(departments["code"], departments["name"], strict=True)
                        ],
                        value=fixed,
                        disabled=fixed is not None,
                        placeholder="every department",
                        clearable=fixed is None,
                    ),
                ],
            ),
            html.Div(id="board-panel", className="action-panel", style={"display": "none"}, children=_panel_children()),
            html.Div(id="board-result", className="action-result"),
            html.Div(id="board", className="board", children=board(context, principal, fixed)),
            dcc.Store(id="board-pending"),
            dcc.Store(id="board-refresh", data=0),
            dcc.Interval(id="board-tick", interval=int(context.config.settings.refresh_s * 1000)),
        ],
    )


def _panel_children() -> list[Any]:
    return [
        html.Div(id="board-panel-title", className="panel-title"),
        dcc.Dropdown(id="board-crew", placeholder="choose the crew", clearable=False),
        dcc.Input(id="board-note", placeholder="note (why)", debounce=False, className="note", maxLength=2000),
        html.Button("Confirm", id="board-confirm", n_clicks=0, className="action"),
        html.Button("Back", id="board-back", n_clicks=0, className="action secondary"),
    ]


def board(context: Context, principal: Principal | None, department: str | None) -> Any:
    principal = require(principal, Permission.VIEW_WORK_ORDERS)
    if principal.department_code:
        department = principal.department_code  # a department's dispatcher sees its own board
    now = context.now()
    frame = context.queries.work_order_board(department=department, since=context.day_start(now))
    may_act = principal.may(Permission.MANAGE_WORK_ORDERS)
    columns = []
    for heading, states in BOARD_COLUMNS:
        rows = frame[frame["state"].isin(states)] if len(frame) else frame
        cards = [_card(row, now, context, may_act) for row in each_row(rows)]
        columns.append(
            html.Div(
                className="board-column",
                id={"type": "board-column", "states": "-".join(states)},
                children=[html.H2(f"{heading} ({len(cards)})"), *cards],
            )
        )
    return columns


def _next_due(row: Any, now: datetime) -> tuple[str, bool]:
    for label, column, done_states in (
        ("accept", "ack_due_at", {"accepted", "en_route", "on_site", "resolved", "verifying", "closed"}),
        ("arrive", "arrive_due_at", {"on_site", "resolved", "verifying", "closed"}),
        ("resolve", "resolve_due_at", {"resolved", "verifying", "closed"}),
    ):
        due = getattr(row, column)
        if row.state in done_states or is_missing(due) or row.state == "cancelled":
            continue
        moment = pd.Timestamp(due).to_pydatetime()
        return f"{label} {deadline(moment, now)}", moment < now
    return "", False


def _card(row: Any, now: datetime, context: Context, may_act: bool) -> html.Div:
    due, late = _next_due(row, now)
    crew = (
        row.crew_name if not is_missing(row.crew_name) else (row.crew_id if not is_missing(row.crew_id) else "no crew")
    )
    buttons = (
        [
            html.Button(
                ACTION_LABELS[a],
                id={"type": "board-action", "id": str(row.id), "action": a.value},
                n_clicks=0,
                className="action small",
            )
            for a in dispatcher_actions(str(row.state))
        ]
        if may_act
        else []
    )
    return html.Div(
        className=f"card pri-{row.priority}" + (" late" if late else ""),
        id={"type": "board-card", "id": str(row.id)},
        **_data(state=str(row.state)),
        children=[
            html.Div(
                [
                    html.Span(str(row.priority), className="card-priority"),
                    dcc.Link(str(row.title), href=f"/incidents/{row.incident_id}", className="card-title"),
                ]
            ),
            html.Div(
                f"{row.id} · {figures.STATE_LABELS.get(str(row.state), row.state)} · {crew} · "
                f"{context.geometry.district_name(None if is_missing(row.district_code) else str(row.district_code))}",
                className="card-detail",
            ),
            html.Div(
                (f"⚠ {due}" if late else due)
                + (f" · escalated ×{int(row.escalation_level)}" if int(row.escalation_level) else ""),
                className="card-due" + (" late" if late else ""),
            ),
            html.Div(buttons, className="card-actions"),
        ],
    )


def act(
    context: Context,
    principal: Principal | None,
    token: str | None,
    pending: Mapping[str, Any] | None,
    *,
    crew_id: str | None,
    note: str,
) -> str:
    """Send the confirmed dispatcher action to the API; the sentence to show."""
    try:
        require(principal, Permission.MANAGE_WORK_ORDERS)
    except AccessRefusedError as error:
        return f"Refused: {error}."
    if not pending or "id" not in pending or "action" not in pending:
        return "Choose an action on a card first."
    try:
        action = WorkOrderAction(str(pending["action"]))
    except ValueError:
        return f"Refused: {pending['action']!r} is not a work-order action."
    if action not in BOARD_ACTIONS:
        return f"Refused: {action.value} is not a dispatcher's action."
    if action in NEEDS_CREW and not crew_id:
        return f"Choose the crew to {action.value} to."
    if not token:
        return "Sign in again to act (no API token for this session)."
    try:
        answer = context.api.act_on_work_order(
            token, str(pending["id"]), action, note=note, crew_id=crew_id if action in NEEDS_CREW else None
        )
    except ApiRefusal as error:
        if error.needs_sign_in:
            context.forget_token()
        return f"The API refused: {error}"
    except ApiUnavailableError as error:
        return f"Not done: {error}"
    order = answer.get("work_order")
    state = answer.get("state") or (order.get("state") if isinstance(order, dict) else None)
    return f"{ACTION_LABELS[action]}: done for {pending['id']}" + (f", now {state}." if state else ".")


# --- callbacks --------------------------------------------------------------------------------------------------------
def register(app: Dash, context: Context) -> None:
    @app.callback(
        Output("inc-table", "children"),
        Input("inc-district", "value"),
        Input("inc-category", "value"),
        Input("inc-severity", "value"),
        Input("inc-states", "value"),
        Input("inc-tick", "n_intervals"),
        Input("inc-result", "children"),
        prevent_initial_call=True,
    )
    def _incidents(
        district: str | None, category: str | None, severity: str | None, states: list[str] | None, *_: Any
    ) -> Any:
        try:
            return incident_table(context, context.principal(), incident_filter(district, category, severity, states))
        except AccessRefusedError as error:
            raise PreventUpdate from error

    @app.callback(
        Output("inc-result", "children"), Input({"type": "inc-ack", "id": ALL}, "n_clicks"), prevent_initial_call=True
    )
    def _acknowledge(clicks: list[int]) -> str:
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not any(clicks or []):
            raise PreventUpdate
        session = context.session()
        return acknowledge(
            context, session.principal if session else None, session.api_token if session else None, str(trigger["id"])
        )

    @app.callback(
        Output("board", "children"),
        Input("board-department", "value"),
        Input("board-tick", "n_intervals"),
        Input("board-refresh", "data"),
        prevent_initial_call=True,
    )
    def _board(department: str | None, *_: Any) -> Any:
        try:
            return board(context, context.principal(), department)
        except AccessRefusedError as error:
            raise PreventUpdate from error

    @app.callback(
        Output("board-pending", "data"),
        Output("board-panel", "style"),
        Output("board-panel-title", "children"),
        Output("board-crew", "options"),
        Output("board-crew", "style"),
        Input({"type": "board-action", "id": ALL, "action": ALL}, "n_clicks"),
        Input("board-back", "n_clicks"),
        prevent_initial_call=True,
    )
    def _choose(clicks: list[int], _: int) -> tuple[Any, ...]:
        trigger = ctx.triggered_id
        hidden = {"display": "none"}
        if trigger == "board-back":
            return None, hidden, "", [], hidden
        if not isinstance(trigger, dict) or not ctx.triggered or not ctx.triggered[0].get("value"):
            raise PreventUpdate
        try:
            principal = require(context.principal(), Permission.MANAGE_WORK_ORDERS)
        except AccessRefusedError as error:
            return None, {"display": "flex"}, f"Refused: {error}.", [], hidden
        action = WorkOrderAction(str(trigger["action"]))
        options: list[dict[str, str]] = []
        if action in NEEDS_CREW:
            board_rows = context.queries.work_order_board(
                department=principal.department_code, since=context.now() - timedelta(days=1)
            )
            match = board_rows[board_rows["id"] == trigger["id"]]
            department = str(match.iloc[0]["department_code"]) if len(match) else principal.department_code
            options = [
                {
                    "label": f"{c.crew.name} ({c.crew.id}) · {c.crew.status.value} · {c.open_work_orders} open",
                    "value": c.crew.id,
                }
                for c in context.queries.crews(department=department)
                if c.crew.status.value != "off_duty"
            ]
        title = f"{ACTION_LABELS[action]} {trigger['id']}"
        return (
            {"id": trigger["id"], "action": action.value},
            {"display": "flex"},
            title,
            options,
            {} if options else hidden,
        )

    @app.callback(
        Output("board-result", "children"),
        Output("board-refresh", "data"),
        Output("board-panel", "style", allow_duplicate=True),
        Input("board-confirm", "n_clicks"),
        State("board-pending", "data"),
        State("board-crew", "value"),
        State("board-note", "value"),
        State("board-refresh", "data"),
        prevent_initial_call=True,
    )
    def _confirm(
        clicks: int, pending: dict[str, Any] | None, crew: str | None, note: str | None, refresh: int | None
    ) -> tuple[Any, ...]:
        if not clicks:
            raise PreventUpdate
        session = context.session()
        message = act(
            context,
            session.principal if session else None,
            session.api_token if session else None,
            pending,
            crew_id=crew,
            note=note or "",
        )
        done = message.split(":", 1)[0] in set(ACTION_LABELS.values())
        return message, (refresh or 0) + 1, {"display": "none"} if done else no_update


__all__ = ["BOARD_COLUMNS", "act", "board", "board_layout", "dispatcher_actions", "incident_table", "incidents_layout"]
