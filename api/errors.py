"""Refusals: one exception the routes raise, the precise body every 4xx carries, and the mapping of the domain's
named errors to HTTP statuses.

Every refusal of the platform API is a JSON object ``{"status", "code", "detail", ...}``: ``code`` is stable
(clients branch on it), ``detail`` says in words what was wrong and what would be accepted. Open311 routes answer
in the GeoReport v2 form instead, ``[{"code": 400, "description": "..."}]`` (api/routes/open311.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from domain.work_orders import (
    ActorNotAllowedError,
    IllegalTransitionError,
    MissingCrewError,
    NotAssignedCrewError,
    WorkOrderAction,
    WorkOrderError,
    WorkOrderState,
    allowed_actions,
)
from store.work_orders import CrewNotAssignableError, WorkOrderNotFoundError


class ApiError(Exception):
    """A refusal with its HTTP status, stable code and words; ``extra`` adds fields to the body."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "detail": self.detail, **self.extra}


def not_found(what: str, identifier: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {identifier} does not exist")


def work_order_refusal(
    error: WorkOrderError, *, state: WorkOrderState | None = None, your_actions: Iterable[WorkOrderAction] = ()
) -> ApiError:
    """The HTTP answer to a domain refusal of a work-order action.

    * unknown order: 404;
    * illegal move from this state: 409, with the actions legal from it (and those this caller may take);
    * a kind of actor the step is not for (a crew verifying, a dispatcher accepting): 403;
    * a crew acting on an order that is no longer its own: 403;
    * dispatch or reassignment without a crew, to the same crew, or to a crew that cannot take it: 422.
    """
    if isinstance(error, WorkOrderNotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, IllegalTransitionError):
        legal = sorted(action.value for action in allowed_actions(error.state))
        return ApiError(
            409,
            "illegal_transition",
            str(error),
            state=error.state.value,
            allowed_actions=legal,
            your_actions=sorted(action.value for action in your_actions),
        )
    if isinstance(error, ActorNotAllowedError):
        return ApiError(403, "actor_not_allowed", str(error), **_state(state, your_actions))
    if isinstance(error, NotAssignedCrewError):
        return ApiError(403, "not_assigned_crew", str(error))
    if isinstance(error, MissingCrewError):
        return ApiError(422, "missing_crew", str(error))
    if isinstance(error, CrewNotAssignableError):
        return ApiError(422, "crew_not_assignable", str(error))
    return ApiError(422, "refused", str(error))


def _state(state: WorkOrderState | None, your_actions: Iterable[WorkOrderAction]) -> dict[str, Any]:
    if state is None:
        return {}
    return {"state": state.value, "your_actions": sorted(action.value for action in your_actions)}


def field_problems(errors: Sequence[Any]) -> list[dict[str, str]]:
    """pydantic/FastAPI validation errors as ``{"location": "body.action", "message": "..."}``, in order."""
    problems = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        context = error.get("ctx") or {}
        if "expected" in context and "expected" not in message:
            message += f" (expected {context['expected']})"
        problems.append({"location": location, "message": message})
    return problems
