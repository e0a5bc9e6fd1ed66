"""`cityops bench rules`: detection speed, from the pure engine to the worker, against a bare consumer.

Method.

1. *Pure engine*: readings of 3,000 devices of five types judged by ``rules.detection.evaluate`` in this process,
   no I/O: readings/s on one core.
2. *Baseline*: a bare aiokafka consumer (cityops.bench.kafka_sink) of a topic with the readings topic's partitions,
   under the same stepped load (cityops.bench.kafka_load, a separate process producing as ingest does).
3. *Worker*: `cityops worker` as a process, the load produced into ``readings``. A step is *sustained* when the
   worker's committed offsets reach the step's last offsets within ``max_drain_s`` of the step's end (offsets are
   committed every second, after the states are durable), so the lag stays bounded.
4. *Latency*: every step has trippers (gauges that open one incident each). Per opened event: from the publish of
   the reading that opened it (its ``ts``) to the event's Kafka timestamp on ``incidents``, and to its row's
   ``projected_at`` in PostgreSQL.

CPU per process is sampled over each step (PostgreSQL with its backends).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cityops.bench import BenchOutcome
from cityops.bench.environment import BenchEnvironment, read_json_lines
from cityops.bench.ingest import _CpuSampler
from cityops.cli_worker import STREAMS_APP_ID
from cityops.services.kafka import ensure_topics
from domain.incident_events import IncidentEventType, decode_event
from domain.readings import Reading
from rules.catalogue import load_rules
from rules.detection import DeviceState, evaluate
from streams.topology import INCIDENTS, READINGS, TopicSpec

BASELINE_TOPIC = TopicSpec("bench.readings", READINGS.partitions, "device_id", "benchmark baseline load")
# Device types of the pure-engine run, with a value range that mostly stays below their rules' triggers (a city's
# readings are mostly unremarkable; a storm of transitions measures the lifecycle, not detection).
PURE_TYPES = {
    "water_level": ("water_level_cm", 0.0, 12.0),
    "rain_gauge": ("rain_intensity_mmh", 0.0, 15.0),
    "manhole_cover": ("cover_tilt_deg", 0.0, 8.0),
    "waste_bin": ("fill_level_pct", 0.0, 85.0),
    "gas_detector": ("gas_lel_pct", 0.0, 6.0),
}


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    sent: int
    drain_s: float | None  # after the step ended, until it was all consumed (None: not within the limit)
    cpu_cores: dict[str, float]
    incident_p50_ms: float | None = None
    incident_p99_ms: float | None = None
    row_p50_ms: float | None = None
    row_p99_ms: float | None = None
    samples: int = 0

    def sustained(self, max_drain_s: float) -> bool:
        return self.drain_s is not None and self.drain_s <= max_drain_s


@dataclass
class RulesBenchResult:
    devices: int
    step_s: float
    max_drain_s: float
    pure_readings_per_s: float = 0.0
    pure_us_per_reading: float = 0.0
    baseline: list[Step] = field(default_factory=list)
    worker: list[Step] = field(default_factory=list)

    def best(self, steps: list[Step]) -> Step | None:
        good = [s for s in steps if s.sustained(self.max_drain_s)]
        return max(good, key=lambda s: s.rate) if good else None


def measure_pure_engine(readings: int = 150_000, devices: int = 3000) -> tuple[float, float]:
    """Readings/s and µs per reading through ``evaluate`` alone (states in a dict, nothing else)."""
    rules = load_rules()
    generator = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    types = list(PURE_TYPES)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    batch = []
    for n in range(readings):
        device = n % devices
        device_type = types[device % len(types)]
        metric, low, high = PURE_TYPES[device_type]
        ts = start + timedelta(seconds=60 * (n // devices), microseconds=device)
        batch.append(
            Reading(
                device_id=f"pure-{device:05d}",
                ts=ts,
                metrics={metric: generator.uniform(low, high), "battery_pct": 80.0},
                ingested_at=ts,
                device_type=device_type,
                grid_cell=f"cell-{device % 200}",
                district=f"d-{device % 10}",
            )
        )
    states: dict[str, DeviceState] = {}
    began = time.perf_counter()
    for reading in batch:
        state, _ = evaluate(rules, states.get(reading.device_id), reading)
        states[reading.device_id] = state
    elapsed = time.perf_counter() - began
    return readings / elapsed, elapsed / readings * 1e6


def _schedule(rates: list[float], step_s: float, gap_s: float) -> str:
    return ",".join(f"{rate:.0f}:{step_s},0:{gap_s}" for rate in rates)


def _load(
    env: BenchEnvironment, name: str, topic: str, schedule: str, devices: int
) -> tuple[Path, subprocess.Popen[bytes]]:
    output = env.log_dir / f"rules-load-{name}.jsonl"
    process = env.start_python(
        "cityops.bench.kafka_load",
        "--broker", env.settings.kafka.bootstrap_servers,
        "--topic", topic,
        "--devices", str(devices),
        "--schedule", schedule,
        output=output,
    )  # fmt: skip
    return output, process


async def _group_lag(broker: str, group: str, ends: dict[TopicPartition, int]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(0, end - (committed[tp].offset if tp in committed else 0)) for tp, end in ends.items())


async def _end_offsets(broker: str, topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def _worker_drain(env: BenchEnvironment, ended_ms: float, max_wait_s: float) -> float | None:
    broker = env.settings.kafka.bootstrap_servers
    ends = asyncio.run(_end_offsets(broker, READINGS.name, READINGS.partitions))
    while time.time() * 1000 - ended_ms < max_wait_s * 1000:
        if asyncio.run(_group_lag(broker, STREAMS_APP_ID, ends)) == 0:
            return max(0.0, (time.time() * 1000 - ended_ms) / 1000)
        time.sleep(0.25)
    return None


async def _incident_latencies(broker: str) -> list[tuple[float, float]]:
    """(publish time ms of the opening reading, ms from it to the opened event on ``incidents``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    samples = []
    try:
        tps = [TopicPartition(INCIDENTS.name, p) for p in range(INCIDENTS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = decode_event(record.value)
                    if event.type is IncidentEventType.OPENED and event.incident.source.startswith("bt-"):
                        published = max(e.ts for e in event.incident.evidence).timestamp() * 1000
                        samples.append((published, record.timestamp - published))
    finally:
        await consumer.stop()
    return samples


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return round(values[0], 1), round(values[0], 1)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(statistics.median(values), 1), round(cuts[98], 1)


def run_rules_bench(
    env: BenchEnvironment, *, rates: list[float], step_s: float, gap_s: float = 8.0, devices: int = 3000
) -> RulesBenchResult:
    result = RulesBenchResult(devices=devices, step_s=step_s, max_drain_s=3.0)
    env.report("pure engine: rules.detection.evaluate in this process")
    result.pure_readings_per_s, result.pure_us_per_reading = measure_pure_engine()
    broker = env.settings.kafka.bootstrap_servers
    asyncio.run(ensure_topics(broker, [BASELINE_TOPIC]))
    schedule = _schedule(rates, step_s, gap_s)

    env.report("baseline: a bare aiokafka consumer")
    sink_output = env.log_dir / "rules-sink.jsonl"
    sink = env.start_python(
        "cityops.bench.kafka_sink", "--broker", broker, "--topic", BASELINE_TOPIC.name, output=sink_output
    )
    time.sleep(4.0)
    load_output, load = _load(env, "baseline", BASELINE_TOPIC.name, schedule, devices)
    with _CpuSampler(env, {"baseline-consumer": sink.pid, "load": load.pid}) as cpu:
        load.wait()
        time.sleep(gap_s)
    sink.terminate()
    sink.wait(10)
    timeline = [(float(str(r["t_ms"])), int(str(r["received"]))) for r in read_json_lines(sink_output)]
    for line in read_json_lines(load_output):
        result.baseline.append(_baseline_step(line, timeline, cpu, result.max_drain_s))

    env.report("worker: cityops worker")
    env.start("worker")
    time.sleep(8.0)
    output, load = _load(env, "worker", READINGS.name, schedule, devices)
    steps: list[Step] = []
    seen = 0
    with _CpuSampler(env, {"load": load.pid}) as cpu:
        while load.poll() is None or seen < len(rates):
            lines = read_json_lines(output)
            for line in lines[seen:]:
                drain = _worker_drain(env, float(str(line["ended_ms"])), gap_s - 1.0)
                steps.append(
                    Step(
                        rate=float(str(line["rate"])),
                        sent=int(str(line["sent"])),
                        drain_s=drain,
                        cpu_cores=cpu.cores(float(str(line["started_ms"])), float(str(line["ended_ms"]))),
                    )
                )
            seen = len(lines)
            time.sleep(0.5)
    time.sleep(3.0)
    latencies = asyncio.run(_incident_latencies(broker))
    rows = env.query(
        """
        SELECT extract(epoch FROM max(e.ts)) * 1000, extract(epoch FROM i.projected_at - max(e.ts)) * 1000
        FROM incidents i JOIN incident_evidence e ON e.incident_id = i.id
        WHERE i.source LIKE 'bt-%%' GROUP BY i.id, i.projected_at
        """
    )
    steps_raw = read_json_lines(output)
    for index, step in enumerate(steps):
        started, ended = float(str(steps_raw[index]["started_ms"])), float(str(steps_raw[index]["ended_ms"]))
        inside = [lat for published, lat in latencies if started <= published <= ended]
        projected = [float(str(lat)) for published, lat in rows if started <= float(str(published)) <= ended]
        p50, p99 = _percentiles(inside)
        r50, r99 = _percentiles(projected)
        result.worker.append(
            Step(step.rate, step.sent, step.drain_s, step.cpu_cores, p50, p99, r50, r99, samples=len(inside))
        )
    return result


def _baseline_step(line: dict[str, object], timeline: list[tuple[float, int]], cpu: _CpuSampler, limit: float) -> Step:
    started, ended = float(str(line["started_ms"])), float(str(line["ended_ms"]))
    sent = int(str(line["sent"]))
    before = max((count for t, count in timeline if t <= started), default=0)
    done = next((t for t, count in timeline if t > started and count - before >= sent), None)
    drain = None if done is None else max(0.0, (done - ended) / 1000)
    return Step(rate=float(str(line["rate"])), sent=sent, drain_s=drain, cpu_cores=cpu.cores(started, ended))


def summary(result: RulesBenchResult) -> dict[str, object]:
    best = result.best(result.worker)
    baseline = result.best(result.baseline)
    return {
        "bench": "rules",
        "pure_engine_readings_per_s": round(result.pure_readings_per_s),
        "worker_readings_per_s": best.rate if best else 0,
        "baseline_readings_per_s": baseline.rate if baseline else 0,
        "ratio_to_baseline": round(best.rate / baseline.rate, 3) if best and baseline else None,
        "reading_to_incident": {
            "p50_ms": best.incident_p50_ms if best else None,
            "p99_ms": best.incident_p99_ms if best else None,
        },
        "reading_to_row": {"p50_ms": best.row_p50_ms if best else None, "p99_ms": best.row_p99_ms if best else None},
        "devices": result.devices,
    }


def render(result: RulesBenchResult, command: str) -> str:
    from cityops.bench.report import plot, stamp, table

    numbers = summary(result)
    plot_path = plot(
        "rules",
        {
            "baseline: bare aiokafka consumer": (
                [s.rate for s in result.baseline],
                [s.sent / result.step_s if s.sustained(result.max_drain_s) else 0 for s in result.baseline],
            ),
            "cityops worker (detect, correlate, project)": (
                [s.rate for s in result.worker],
                [s.sent / result.step_s if s.sustained(result.max_drain_s) else 0 for s in result.worker],
            ),
        },
        xlabel="offered readings/s",
        ylabel="sustained readings/s (0: lag grew)",
        title="cityops bench rules",
    )
    processes = sorted({name for step in result.worker for name in step.cpu_cores})

    def cell(value: object) -> object:
        return "-" if value is None else value

    body = [
        "## Rules: readings to incidents",
        "",
        stamp(command),
        f"{result.devices} water-level gauges report round robin into `readings` (as ingest produces), at stepped "
        f"offered rates for {result.step_s:.0f} s each; every 20th gauge of a step opens one incident. A step is "
        f"sustained when everything produced is consumed (the worker: its committed offsets) within "
        f"{result.max_drain_s:.0f} s of the step's end. Latency: from the publish of the reading that opened an "
        "incident to the event's timestamp on `incidents`, and to the row's `projected_at`.",
        "",
        table(
            ["", "readings/s", "reading→incident p50 / p99", "reading→row p50 / p99"],
            [
                ["pure engine (`evaluate`, one core, no I/O)", numbers["pure_engine_readings_per_s"], "", ""],
                [
                    "`cityops worker` sustained",
                    numbers["worker_readings_per_s"],
                    f"{numbers['reading_to_incident']['p50_ms']} / {numbers['reading_to_incident']['p99_ms']} ms",  # type: ignore[index]
                    f"{numbers['reading_to_row']['p50_ms']} / {numbers['reading_to_row']['p99_ms']} ms",  # type: ignore[index]
                ],
                ["baseline: bare aiokafka consumer sustained", numbers["baseline_readings_per_s"], "", ""],
                ["ratio worker / baseline", numbers["ratio_to_baseline"], "", ""],
            ],
        ),
        "",
        f"![rules ramp](bench/{plot_path.name})",
        "",
        "### Ramp",
        "",
        table(
            [
                "offered/s",
                "baseline drain s",
                "worker drain s",
                "incident p50 ms",
                "p99 ms",
                "row p50 ms",
                "p99 ms",
                "samples",
            ],
            [
                [
                    f"{w.rate:.0f}",
                    cell(b.drain_s),
                    cell(w.drain_s),
                    cell(w.incident_p50_ms),
                    cell(w.incident_p99_ms),
                    cell(w.row_p50_ms),
                    cell(w.row_p99_ms),
                    w.samples,
                ]
                for b, w in zip(result.baseline, result.worker, strict=False)
            ],
        ),
        "",
        "### CPU per process (cores, averaged over each worker step)",
        "",
        table(
            ["offered/s", *processes],
            [[f"{s.rate:.0f}", *(s.cpu_cores.get(p, "") for p in processes)] for s in result.worker],
        ),
    ]
    return "\n".join(body)


def run(env: BenchEnvironment, *, quick: bool, command: str) -> BenchOutcome:
    rates = [2000.0, 5000.0] if quick else [2000.0, 4000.0, 6000.0, 8000.0, 10000.0, 12000.0]
    result = run_rules_bench(env, rates=rates, step_s=8.0 if quick else 20.0, devices=1000 if quick else 3000)
    numbers = summary(result)
    headline = (
        f"rules: pure engine {numbers['pure_engine_readings_per_s']} readings/s; worker "
        f"{numbers['worker_readings_per_s']} readings/s sustained, baseline {numbers['baseline_readings_per_s']}"
    )
    return BenchOutcome(render(result, command), numbers, headline)
