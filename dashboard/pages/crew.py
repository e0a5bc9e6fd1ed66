"""The crew's page (``/crew``), phone-sized: my tasks, a map to the chosen one, and accept / en route / on site /
resolved (with a note), each sent to the API with the crew's own token.

Only the signed-in crew's orders are read (by the crew id of the session, never one the page sends), so no other
crew's task ever reaches this page's payload; an action on an order that is not the crew's is refused before it
is sent, and the API refuses it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pandas as pd
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import figures
from dashboard.api_client import ApiRefusal, ApiUnavailableError
from dashboard.auth import AccessRefusedError, require
from dashboard.context import Context
from dashboard.format import age, each_row, is_missing
from domain.access import Permission, Principal
from domain.geo import Position
from domain.work_orders import TRANSITIONS, ActorKind, WorkOrderAction, WorkOrderState

CREW_BUTTONS: tuple[tuple[WorkOrderAction, str], ...] = (
    (WorkOrderAction.ACCEPT, "Accept"),
    (WorkOrderAction.DEPART, "En route"),
    (WorkOrderAction.ARRIVE, "On site"),
    (WorkOrderAction.RESOLVE, "Resolved"),
    (WorkOrderAction.REJECT, "Reject"),
)


def crew_actions(state: str) -> list[tuple[WorkOrderAction, str]]:
    """The buttons the transitions table allows a crew from ``state``."""
    current = WorkOrderState(state)
    return [
        (action, label)
        for action, label in CREW_BUTTONS
        if (t := TRANSITIONS.get((current, action))) is not None and ActorKind.CREW in t.actors
    ]


def _own_tasks(context: Context, principal: Principal) -> pd.DataFrame:
    assert principal.crew_id is not None  # a crew principal always names its crew (domain.access.Principal)
    return context.queries.crew_tasks(principal.crew_id, since=context.now() - timedelta(hours=12))


def layout(context: Context, principal: Principal) -> html.Div:
    require(principal, Permission.OWN_TASKS)
    tasks = _own_tasks(context, principal)
    first = str(tasks.iloc[0]["id"]) if len(tasks) else None
    return html.Div(
        className="crew-page",
        children=[
            html.Div(id="crew-head", className="crew-head", children=_head(context, principal)),
            html.Div(id="crew-tasks", className="crew-tasks", children=task_list(context, principal, tasks, first)),
            html.Div(id="crew-task", className="crew-task", children=task_detail(context, principal, tasks, first)),
            html.Div(id="crew-result", className="action-result"),
            dcc.Store(id="crew-selected", data=first),
            dcc.Store(id="crew-refresh", data=0),
            dcc.Interval(id="crew-tick", interval=int(context.config.settings.refresh_s * 1000)),
        ],
    )


def _head(context: Context, principal: Principal) -> list[Any]:
    assert principal.crew_id is not None
    crew = context.queries.crew(principal.crew_id)
    name = crew["name"] if crew else principal.crew_id
    return [
        html.Div(f"{name}", className="crew-name"),
        html.Div(f"crew {principal.crew_id} · my tasks · 我的任务", className="crew-sub"),
    ]


def task_list(context: Context, principal: Principal | None, tasks: pd.DataFrame, selected: str | None) -> list[Any]:
    require(principal, Permission.OWN_TASKS)
    if not len(tasks):
        return [html.Div("No tasks. 暂无任务", className="empty good")]
    now = context.now()
    items = []
    for row in each_row(tasks):
        items.append(
            html.Button(
                id={"type": "crew-pick", "id": str(row.id)},
                n_clicks=0,
                className="crew-item" + (" selected" if row.id == selected else "") + f" pri-{row.priority}",
                children=[
                    html.Div([html.Span(str(row.priority), className="card-priority"), html.Span(str(row.title))]),
                    html.Div(
                        f"{figures.STATE_LABELS.get(str(row.state), row.state)} · "
                        f"{_district(context, row.district_code)} · "
                        f"since {age(row.created_at, now)}",
                        className="card-detail",
                    ),
                ],
            )
        )
    return items


def _district(context: Context, code: Any) -> str:
    return context.geometry.district_name(None if is_missing(code) else str(code))


def task_detail(context: Context, principal: Principal | None, tasks: pd.DataFrame, selected: str | None) -> list[Any]:
    principal = require(principal, Permission.OWN_TASKS)
    rows = tasks[tasks["id"] == selected] if selected and len(tasks) else tasks.iloc[0:0]
    if not len(rows):
        return []
    task = rows.iloc[0]
    now = context.now()
    assert principal.crew_id is not None
    crew = context.queries.crew(principal.crew_id)
    points = []
    route = None
    if not is_missing(task["lon"]):
        points.append({"lon": float(task["lon"]), "lat": float(task["lat"]), "label": "task", "kind": "incident"})
    if crew and not is_missing(crew["lon"]):
        points.append({"lon": float(crew["lon"]), "lat": float(crew["lat"]), "label": "me", "kind": "crew"})
        if not is_missing(task["lon"]) and task["state"] in ("dispatched", "accepted", "en_route"):
            route = context.route(
                Position(float(crew["lon"]), float(crew["lat"])), Position(float(task["lon"]), float(task["lat"]))
            )
    dues = []
    for label, column in (
        ("accept by", "ack_due_at"),
        ("on site by", "arrive_due_at"),
        ("resolve by", "resolve_due_at"),
    ):
        if not is_missing(task[column]):
            dues.append(f"{label} {age(task[column], now)}")
    buttons = [
        html.Button(
            label,
            id={"type": "crew-action", "id": str(task["id"]), "action": action.value},
            n_clicks=0,
            className="action big",
        )
        for action, label in crew_actions(str(task["state"]))
    ]
    return [
        html.H2(str(task["title"]), id="crew-task-title"),
        html.Div(
            f"{task['id']} · {figures.STATE_LABELS.get(str(task['state']), task['state'])} · {task['priority']}",
            className="crew-state",
            id="crew-task-state",
        ),
        html.Div(str(task["condition"]), className="rule-condition"),
        html.Div(" · ".join(dues), className="card-due"),
        dcc.Graph(
            figure=figures.place_map(
                context.geometry,
                pd.DataFrame(points, columns=["lon", "lat", "label", "kind"]),
                route=route,
                height_share=1.1,
            ),
            className="crew-map",
            config={"displayModeBar": False},
        ),
        dcc.Textarea(
            id="crew-note",
            placeholder="note for the dispatcher (what you found, what you did)",
            className="crew-note",
            maxLength=2000,
        ),
        html.Div(buttons, className="crew-buttons"),
    ]


def crew_act(
    context: Context, principal: Principal | None, token: str | None, target: Mapping[str, Any], note: str
) -> str:
    """One crew action on one of the crew's own orders, through the API."""
    try:
        principal = require(principal, Permission.OWN_TASKS)
    except AccessRefusedError as error:
        return f"Refused: {error}."
    try:
        action = WorkOrderAction(str(target.get("action")))
    except ValueError:
        return "Refused: not a crew action."
    if action not in {a for a, _ in CREW_BUTTONS}:
        return f"Refused: {action.value} is not a crew's action."
    tasks = _own_tasks(context, principal)
    if str(target.get("id")) not in set(tasks["id"]):
        return "Refused: that work order is not one of your tasks."
    if not token:
        return "Sign in again to act (no API token for this session)."
    try:
        context.api.act_on_work_order(token, str(target["id"]), action, note=note)
    except ApiRefusal as error:
        if error.needs_sign_in:
            context.forget_token()
        return f"The API refused: {error}"
    except ApiUnavailableError as error:
        return f"Not sent: {error}"
    return f"Done: {dict(CREW_BUTTONS)[action].lower()}."


