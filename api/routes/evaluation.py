"""Evaluation (评价): how departments (or districts) handled the cases registered in a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from api.auth import require
from api.context import api_context
from api.errors import ApiError
from api.schemas import EvaluationGroupOut, EvaluationOut, Moment, StageOut, problem_responses
from domain.access import Permission, Principal
from store.api_queries import evaluate_departments

router = APIRouter(tags=["evaluation"])

MAX_SPAN = timedelta(days=366)
DEFAULT_SPAN = timedelta(days=30)
Evaluator = Annotated[Principal, Depends(require(Permission.VIEW_EVALUATION))]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@router.get(
    "/evaluation",
    response_model=EvaluationOut,
    responses=problem_responses(401, 403, 422),
    summary="Cases, on-time rates per SLA stage, mean and p90 times, reopen rate, by department or district",
)
def evaluation(
    request: Request,
    _: Evaluator,
    since: Annotated[
        Moment | None, Query(alias="from", description="cases registered from (default: to - 30 days)")
    ] = None,
    until: Annotated[Moment | None, Query(alias="to", description="... until, exclusive (default: now)")] = None,
    by: Literal["department", "district"] = "department",
) -> EvaluationOut:
    now = datetime.now(UTC)
    until_ = until.astimezone(UTC) if until else now
    since_ = since.astimezone(UTC) if since else until_ - DEFAULT_SPAN
    if since_ >= until_:
        raise ApiError(422, "invalid_period", f"from ({since_.isoformat()}) must be before to ({until_.isoformat()})")
    if until_ - since_ > MAX_SPAN:
        raise ApiError(422, "invalid_period", f"the period may span at most {MAX_SPAN.days} days")
    with api_context(request).pool.connection() as conn:
        rows = evaluate_departments(conn, since=since_, until=until_, now=now, by=by)
    return EvaluationOut(
        since=since_,
        until=until_,
        by=by,
        generated_at=now,
        groups=[
            EvaluationGroupOut(
                key=row.key,
                name=row.name,
                cases=row.cases,
                closed=row.closed,
                cancelled=row.cancelled,
                closure_rate=_rate(row.closed, row.cases),
                resolved=row.resolved,
                reopened=row.reopened,
                reopen_rate=_rate(row.reopened, row.resolved),
                stages={
                    stage: StageOut(
                        judged=figures.judged,
                        on_time=figures.on_time,
                        on_time_rate=_rate(figures.on_time, figures.judged),
                        completed=figures.completed,
                        mean_s=figures.mean_s,
                        p90_s=figures.p90_s,
                    )
                    for stage, figures in row.stages.items()
                },
            )
            for row in rows
        ],
    )
