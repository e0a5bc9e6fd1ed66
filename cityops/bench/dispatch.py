"""`cityops bench dispatch`: from an incident event on Kafka to the task on the crew's MQTT topic, at stepped rates.

Method. The benchmark's own instance gets the Helsinki pack and four crews per department unit (each with its
own MQTT credential). `cityops dispatch` runs as a process. The harness produces citizen-report incident events
(kind ``report``: dispatched at once, never held for correlation) at random grid cells of the city, in five
categories of five departments, at stepped offered rates, and listens to every crew's task topic as the
observer account. Latency per incident: from the moment its event was produced (Kafka acknowledged it) to the
moment its ``assigned`` task arrived over MQTT -- projection, routing, crew choice on the road graph, the work
order, its audit row and outbox rows in one transaction, then the relay's publish and the broker's delivery. CPU
per process is sampled over each step, after an unrecorded warm-up. Target: p99 below 2 s.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from aiokafka import AIOKafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from cityops.bench import BenchOutcome
from cityops.bench.environment import BenchEnvironment
from cityops.city import load_city_pack
from cityops.crews import provision_crews
from domain.catalogue import load_catalogue
from domain.categories import Severity
from domain.crew_messages import TaskStatus, decode_crew_task
from domain.geo import Position
from domain.incident_events import IncidentEvent, IncidentEventType, IncidentKind, encode_event
from domain.incidents import Incident, IncidentState
from gis import load_pack
from streams.dispatch.engine import work_order_id_for

CATEGORIES = ("sanitation.bin_overflow", "lighting.outage", "drainage.waterlogging", "roads.bridge_strain", "gas.leak")
TARGET_P99_S = 2.0


@dataclass(frozen=True, slots=True)
class StepOutcome:
    rate: float
    sent: int
    delivered: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_cores: dict[str, float]

    @property
    def lost(self) -> int:
        return self.sent - self.delivered


@dataclass
class _Tasks:
    """The observer's view: when each work order's first ``assigned`` task arrived (wall clock)."""

    arrived: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            task = decode_crew_task(bytes(message.payload))
        except ValueError:
            return
        if task.status is TaskStatus.ASSIGNED:
            with self.lock:
                self.arrived.setdefault(task.work_order_id, now)


def _observer(env: BenchEnvironment, tasks: _Tasks) -> mqtt.Client:
    settings = env.settings.mqtt
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-observer-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(settings.observer_username, settings.observer_password.get_secret_value())
    client.on_message = tasks.on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe("crews/+/tasks", qos=1)
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client


def _report(run: str, n: int, position: Position, category: str) -> IncidentEvent:
    moment = datetime.now(UTC)
    return IncidentEvent(
        type=IncidentEventType.OPENED,
        seq=1,
        at=moment,
        kind=IncidentKind.REPORT,
        incident=Incident(
            id=f"bench-{run}-{n}",
            rule_id="report.citizen",
            rule_version=1,
            source="citizen",
            category_code=category,
            severity=Severity.MEDIUM,
            state=IncidentState.OPEN,
            title=f"Reported: {category}",
            condition="reported by a citizen",
            opened_at=moment,
            updated_at=moment,
            position=position,
        ),
    )


async def _produce(
    env: BenchEnvironment, run: str, start: int, rate: float, step_s: float, places: list[Position]
) -> dict[str, float]:
    """Incident events at ``rate`` per second for ``step_s``; when each was acknowledged by Kafka."""
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka.bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    chooser = random.Random(start)  # noqa: S311 -- places for a load test, not secrets
    try:
        began = time.monotonic()
        count = int(rate * step_s)
        for i in range(count):
            due = began + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            event = _report(run, start + i, chooser.choice(places), CATEGORIES[(start + i) % len(CATEGORIES)])
            await producer.send_and_wait("incidents", encode_event(event), event.key.encode())
            sent[work_order_id_for(event.incident.id)] = time.time()
    finally:
        await producer.stop()
    return sent


def run_dispatch_bench(
    env: BenchEnvironment, *, rates: list[float], step_s: float, drain_s: float = 15.0
) -> list[StepOutcome]:
    catalogue = load_catalogue()
    pack = load_pack("helsinki")
    env.report("loading the Helsinki pack and provisioning 4 crews per unit")
    with psycopg.connect(env.settings.db.conninfo()) as conn:
        load_city_pack(conn, pack, catalogue)
    provision_crews(env.settings, catalogue, per_unit=4)
    cells = pack.grid_cells.geometry.representative_point()
    places = [Position(point.x, point.y) for point in cells]
    tasks = _Tasks()
    observer = _observer(env, tasks)
    dispatcher = env.start("dispatch", CITYOPS_DISPATCH__METRICS_PORT="0", CITYOPS_LOG_LEVEL="WARNING")
    time.sleep(8.0)  # the pack loads, the consumers join their groups
    run = uuid.uuid4().hex[:6]
    outcomes: list[StepOutcome] = []
    produced = 0
    try:
        # Warm-up, not recorded: the consumer group's first fetches and the first shortest-path trees of the road
        # graph (cached per destination afterwards) make the first few seconds slower than steady state.
        env.report("warm-up: 2 incidents/s for 5 s (not recorded)")
        produced += len(asyncio.run(_produce(env, run, produced, 2.0, 5.0, places)))
        time.sleep(3.0)
        for rate in rates:
            env.report(f"{rate:g} incidents/s for {step_s:g} s")
            before = env.cpu_snapshot()
            started = time.monotonic()
            sent = asyncio.run(_produce(env, run, produced, rate, step_s, places))
            produced += len(sent)
            elapsed = time.monotonic() - started
            after = env.cpu_snapshot()
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                with tasks.lock:
                    if all(order in tasks.arrived for order in sent):
                        break
                time.sleep(0.25)
            with tasks.lock:
                latencies = sorted((tasks.arrived[o] - t) * 1000 for o, t in sent.items() if o in tasks.arrived)
            outcomes.append(
                StepOutcome(
                    rate=rate,
                    sent=len(sent),
                    delivered=len(latencies),
                    p50_ms=round(statistics.median(latencies), 1) if latencies else None,
                    p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)
                    if latencies
                    else None,
                    max_ms=round(latencies[-1], 1) if latencies else None,
                    cpu_cores={
                        name: round((after.get(name, 0.0) - before.get(name, 0.0)) / elapsed, 3) for name in after
                    },
                )
            )
            time.sleep(3.0)
    finally:
        observer.loop_stop()
        observer.disconnect()
        dispatcher.stop()
    return outcomes


def summary(outcomes: list[StepOutcome]) -> dict[str, object]:
    good = [s for s in outcomes if s.lost == 0 and s.p99_ms is not None and s.p99_ms < TARGET_P99_S * 1000]
    best = max(good, key=lambda s: s.rate) if good else None
    return {
        "bench": "dispatch",
        "incidents_per_s_within_target": best.rate if best else 0,
        "p50_ms": best.p50_ms if best else None,
        "p99_ms": best.p99_ms if best else None,
        "target_p99_ms": TARGET_P99_S * 1000,
        "lost": sum(s.lost for s in outcomes),
        "steps": [{"rate": s.rate, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "lost": s.lost} for s in outcomes],
    }


def render(outcomes: list[StepOutcome], command: str, step_s: float) -> str:
    from cityops.bench.report import stamp, table

    processes = sorted({name for step in outcomes for name in step.cpu_cores})
    return "\n".join(
        [
            "## Dispatch: incident event to the crew's task",
            "",
            stamp(command),
            f"Citizen-report incident events (never held) at random grid cells of Helsinki, five categories of five "
            f"departments, {step_s:g} s per step; 4 crews per department unit. Latency: from Kafka acknowledging the "
            f"event to its `assigned` task arriving on the crew's MQTT topic. Target p99 < {TARGET_P99_S:g} s.",
            "",
            table(
                ["incidents/s", "sent", "tasks delivered", "p50 ms", "p99 ms", "max ms"],
                [[f"{s.rate:g}", s.sent, s.delivered, s.p50_ms, s.p99_ms, s.max_ms] for s in outcomes],
            ),
            "",
            "### CPU per process (cores, averaged over each step)",
            "",
            table(
                ["incidents/s", *processes],
                [[f"{s.rate:g}", *(s.cpu_cores.get(p, "") for p in processes)] for s in outcomes],
            ),
        ]
    )


def run(env: BenchEnvironment, *, quick: bool, command: str) -> BenchOutcome:
    rates = [2.0, 5.0] if quick else [2.0, 5.0, 10.0, 20.0, 40.0]
    step_s = 6.0 if quick else 20.0
    outcomes = run_dispatch_bench(env, rates=rates, step_s=step_s)
    numbers = summary(outcomes)
    headline = (
        f"dispatch: p99 {numbers['p99_ms']} ms at {numbers['incidents_per_s_within_target']} incidents/s "
        f"(target {TARGET_P99_S * 1000:.0f} ms)"
    )
    return BenchOutcome(render(outcomes, command, step_s), numbers, headline)
