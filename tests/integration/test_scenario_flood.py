"""The rainstorm scenario through the real platform: simulated devices and crews (`cityops simulate`) over real
Mosquitto, `cityops ingest` → Kafka → `cityops persist` / `cityops worker` → PostgreSQL and `incidents` →
`cityops dispatch` → crews over MQTT → verification by the city's own sensors.

Time is accelerated: the city runs ``SPEED`` times faster than the wall (`cityops simulate --speed`), and the
dispatcher, which runs on the wall clock, gets the shipped service levels and its correlation hold divided by the
same factor (`cityops.pipeline.write_scaled_sla`), so a crew's 30 simulated minutes of work and the city's
30-minute verification period keep their proportions. Readings are stamped with the wall time (the simulator's
wall clock), so the rules judge them as they would live.

The fleet is the scenario's own districts (Kallio and Kruununhaka), every device type but the noise monitors:
the night-noise rule fires on ordinary morning traffic between 06:00 and 07:00 local time (docs/SIMULATORS.md,
"Findings"), and four simulated hours starting at whatever time the test runs may cross that hour.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from cityops.pipeline import (
    Child,
    Pipeline,
    PipelinePlan,
    TaskObserver,
    clean_instance,
    observe,
    prepare_city,
    wait_ready,
    write_scaled_sla,
)
from cityops.settings import Settings
from domain.catalogue import load_catalogue
from gis import load_pack
from rules.catalogue import load_rules
from simulators.scenario import Scenario, load_scenario
from simulators.scenario_check import check
from tests.integration.harness import wait_for
from tests.integration.pipeline_instance import instance_location

SPEED = 120.0  # simulated seconds per wall second: the scenario's four hours in two minutes
DISTRICTS = frozenset({"kallio", "kruununhaka"})

pytestmark = pytest.mark.timeout(600)


@dataclass
class FloodRun:
    settings: Settings
    scenario: Scenario
    pipeline: Pipeline
    simulate: Child
    observer: TaskObserver
    started_at: float

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.settings.db.conninfo()) as conn:
            return conn.execute(sql, params).fetchall()

    def alive(self) -> None:
        """Every process still runs, and the simulator too until its scenario is over (then it exits by itself,
        with its crews): a crash is the failure to report, not a timeout later."""
        dead = self.pipeline.dead()
        logs = {name: self.pipeline.children[name].output()[-3000:] for name in dead}
        simulation = self.simulate.process
        assert simulation is not None
        if not simulation.running:
            over = time.time() >= self.started_at + self.scenario.duration_s / SPEED
            if simulation.process is not None and (simulation.process.returncode != 0 or not over):
                dead.append("simulate")
                logs["simulate"] = self.simulate.output()[-3000:]
        assert not dead, f"{dead} stopped: {logs}"


@pytest.fixture(scope="module")
def flood(settings: Settings) -> Iterator[FloodRun]:
    state_dir, port_base = instance_location(settings, "pipeline")
    with clean_instance(state_dir, port_base) as instance:
        log_dir = state_dir / "logs" / "flood"  # kept until the next run wipes the instance
        prepare_city(instance, crews_per_unit=2, keep=lambda d: d.district in DISTRICTS and d.type_code != "noise")
        pack = load_pack(instance.city.pack)
        catalogue = load_catalogue()
        scenario = load_scenario("rainstorm", pack=pack, catalogue=catalogue, rule_ids=set(load_rules().rules))
        sla = write_scaled_sla(log_dir / "sla.toml", 1 / SPEED)
        plan = PipelinePlan(
            env={
                "dispatch": {
                    "CITYOPS_DISPATCH__SLA_FILE": str(sla),
                    "CITYOPS_DISPATCH__HOLD_S": f"{90 / SPEED:g}",  # the shipped 90 s hold, in simulated time
                    "CITYOPS_DISPATCH__TIMER_INTERVAL_S": "0.5",
                },
            }
        )
        pipeline = Pipeline(instance, plan, log_dir=log_dir)
        observer = TaskObserver(instance).start()
        simulate = Child(
            "simulate",
            ("simulate", "--scenario", "rainstorm", "--speed", f"{SPEED:g}", "--seed", "0"),
            lambda: True,
        )
        try:
            pipeline.start()
            started_at = time.time()
            simulate.start(instance, log_dir)
            wait_ready([simulate], timeout_s=10)
            yield FloodRun(instance, scenario, pipeline, simulate, observer, started_at)
        finally:
            if simulate.process is not None and simulate.running:
                simulate.process.stop(timeout=60)
            observer.stop()
            pipeline.stop()


def test_the_rainstorm_makes_the_floods_its_file_promises_and_crews_close_them(flood: FloodRun) -> None:
    scenario_wall_s = flood.scenario.duration_s / SPEED

    def closed_water_order() -> list[tuple[object, ...]] | None:
        flood.alive()
        rows = flood.query("SELECT id FROM work_orders WHERE department_code = 'water' AND state = 'closed'")
        return rows or None

    wait_for(closed_water_order, timeout=scenario_wall_s + 180, interval=2.0, what="a water work order closed")
    # The scenario's whole timeline has passed (the rain has stopped, the water has drained) before counting.
    time.sleep(max(0.0, flood.started_at + scenario_wall_s + 15 - time.time()))
    flood.alive()

    with psycopg.connect(flood.settings.db.conninfo()) as conn:
        observed = observe(conn)
    mismatches = check(flood.scenario.expected, observed)
    assert not mismatches, "\n".join(str(m) for m in mismatches) + f"\nobserved: {observed}"

    # The loop closed: each water order went to a water unit and one of its crews, the crew got the task over
    # MQTT, accepted, arrived and resolved it, and the city -- not a person -- verified and closed it.
    orders = flood.query(
        "SELECT w.id, w.unit_code, w.crew_id, c.department_code, w.state FROM work_orders w "
        "LEFT JOIN crews c ON c.id = w.crew_id WHERE w.department_code = 'water'"
    )
    assert orders
    assigned = flood.observer.first_assigned()
    for order_id, unit, crew, crew_department, _state in orders:
        assert str(unit).startswith("water."), (order_id, unit)
        if crew is not None:
            assert crew_department == "water", (order_id, crew)
    closed = [row for row in orders if row[4] == "closed"]
    for order_id, _unit, crew, _dept, _state in closed:
        assert order_id in assigned, f"no assigned task for {order_id} reached crews/+/tasks"
        assert assigned[order_id].crew_id.startswith("water."), assigned[order_id]
        steps = flood.query(
            "SELECT action, actor_kind, actor_id FROM work_order_events WHERE work_order_id = %s ORDER BY seq",
            (order_id,),
        )
        actions = [(str(a), str(k)) for a, k, _ in steps]
        for step in (("dispatch", "system"), ("accept", "crew"), ("arrive", "crew"), ("resolve", "crew")):
            assert step in actions, (order_id, actions)
        assert actions[-1] == ("verify", "system"), (order_id, actions)
        crews_acting = {str(actor) for _, kind, actor in steps if kind == "crew"}
        assert all(c.startswith("water.") for c in crews_acting), (order_id, crews_acting)
        assert crew in crews_acting, (order_id, crew, crews_acting)
    # The flood's order covers the cell's gauges and covers: they were merged or attached, not ordered separately.
    flood_orders = flood.query(
        "SELECT w.id, count(wi.incident_id) FROM work_orders w JOIN incidents i ON i.id = w.incident_id "
        "JOIN work_order_incidents wi ON wi.work_order_id = w.id WHERE i.category_code = 'drainage.flood' "
        "GROUP BY w.id"
    )
    assert flood_orders
    assert all(int(str(n)) > 1 for _, n in flood_orders), flood_orders
    # Every device of the fleet was heard, through ingest and persist.
    [(heard, registered)] = flood.query(
        "SELECT (SELECT count(DISTINCT device_id) FROM readings), count(*) FROM devices"
    )
    assert heard == registered
