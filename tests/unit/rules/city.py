"""A small test city for the rule tests: readings and status changes at minutes after T0, and catalogues
written inline (a header plus the rules under test), so each test states exactly the thresholds it exercises."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from domain.incident_events import DeviceOutput, FactChange, IncidentEvent, IncidentEventType, ReadingRejected
from domain.readings import ConnectionState, Reading, StatusChange
from rules.catalogue import RuleSet, parse_rules
from rules.detection import DeviceState, evaluate

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # 11:00 in Helsinki (EEST)


def at(minutes: float = 0.0, seconds: float = 0.0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def reading(
    device_id: str,
    minutes: float,
    metrics: Mapping[str, float],
    *,
    device_type: str = "water_level",
    grid_cell: str | None = "cell-a1",
    district: str | None = "kallio",
    delay_s: float = 1.0,
    ingested_minutes: float | None = None,
) -> Reading:
    ts = at(minutes)
    ingested = at(ingested_minutes) if ingested_minutes is not None else ts + timedelta(seconds=delay_s)
    return Reading(
        device_id=device_id,
        ts=ts,
        metrics=dict(metrics),
        ingested_at=ingested,
        device_type=device_type,
        grid_cell=grid_cell,
        district=district,
    )


def series(
    device_id: str,
    metric: str,
    values: Sequence[float],
    *,
    every_minutes: float = 5.0,
    start: float = 0.0,
    device_type: str = "water_level",
    extra: Mapping[str, float] | None = None,
    grid_cell: str | None = "cell-a1",
    district: str | None = "kallio",
) -> list[Reading]:
    return [
        reading(
            device_id,
            start + index * every_minutes,
            {metric: value, **(extra or {})},
            device_type=device_type,
            grid_cell=grid_cell,
            district=district,
        )
        for index, value in enumerate(values)
    ]


def status(device_id: str, minutes: float, online: bool, *, retained: bool = False) -> StatusChange:
    state = ConnectionState.ONLINE if online else ConnectionState.OFFLINE
    return StatusChange(device_id=device_id, state=state, ts=at(minutes), retained=retained)


HEADER = """
[catalogue]
version = {version}
timezone = "Europe/Helsinki"
allowed_lateness_s = {lateness}
lateness_max_readings = {max_readings}

[lifecycle]
close_after_s = {close_after}
refresh_s = {refresh}
flapping_window_s = 3600
flapping_max_cycles = {flapping}
flapping_settle_s = 1800
evidence_limit = 5

[correlation]
window_s = 1800
min_incidents = 3
"""


def catalogue(
    rules_toml: str,
    *,
    version: int = 1,
    lateness: int = 300,
    max_readings: int = 32,
    close_after: int = 1800,
    refresh: int = 0,
    flapping: int = 3,
) -> RuleSet:
    header = HEADER.format(
        version=version,
        lateness=lateness,
        max_readings=max_readings,
        close_after=close_after,
        refresh=refresh,
        flapping=flapping,
    )
    return parse_rules(header + rules_toml, source="test-catalogue.toml")


def run(
    rules: RuleSet, readings: Iterable[Reading], state: DeviceState | None = None
) -> tuple[DeviceState, list[DeviceOutput]]:
    """Evaluate readings in the given order; the last state and every output."""
    outputs: list[DeviceOutput] = []
    for item in readings:
        state, told = evaluate(rules, state, item)
        outputs.extend(told)
    assert state is not None
    return state, outputs


def incident_events(outputs: Iterable[object]) -> list[IncidentEvent]:
    return [output for output in outputs if isinstance(output, IncidentEvent)]


def kinds(outputs: Iterable[object], rule_id: str | None = None) -> list[tuple[IncidentEventType, datetime]]:
    """(event type, event time) of the incident events, optionally of one rule: the shape most tests assert."""
    return [
        (event.type, event.at)
        for event in incident_events(outputs)
        if rule_id is None or event.incident.rule_id == rule_id
    ]


def facts(outputs: Iterable[object]) -> list[FactChange]:
    return [output for output in outputs if isinstance(output, FactChange)]


def rejections(outputs: Iterable[object]) -> list[ReadingRejected]:
    return [output for output in outputs if isinstance(output, ReadingRejected)]