def register(app: Dash, context: Context) -> None:
    @app.callback(
        Output("crew-tasks", "children"),
        Output("crew-task", "children"),
        Output("crew-selected", "data"),
        Input("crew-tick", "n_intervals"),
        Input({"type": "crew-pick", "id": ALL}, "n_clicks"),
        Input("crew-refresh", "data"),
        State("crew-selected", "data"),
        prevent_initial_call=True,
    )
    def _refresh(_: Any, picks: list[int], refresh: int, selected: str | None) -> tuple[Any, Any, Any]:
        principal = context.principal()
        try:
            require(principal, Permission.OWN_TASKS)
        except AccessRefusedError as error:
            raise PreventUpdate from error
        assert principal is not None
        trigger = ctx.triggered_id
        if isinstance(trigger, dict) and trigger.get("type") == "crew-pick":
            if not ctx.triggered or not ctx.triggered[0].get("value"):
                raise PreventUpdate
            selected = str(trigger["id"])
        elif ctx.triggered_id == "crew-tick":
            # A tick refreshes the list but leaves the open task (and the note being typed) alone.
            tasks = _own_tasks(context, principal)
            return task_list(context, principal, tasks, selected), no_update, no_update
        tasks = _own_tasks(context, principal)
        if selected not in set(tasks["id"]):
            selected = str(tasks.iloc[0]["id"]) if len(tasks) else None
        return (
            task_list(context, principal, tasks, selected),
            task_detail(context, principal, tasks, selected),
            selected,
        )

    @app.callback(
        Output("crew-result", "children"),
        Output("crew-refresh", "data"),
        Input({"type": "crew-action", "id": ALL, "action": ALL}, "n_clicks"),
        State("crew-note", "value"),
        State("crew-refresh", "data"),
        prevent_initial_call=True,
    )
    def _act(clicks: list[int], note: str | None, refresh: int | None) -> tuple[str, int]:
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not ctx.triggered or not ctx.triggered[0].get("value"):
            raise PreventUpdate
        session = context.session()
        message = crew_act(
            context, session.principal if session else None, session.api_token if session else None, trigger, note or ""
        )
        return message, (refresh or 0) + 1
