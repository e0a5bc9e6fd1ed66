"""Evaluation (评价): how departments and districts handle their cases over a period. Definitions, as types.

For the work orders *registered* (created) in ``[since, until)``, grouped by department or by district:

* ``cases`` -- orders registered; ``closed`` -- closed by verification; ``cancelled`` -- withdrawn.
* ``closure_rate`` = closed / (cases - cancelled): of the cases that were real, the share verified fixed.
* ``on_time`` per SLA stage (acknowledge, arrive, resolve) = stages done without a breach / stages done or
  breached: an order counts for a stage once its crew reached it or it was recorded overdue.
* ``times`` per stage: seconds from registration to the *first* time a crew accepted, arrived, reported it
  resolved (the audit log), mean and 90th percentile, over the orders that reached the stage.
* ``reopen_rate`` = orders that failed verification at least once / orders that reached verification.
* ``breaches`` -- SLA breaches recorded (``sla_breaches``), every stage and round.

A rate whose denominator is zero is None (nothing to judge), never 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.sla import SlaStage
from domain.time import require_utc


class EvaluationScope(StrEnum):
    DEPARTMENT = "department"
    DISTRICT = "district"


@dataclass(frozen=True, slots=True)
class StageFigures:
    reached: int  # orders whose crew reached the stage
    on_time_rate: float | None
    mean_s: float | None  # from registration to the first time the stage was reached
    p90_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationRow:
    scope: EvaluationScope
    key: str  # the department or district code
    since: datetime
    until: datetime
    cases: int
    closed: int
    cancelled: int
    closure_rate: float | None
    stages: dict[SlaStage, StageFigures]
    reopen_rate: float | None
    breaches: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", require_utc(self.since, field="since"))
        object.__setattr__(self, "until", require_utc(self.until, field="until"))
