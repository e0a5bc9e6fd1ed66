"""The incidents projection on the real PostgreSQL: idempotent, order-tolerant, and keeping people's acknowledgements.

Events come from the real engine (rules.detection over a water-level gauge crossing the shipped threshold), so the
projection is tested against what the engine actually tells.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest

from cityops.city import load_city_pack
from domain.catalogue import load_catalogue
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind
from domain.incidents import IncidentState
from gis import load_pack
from rules.catalogue import load_rules
from rules.detection import evaluate
from store.incidents import (
    IncidentClosedError,
    IncidentFilter,
    acknowledge_incident,
    apply_incident_event,
    get_incident,
    incident_timeline,
    list_incidents,
)
from tests.unit.rules.city import T0, series


@pytest.fixture
def city_db(fresh_migrated_db: str) -> str:
    with psycopg.connect(fresh_migrated_db) as conn:
        load_city_pack(conn, load_pack("helsinki"), load_catalogue())
    return fresh_migrated_db


def _gauge_events(cell: str, district: str) -> list[IncidentEvent]:
    rules = load_rules()
    # 0 → 20 → 35 → 2 cm: opens (2 in a row over 15), rises to high at 35, clears at <= 5 for the clear debounce.
    readings = series(
        "wl-proj-1",
        "water_level_cm",
        [0, 20, 22, 35, 36, 2, 1, 1, 1],
        grid_cell=cell,
        district=district,
    )
    state = None
    events: list[IncidentEvent] = []
    for reading in readings:
        state, outputs = evaluate(rules, state, reading)
        events += [o for o in outputs if isinstance(o, IncidentEvent)]
    return events


def test_engine_events_project_once_in_any_order_of_replays(city_db: str) -> None:
    pack = load_pack("helsinki")
    cell = pack.grid_cells.iloc[0]
    events = _gauge_events(cell["grid_cell_code"], cell["district_code"])
    types = [e.type for e in events]
    assert types[0] is IncidentEventType.OPENED, types
    assert IncidentEventType.CLEARED in types, types
    with psycopg.connect(city_db) as conn:
        assert [apply_incident_event(conn, e) for e in events] == [True] * len(events)
        conn.commit()
        # A replay of everything, then the first event again: nothing new, nothing undone.
        assert not any(apply_incident_event(conn, e) for e in [*events, events[0]])
        conn.commit()
        record = get_incident(conn, events[0].incident.id)
        assert record is not None
        assert record.incident.state is IncidentState.CLEARED
        assert record.seq == events[-1].seq
        assert record.incident.severity.value == "high"
        assert record.kind is IncidentKind.DEVICE
        assert record.incident.grid_cell == cell["grid_cell_code"]
        stored = {(e.metric, e.value) for e in record.incident.evidence}
        assert ("water_level_cm", 20.0) in stored
        assert ("water_level_cm", 35.0) in stored
        assert [entry.seq for entry in incident_timeline(conn, record.incident.id)] == [e.seq for e in events]
        # A device incident without a registered device falls back to its grid cell's centre.
        assert record.incident.position is not None
        assert pack.locate(record.incident.position) is not None


def test_a_correlated_parent_before_its_child_still_links_them(city_db: str) -> None:
    pack = load_pack("helsinki")
    cell = pack.grid_cells.iloc[1]
    child = _gauge_events(cell["grid_cell_code"], cell["district_code"])[0]
    parent_snapshot = replace(
        child.incident,
        id="parent-1",
        rule_id="correlation.drainage.waterlogging",
        source=cell["grid_cell_code"],
        evidence=(),
    )
    correlated = IncidentEvent(
        type=IncidentEventType.CORRELATED,
        incident=parent_snapshot,
        seq=1,
        at=T0 + timedelta(minutes=10),
        kind=IncidentKind.CORRELATION,
        children=(child.incident.id,),
    )
    with psycopg.connect(city_db) as conn:
        apply_incident_event(conn, correlated)
        apply_incident_event(conn, child)
        conn.commit()
        stored_child = get_incident(conn, child.incident.id)
        assert stored_child is not None
        assert stored_child.incident.parent_id == "parent-1"
        parent = get_incident(conn, "parent-1")
        assert parent is not None
        assert parent.children == (child.incident.id,)
        tops = list_incidents(conn, IncidentFilter(top_level_only=True))
        assert [r.incident.id for r in tops] == ["parent-1"]


def test_an_acknowledgement_survives_later_engine_events_and_is_told_once(city_db: str) -> None:
    pack = load_pack("helsinki")
    cell = pack.grid_cells.iloc[2]
    events = _gauge_events(cell["grid_cell_code"], cell["district_code"])
    incident_id = events[0].incident.id
    with psycopg.connect(city_db) as conn:
        apply_incident_event(conn, events[0])
        at = T0 + timedelta(minutes=6)
        assert acknowledge_incident(conn, incident_id, by="dispatcher:li", at=at)
        assert not acknowledge_incident(conn, incident_id, by="dispatcher:wang", at=at + timedelta(minutes=1))
        for event in events[1:]:
            apply_incident_event(conn, event)  # the engine's events do not know of the acknowledgement
        conn.commit()
        record = get_incident(conn, incident_id)
        assert record is not None
        assert (record.incident.acknowledged_by, record.incident.acknowledged_at) == ("dispatcher:li", at)
        told = conn.execute("SELECT topic, key FROM outbox WHERE topic = 'incident.acks'").fetchall()
        assert told == [("incident.acks", events[0].incident.source)]


def test_a_closed_incident_cannot_be_acknowledged(city_db: str) -> None:
    pack = load_pack("helsinki")
    cell = pack.grid_cells.iloc[3]
    opened = _gauge_events(cell["grid_cell_code"], cell["district_code"])[0]
    closed = IncidentEvent(
        type=IncidentEventType.CLOSED,
        incident=replace(opened.incident, state=IncidentState.CLOSED, closed_at=opened.at + timedelta(hours=1)),
        seq=opened.seq + 1,
        at=opened.at + timedelta(hours=1),
        kind=IncidentKind.DEVICE,
    )
    with psycopg.connect(city_db) as conn:
        apply_incident_event(conn, opened)
        apply_incident_event(conn, closed)
        with pytest.raises(IncidentClosedError, match="closed"):
            acknowledge_incident(conn, opened.incident.id, by="dispatcher:li", at=closed.at)


def test_a_new_incident_of_a_source_may_be_projected_before_the_old_one_closes(city_db: str) -> None:
    """Events of two incidents of one (source, rule) travel on different partitions: the projection takes the new
    incident's opening before the old one's closing, which the engine told first."""
    pack = load_pack("helsinki")
    cell = pack.grid_cells.iloc[4]
    old = _gauge_events(cell["grid_cell_code"], cell["district_code"])[0]
    later = old.at + timedelta(hours=2)
    new = replace(old, incident=replace(old.incident, id="second-incident", opened_at=later, updated_at=later))
    closed = replace(
        old,
        type=IncidentEventType.CLOSED,
        seq=old.seq + 1,
        incident=replace(old.incident, state=IncidentState.CLOSED, closed_at=later),
    )
    with psycopg.connect(city_db) as conn:
        apply_incident_event(conn, old)
        apply_incident_event(conn, new)  # both open for a moment: no error
        apply_incident_event(conn, closed)
        conn.commit()
        states: dict[str, str] = dict(
            conn.execute("SELECT id, state FROM incidents WHERE source = %s", (old.incident.source,)).fetchall()
        )
        assert states == {old.incident.id: "closed", "second-incident": "open"}


@pytest.mark.parametrize("first", ["child", "parent"])
def test_a_child_and_its_parents_correlation_in_concurrent_transactions_still_link(city_db: str, first: str) -> None:
    pack = load_pack("helsinki")
    cell = pack.grid_cells.iloc[5]
    child = _gauge_events(cell["grid_cell_code"], cell["district_code"])[0]
    parent = IncidentEvent(
        type=IncidentEventType.CORRELATED,
        incident=replace(child.incident, id=f"parent-{first}", rule_id="correlation.x", evidence=()),
        seq=1,
        at=child.at,
        kind=IncidentKind.CORRELATION,
        children=(child.incident.id,),
    )
    events = {"child": child, "parent": parent}
    second = "parent" if first == "child" else "child"
    with psycopg.connect(city_db) as one, psycopg.connect(city_db) as two:
        apply_incident_event(one, events[first])  # not committed yet
        done = threading.Event()

        def later() -> None:
            apply_incident_event(two, events[second])  # waits on the shared parent slot
            two.commit()
            done.set()

        worker = threading.Thread(target=later)
        worker.start()
        assert not done.wait(0.5), "the second transaction should wait for the first"
        one.commit()
        worker.join(10)
        assert done.is_set()
        record = get_incident(one, child.incident.id)
        assert record is not None
        assert record.incident.parent_id == f"parent-{first}"
