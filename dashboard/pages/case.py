"""The case page (``/incidents/<id>``): the whole chain of one incident on one timeline, for operators and for a
citizen complaint review.

raw readings (the evidence, and the series around it) → the rule (its condition and thresholds) → the incident
(opened, updated, cleared ...) → the dispatcher's decisions → the work order → every transition with its actor and
position → verification → closed. Each step names its stage of the closed loop (发现 discover, 立案 register,
派遣 dispatch, 处置 handle, 反馈 report back, 核查 verify, 结案 close).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from dash import Dash, Input, Output, State, dcc, html

from dashboard import figures
from dashboard.api_client import ApiRefusal, ApiUnavailableError
from dashboard.auth import AccessRefusedError, require
from dashboard.context import Context
from dashboard.format import duration, each_row, local_time, utc_time
from dashboard.queries import CaseFile
from dashboard.thresholds import thresholds_for
from domain.access import Permission, Principal
from rules.catalogue import RuleSet

STAGES = {
    "discover": "发现 discover",
    "register": "立案 register",
    "dispatch": "派遣 dispatch",
    "handle": "处置 handle",
    "report": "反馈 report back",
    "verify": "核查 verify",
    "close": "结案 close",
}
_INCIDENT_STAGE = {
    "opened": "register",
    "updated": "register",
    "correlated": "register",
    "reopened": "discover",
    "acknowledged": "dispatch",
    "cleared": "verify",
    "closed": "close",
}
_ACTION_STAGE = {
    "dispatch": "dispatch",
    "reassign": "dispatch",
    "escalate": "dispatch",
    "accept": "handle",
    "reject": "dispatch",
    "depart": "handle",
    "arrive": "handle",
    "resolve": "report",
    "note": "report",
    "start_verification": "verify",
    "verify": "verify",
    "fail_verification": "verify",
    "cancel": "close",
}
_ACTION_WORDS = {
    "dispatch": "dispatched to",
    "reassign": "reassigned to",
    "escalate": "escalated",
    "accept": "accepted by",
    "reject": "rejected by",
    "depart": "en route:",
    "arrive": "on site:",
    "resolve": "reported resolved by",
    "note": "note from",
    "start_verification": "verification started",
    "verify": "verified",
    "fail_verification": "verification failed, reopened",
    "cancel": "cancelled",
}


@dataclass(frozen=True, slots=True)
class ChainStep:
    at: datetime
    stage: str
    what: str
    who: str = ""
    where: str = ""
    note: str = ""
    order: int = 0  # ties at the same instant keep the chain's logical order


def _data(**attributes: str) -> Any:
    """``data-*`` attributes for a component (Dash passes them through to the page)."""
    return {f"data-{name}": value for name, value in attributes.items()}


def case_chain(case: CaseFile, rules: RuleSet, zone: ZoneInfo) -> list[ChainStep]:
    """Every step behind the incident, in time order."""
    incident = case.record.incident
    steps: list[ChainStep] = []
    for evidence in incident.evidence:
        steps.append(
            ChainStep(
                evidence.ts,
                "discover",
                f"reading {evidence.metric} = {evidence.value:g}",
                who=f"device {evidence.device_id}",
                order=0,
            )
        )
    rule = rules.rules.get(incident.rule_id)
    rule_text = f"rule {incident.rule_id} v{incident.rule_version} matched: {incident.condition}"
    if rule is not None and rule.version != incident.rule_version:
        rule_text += f" (the catalogue is now at v{rule.version})"
    steps.append(ChainStep(incident.opened_at, "discover", rule_text, who="rule engine", order=1))
    for entry in case.timeline:
        detail = f" — {entry.detail}" if entry.detail else ""
        steps.append(
            ChainStep(
                entry.at,
                _INCIDENT_STAGE.get(entry.type.value, "register"),
                f"incident {entry.type.value} ({entry.severity.value}, {entry.state.value}){detail}",
                who="rule engine" if entry.type.value != "acknowledged" else (incident.acknowledged_by or ""),
                order=2,
            )
        )
    if incident.acknowledged_at and not any(e.type.value == "acknowledged" for e in case.timeline):
        steps.append(
            ChainStep(
                incident.acknowledged_at,
                "dispatch",
                "incident acknowledged",
                who=incident.acknowledged_by or "",
                order=3,
            )
        )
    for row in each_row(case.decisions):
        detail = f": {row.detail}" if row.detail else ""
        steps.append(
            ChainStep(
                pd.Timestamp(row.decided_at).to_pydatetime(),
                "dispatch",
                f"dispatcher decision {row.decision}{detail}",
                who="dispatcher (system)",
                order=4,
            )
        )
    order = case.work_order
    if order is not None:
        due = ", ".join(
            f"{stage} by {local_time(moment, zone)}"
            for stage, moment in (
                ("accept", order.ack_due_at),
                ("arrive", order.arrive_due_at),
                ("resolve", order.resolve_due_at),
            )
            if moment is not None
        )
        steps.append(
            ChainStep(
                order.created_at,
                "register",
                f"work order {order.id} registered for {order.department_code} ({order.unit_code}), "
                f"{order.priority.value}; due: {due}",
                who="dispatcher (system)",
                order=5,
            )
        )
        for audit in case.audit:
            crew = audit.crew_id
            crew_text = (
                f" {case.crew_names.get(crew, crew)} ({crew})"
                if crew and audit.action in ("dispatch", "reassign")
                else ""
            )
            actor = audit.actor.id
            named = case.crew_names.get(actor, actor) if audit.actor.kind.value == "crew" else actor
            actor_text = f"{audit.actor.kind.value} {named}"
            words = _ACTION_WORDS.get(audit.action, audit.action)
            target = crew_text or (f" {actor_text}" if words.endswith(("by", "from")) else "")
            where = f"{audit.position.lat:.5f}, {audit.position.lon:.5f}" if audit.position else ""
            stage = "close" if audit.to_state == "closed" else _ACTION_STAGE.get(audit.action, "handle")
            steps.append(
                ChainStep(
                    audit.at,
                    stage,
                    f"{words}{target} — {audit.from_state} → {audit.to_state} ({audit.priority})",
                    who=actor_text,
                    where=where,
                    note=audit.note,
                    order=6 + audit.seq,
                )
            )
    for row in each_row(case.breaches):
        steps.append(
            ChainStep(
                pd.Timestamp(row.detected_at).to_pydatetime(),
                "dispatch",
                f"SLA: the {row.stage} deadline ({local_time(row.due_at, zone)}) was missed",
                who="SLA timer",
                order=5,
            )
        )
    return sorted(steps, key=lambda s: (s.at, s.order))


def case_summary(case: CaseFile, zone: ZoneInfo) -> str:
    """One sentence for a reviewer: found, registered, on site, resolved, verified, closed — when and by whom."""
    incident = case.record.incident
    parts = [
        f"Found by {'sensor ' + incident.source if case.record.kind.value == 'device' else incident.source}"
        f" at {local_time(incident.opened_at, zone, date=True)}"
    ]
    firsts: dict[str, Any] = {}
    for audit in case.audit:
        firsts.setdefault(audit.action, audit)
    order = case.work_order
    if order is not None:
        parts.append(f"work order {order.id} registered {local_time(order.created_at, zone)}")
    for action, words in (
        ("dispatch", "dispatched"),
        ("arrive", "crew on site"),
        ("resolve", "reported resolved"),
        ("verify", "verified"),
    ):
        if action in firsts:
            parts.append(f"{words} {local_time(firsts[action].at, zone)}")
    if order is not None and order.state.value == "closed":
        parts.append(f"closed after {duration((order.updated_at - order.created_at).total_seconds())}")
    elif order is not None:
        parts.append(f"now {figures.STATE_LABELS.get(order.state.value, order.state.value)}")
    else:
        parts.append("no work order")
    return "; ".join(parts) + "."


def evidence_figures(case: CaseFile, rules: RuleSet) -> list[Any]:
    incident = case.record.incident
    device_type = case.device["type_code"] if case.device else None
    graphs = []
    for (device_id, metric), series in case.series.items():
        evidence = pd.DataFrame(
            [
                {"ts": e.ts, "value": e.value}
                for e in incident.evidence
                if (e.device_id, e.metric) == (device_id, metric)
            ]
        )
        marks = [(incident.opened_at, "opened")]
        if incident.cleared_at:
            marks.append((incident.cleared_at, "cleared"))
        frame = series.rename(columns={"ts": "bucket", "value": "mean"})
        graphs.append(
            dcc.Graph(
                figure=figures.time_series(
                    frame,
                    thresholds_for(rules, metric, device_type if device_id == incident.source else None),
                    title=f"{device_id} · {metric} (raw readings around the evidence)",
                    unit=metric.rsplit("_", 1)[-1],
                    evidence=evidence,
                    marks=marks,
                ),
                config={"displaylogo": False},
                className="case-series",
            )
        )
    return graphs or [
        html.Div("No readings behind this incident (reported by a person, or a composite).", className="empty")
    ]


def _place_points(case: CaseFile, zone: ZoneInfo) -> pd.DataFrame:
    incident = case.record.incident
    rows = []
    if incident.position:
        rows.append(
            {"lon": incident.position.lon, "lat": incident.position.lat, "label": incident.title, "kind": "incident"}
        )
    for audit in case.audit:
        if audit.position:
            rows.append(
                {
                    "lon": audit.position.lon,
                    "lat": audit.position.lat,
                    "label": f"{audit.action} {audit.at:%H:%M}",
                    "kind": "event",
                }
            )
    return pd.DataFrame(rows, columns=["lon", "lat", "label", "kind"])


def layout(context: Context, principal: Principal, incident_id: str) -> Any:
    require(principal, Permission.VIEW_INCIDENTS)
    case = context.queries.case(incident_id)
    if case is None:
        return html.Div([html.H1("No such incident"), html.P(f"There is no incident {incident_id}.")], className="page")
    zone = context.zone
    incident = case.record.incident
    rule = context.config.rules.rules.get(incident.rule_id)
    chain = case_chain(case, context.config.rules, zone)
    place = context.geometry.district_name(incident.district)
    can_ack = (
        principal.may(Permission.ACKNOWLEDGE_INCIDENT)
        and incident.state.value != "closed"
        and incident.acknowledged_at is None
    )
    return html.Div(
        className="page case",
        children=[
            html.Div(
                className="case-head",
                children=[
                    html.Span(incident.severity.value.upper(), className=f"chip sev-{incident.severity.value}"),
                    html.H1(incident.title, id="case-title"),
                    html.Span(incident.state.value, className=f"chip state-{incident.state.value}", id="case-state"),
                ],
            ),
            html.P(case_summary(case, zone), className="case-summary", id="case-summary"),
            html.Div(
                className="case-facts",
                children=[
                    html.Span(f"incident {incident.id}"),
                    html.Span(f"category {incident.category_code}"),
                    html.Span(f"{place} · cell {incident.grid_cell or '—'}"),
                    html.Span(f"source {incident.source} ({case.record.kind.value})"),
                    html.Span(f"opened {local_time(incident.opened_at, zone, date=True, seconds=True)} ({zone.key})"),
                    *(
                        [dcc.Link(f"parent {incident.parent_id}", href=f"/incidents/{incident.parent_id}")]
                        if incident.parent_id
                        else []
                    ),
                ],
            ),
            html.Div(
                className="case-actions",
                children=[
                    html.Button("Acknowledge", id="case-ack", n_clicks=0, className="action", disabled=not can_ack)
                    if principal.may(Permission.ACKNOWLEDGE_INCIDENT)
                    else html.Span("read only", className="chip"),
                    html.Span(id="case-ack-result", className="action-result"),
                    dcc.Store(id="case-incident", data=incident.id),
                ],
            ),
            html.Div(
                className="case-body",
                children=[
                    html.Div(
                        className="case-chain",
                        children=[
                            html.H2("The chain · 全流程"),
                            html.Ol(
                                id="case-chain",
                                className="chain",
                                children=[
                                    html.Li(
                                        className=f"chain-step stage-{step.stage}",
                                        **_data(stage=step.stage),
                                        children=[
                                            html.Div(
                                                [
                                                    html.Span(
                                                        local_time(step.at, zone, seconds=True),
                                                        className="chain-time",
                                                        title=utc_time(step.at),
                                                    ),
                                                    html.Span(STAGES[step.stage], className="chain-stage"),
                                                ]
                                            ),
                                            html.Div(step.what, className="chain-what"),
                                            html.Div(
                                                " · ".join(
                                                    p for p in (step.who, step.where and f"at {step.where}") if p
                                                ),
                                                className="chain-who",
                                            ),
                                            *(
                                                [html.Blockquote(step.note, className="chain-note")]
                                                if step.note
                                                else []
                                            ),
                                        ],
                                    )
                                    for step in chain
                                ],
                            ),
                        ],
                    ),
                    html.Div(
                        className="case-side",
                        children=[
                            html.H2("Evidence · 证据"),
                            *evidence_figures(case, context.config.rules),
                            html.H2("Rule · 规则"),
                            html.Div(
                                className="rule-box",
                                children=[
                                    html.Div(
                                        f"{incident.rule_id} (version {incident.rule_version})", className="rule-id"
                                    ),
                                    html.Div(incident.condition, className="rule-condition"),
                                    html.Div(rule.reference if rule else "", className="rule-reference"),
                                ],
                            ),
                            html.H2("Work order · 工单"),
                            _work_order_box(case, zone),
                            *(
                                [
                                    html.H2("Linked incidents"),
                                    html.Ul(
                                        [
                                            html.Li(
                                                dcc.Link(
                                                    f"{r.severity}: {r.title} ({r.state})", href=f"/incidents/{r.id}"
                                                )
                                            )
                                            for r in each_row(case.children)
                                        ]
                                    ),
                                ]
                                if len(case.children)
                                else []
                            ),
                            html.H2("Where · 位置"),
                            dcc.Graph(
                                figure=figures.place_map(context.geometry, _place_points(case, zone)),
                                className="case-map",
                                config={"displayModeBar": False},
                            ),
                        ],
                    ),
                ],
            ),
        ],
    )


def _work_order_box(case: CaseFile, zone: ZoneInfo) -> Any:
    order = case.work_order
    if order is None:
        return html.Div("No work order (yet): see the dispatcher's decisions in the chain.", className="empty")
    met = {a.action: a.at for a in reversed(case.audit)}
    rows = []
    for label, due, action in (
        ("accept", order.ack_due_at, "accept"),
        ("arrive", order.arrive_due_at, "arrive"),
        ("resolve", order.resolve_due_at, "resolve"),
    ):
        done = met.get(action)
        verdict = (
            "—"
            if due is None
            else ("met" if done and done <= due else "missed" if (done and done > due) else "pending")
        )
        rows.append(
            html.Tr(
                [
                    html.Th(label),
                    html.Td(local_time(due, zone)),
                    html.Td(local_time(done, zone) if done else "—"),
                    html.Td(verdict, className=f"verdict-{verdict}"),
                ]
            )
        )
    return html.Div(
        [
            html.Div(
                f"{order.id} · {figures.STATE_LABELS.get(order.state.value, order.state.value)} · "
                f"{order.priority.value} · crew {case.crew_names.get(order.crew_id or '', order.crew_id or '—')}",
                className="wo-line",
            ),
            html.Table(
                [html.Tr([html.Th("stage"), html.Th("due"), html.Th("done"), html.Th("")]), *rows], className="wo-sla"
            ),
        ]
    )


def acknowledge(
    context: Context, principal: Principal | None, token: str | None, incident_id: str, note: str = ""
) -> str:
    """Acknowledge through the API; the answer to show next to the button."""
    try:
        require(principal, Permission.ACKNOWLEDGE_INCIDENT)
    except AccessRefusedError as error:
        return f"Refused: {error}."
    if not token:
        return "Sign in again to act (no API token for this session)."
    try:
        context.api.acknowledge_incident(token, incident_id, note=note)
    except ApiRefusal as error:
        if error.needs_sign_in:
            context.forget_token()
        return f"The API refused: {error}"
    except ApiUnavailableError as error:
        return f"Not done: {error}"
    return "Acknowledged."


def register(app: Dash, context: Context) -> None:
    @app.callback(
        Output("case-ack-result", "children"),
        Input("case-ack", "n_clicks"),
        State("case-incident", "data"),
        prevent_initial_call=True,
    )
    def _acknowledge(_: int, incident_id: str) -> str:
        session = context.session()
        return acknowledge(
            context, session.principal if session else None, session.api_token if session else None, str(incident_id)
        )


__all__ = ["ChainStep", "acknowledge", "case_chain", "case_summary", "layout", "register"]
