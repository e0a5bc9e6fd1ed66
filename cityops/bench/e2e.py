"""`cityops bench e2e`: the whole platform, from a device's publish to the crew's phone, ramped, against the bare
broker as a baseline.

Method. The bench instance gets the Helsinki pack, its water-level gauges (each its own MQTT connection and
credentials) and four crews per department unit. `cityops ingest`, `persist`, `worker` and `dispatch` run as
processes (cityops.pipeline). The load (``simulators.load --pattern city``, a separate process) offers stepped
rates of readings; a small share of the gauges (another one every minute) floods to 60 cm for part of the minute, so
new incidents open (critical: dispatched at once, no correlation hold) and work orders go out to crews at every
step; an observer subscribed to
``crews/+/tasks`` with the observer account records when each task arrives. The same ramp runs twice: one sample
per message, and data loggers sending arrays of 12 samples per message (rates stay samples per second).

Per step, for the samples published in it:

* ``lost``: samples the broker acknowledged (PUBACK) that are not rows in PostgreSQL once the persister has caught up
  (waited for up to 3 minutes after the ramp)
  (the load generator writes every acknowledged key; the rows are looked up by (device, metric, ts));
* ``duplicated``: records of the same (device, ts) more than once on the ``readings`` topic (redeliveries); rows
  cannot be duplicated (the table's primary key is (device, metric, ts)), so that count is reported as such;
* *sustained*: nothing lost, and within ``max_drain_s`` of the step's end every sample is stored and the worker's
  committed offsets reach the end of ``readings`` (its lag is bounded);
* latency percentiles per stage, from the sample's ``ts`` (its publish time): the ``readings`` record's Kafka
  timestamp, the row's ``stored_at``; and from the publish of the reading that opened an incident (the newest of its
  evidence): the ``incidents`` record's timestamp, ``incidents.projected_at``, ``work_orders.created_at`` and the
  ``assigned`` task's arrival at the observer; ``incident_to_crew`` is from the incident event to the task;
* CPU per process, sampled across the step.

The baseline is the broker with a bare QoS 1 subscriber (cityops.bench.sink), under the same load and payloads,
measured in the same run; results are ratios to it.
"""

from __future__ import annotations

import asyncio
import csv
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from cityops.bench import BenchOutcome
from cityops.bench.environment import BenchEnvironment, read_json_lines
from cityops.bench.ingest import _baseline_step, _CpuSampler
from cityops.pipeline import Pipeline, PipelinePlan, TaskObserver, prepare_city
from cityops.provision import credentials_dir

PREFIX = "wl-"
STAGES = (
    "publish_to_kafka",
    "publish_to_row",
    "publish_to_incident",
    "publish_to_projected",
    "publish_to_work_order",
    "publish_to_crew",
    "incident_to_crew",
)


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50_ms: float | None
    p99_ms: float | None
    samples: int

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        if not values:
            return cls(None, None, 0)
        if len(values) == 1:
            return cls(round(values[0], 1), round(values[0], 1), 1)
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cls(round(statistics.median(values), 1), round(cuts[98], 1), len(values))


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    samples_per_message: int
    acknowledged: int  # samples
    stored: int
    lost: int
    duplicated_on_topic: int
    drain_s: float | None
    worker_drain_s: float | None
    stages: dict[str, Percentiles]
    cpu_cores: dict[str, float]

    def sustained(self, max_drain_s: float) -> bool:
        return (
            self.lost == 0
            and self.drain_s is not None
            and self.drain_s <= max_drain_s
            and self.worker_drain_s is not None
            and self.worker_drain_s <= max_drain_s
        )


@dataclass
class E2eResult:
    gauges: int
    step_s: float
    max_drain_s: float
    baseline: dict[int, list[Step]] = field(default_factory=dict)  # samples per message -> steps
    pipeline: dict[int, list[Step]] = field(default_factory=dict)

    def best(self, steps: list[Step]) -> Step | None:
        good = [s for s in steps if s.sustained(self.max_drain_s)]
        return max(good, key=lambda s: s.rate) if good else None


def _schedule(rates: list[float], step_s: float, gap_s: float) -> str:
    return ",".join(f"{rate:g}:{step_s:g},0:{gap_s:g}" for rate in rates)


def _load(env: BenchEnvironment, name: str, schedule: str, samples: int) -> tuple[Path, Path, subprocess.Popen[bytes]]:
    output = env.log_dir / f"e2e-load-{name}.jsonl"
    keys = env.log_dir / f"e2e-keys-{name}.csv"
    keys.unlink(missing_ok=True)
    process = env.start_python(
        "simulators.load",
        "--port", str(env.settings.mqtt.port),
        "--credentials", str(credentials_dir(env.settings) / "devices.csv"),
        "--prefix", PREFIX,
        "--schedule", schedule,
        "--samples", str(samples),
        "--pattern", "city",
        "--trippers", "0.05",
        "--trip-period", "60",
        "--trip-level", "60",  # critical: dispatched at once, so the crew stage measures the machinery, not a hold
        "--rotate-trippers",  # new gauges flood each minute: new incidents and work orders at every step
        "--keys", str(keys),
        output=output,
    )  # fmt: skip
    return output, keys, process


def _steps(path: Path) -> list[dict[str, object]]:
    return [step for step in read_json_lines(path) if float(str(step["rate"])) > 0]


def _span(line: dict[str, object], samples: int) -> tuple[float, float]:
    """The event times (ms) a load step's samples can carry: an array's samples are 1 ms apart and end at its
    publish time, so the first message's earliest samples precede the step's start by up to ``samples - 1`` ms."""
    return float(str(line["started_ms"])) - (samples - 1), float(str(line["ended_ms"]))


def _acknowledged(keys: Path, start_ms: float, end_ms: float) -> set[tuple[str, int]]:
    found = set()
    if keys.exists():
        with keys.open() as handle:
            for device_id, ts, acked in csv.reader(handle):
                stamp = int(ts)
                if acked == "1" and start_ms <= stamp <= end_ms:
                    found.add((device_id, stamp))
    return found


# --- Kafka scans ----------------------------------------------------------------------------------------------


async def _scan(broker: str, topic: str, partitions: int) -> list[tuple[int, bytes]]:
    """Every record of a topic: (Kafka timestamp ms, value)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=20000)).values():
                out.extend((record.timestamp, record.value) for record in records if record.value is not None)
    finally:
        await consumer.stop()
    return out


def _epoch_ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000


def _readings_topic(env: BenchEnvironment) -> list[tuple[str, float, int]]:
    """(device, ts ms, Kafka timestamp ms) of every reading on ``readings`` from the load's gauges."""
    from streams.topology import READINGS

    records = asyncio.run(_scan(env.settings.kafka.bootstrap_servers, READINGS.name, READINGS.partitions))
    found = []
    for timestamp, value in records:
        record = orjson.loads(value)
        device = str(record.get("device_id", ""))
        if device.startswith(PREFIX):
            found.append((device, _epoch_ms(str(record["ts"])), timestamp))
    return found


def _opened_incidents(env: BenchEnvironment) -> dict[str, tuple[float, int]]:
    """incident id -> (publish ms of the newest evidence, Kafka timestamp of its ``opened`` event)."""
    from domain.incident_events import IncidentEventType, decode_event
    from streams.topology import INCIDENTS

    records = asyncio.run(_scan(env.settings.kafka.bootstrap_servers, INCIDENTS.name, INCIDENTS.partitions))
    opened: dict[str, tuple[float, int]] = {}
    for timestamp, value in records:
        event = decode_event(value)
        incident = event.incident
        if (
            event.type is IncidentEventType.OPENED
            and incident.source.startswith(PREFIX)
            and incident.evidence
            and incident.id not in opened
        ):
            opened[incident.id] = (max(e.ts for e in incident.evidence).timestamp() * 1000, timestamp)
    return opened


# --- the run --------------------------------------------------------------------------------------------------


def _wait_persisted(env: BenchEnvironment, pipeline: Pipeline, limit_s: float = 180.0) -> None:
    """Before anything is judged lost: let the persister write what an overloaded step left in Kafka, so `lost`
    counts samples that never became rows, not rows still on their way."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        persist = pipeline.lag().persist
        if persist == 0:
            return
        time.sleep(1.0)
    env.report(f"the persister was still {pipeline.lag().persist} records behind after {limit_s:g} s")


def _wait_drained(
    env: BenchEnvironment,
    pipeline: Pipeline,
    ended_ms: float,
    acknowledged: int,
    window: dict[str, object],
    limit_s: float,
) -> tuple[float | None, float | None]:
    """Seconds after the step's end until its samples were all stored, and until the worker's lag was 0."""
    stored_at: float | None = None
    worker_at: float | None = None
    deadline = time.time() + limit_s + 30
    while time.time() < deadline and (stored_at is None or worker_at is None):
        now_ms = time.time() * 1000
        # The lag first: the count below can take a while on a large table, and would delay seeing it.
        if worker_at is None and pipeline.lag().worker == 0:
            worker_at = max(0.0, (now_ms - ended_ms) / 1000)
        if stored_at is None:
            [(count,)] = env.query(
                "SELECT count(*) FROM readings WHERE device_id LIKE %(prefix)s AND ts >= to_timestamp(%(start)s) "
                "AND ts <= to_timestamp(%(end)s)",
                window,
            )
            if int(str(count)) >= acknowledged:
                [(last,)] = env.query(
                    "SELECT extract(epoch FROM max(stored_at)) * 1000 FROM readings WHERE device_id LIKE %(prefix)s "
                    "AND ts >= to_timestamp(%(start)s) AND ts <= to_timestamp(%(end)s)",
                    window,
                )
                stored_at = max(0.0, (float(str(last)) - ended_ms) / 1000) if last is not None else 0.0
        time.sleep(0.25)
    return stored_at, worker_at


def run_e2e_bench(
    env: BenchEnvironment,
    *,
    rates: dict[int, list[float]],
    step_s: float,
    gap_s: float = 8.0,
    devices: int | None = None,
    max_drain_s: float = 3.0,
) -> E2eResult:
    env.report("the city: Helsinki, its water-level gauges, 4 crews per unit")
    placed = prepare_city(
        env.settings, devices=devices, crews_per_unit=4, keep=lambda d: d.id.startswith(PREFIX), report=env.report
    )
    result = E2eResult(gauges=len(placed), step_s=step_s, max_drain_s=max_drain_s)

    # -- baseline: the broker and a bare subscriber, with the same payloads ----------------------------------
    for samples, ramp in rates.items():
        env.report(f"baseline, {samples} sample(s) per message: broker + bare QoS 1 subscriber")
        sink_output = env.log_dir / f"e2e-sink-{samples}.jsonl"
        sink = env.start_python(
            "cityops.bench.sink",
            "--port", str(env.settings.mqtt.port),
            "--username", env.settings.mqtt.observer_username,
            "--password-env", "CITYOPS_MQTT__OBSERVER_PASSWORD",
            output=sink_output,
        )  # fmt: skip
        time.sleep(2.0)
        load_output, _, load = _load(env, f"baseline-{samples}", _schedule(ramp, step_s, gap_s), samples)
        with _CpuSampler(env, {"baseline-sink": sink.pid, "load": load.pid}) as cpu:
            load.wait()
            time.sleep(gap_s)
        sink.terminate()
        sink.wait(10)
        # The sink counts messages; a step's messages are its samples / samples per message.
        timeline = [(float(str(r["t_ms"])), int(str(r["received"])) * samples) for r in read_json_lines(sink_output)]
        result.baseline[samples] = []
        for line in _steps(load_output):
            line = {**line, "acknowledged": int(str(line["acknowledged"])) * samples}
            outcome = _baseline_step(line, timeline, cpu)
            result.baseline[samples].append(
                Step(
                    rate=outcome.rate,
                    samples_per_message=samples,
                    acknowledged=outcome.published,
                    stored=outcome.delivered,
                    lost=outcome.lost,
                    duplicated_on_topic=0,
                    drain_s=outcome.drain_s,
                    worker_drain_s=outcome.drain_s,
                    stages={},
                    cpu_cores=outcome.cpu_cores,
                )
            )

    # -- the pipeline -----------------------------------------------------------------------------------------
    env.report("pipeline: cityops ingest, persist, worker, dispatch")
    pipeline = Pipeline(
        env.settings,
        PipelinePlan(env={"dispatch": {"CITYOPS_LOG_LEVEL": "WARNING"}, "worker": {"CITYOPS_LOG_LEVEL": "WARNING"}}),
        log_dir=env.log_dir,
        report=env.report,
    )
    observer = TaskObserver(env.settings).start()
    try:
        pipeline.start()
        time.sleep(4.0)
        for samples, ramp in rates.items():
            env.report(f"pipeline, {samples} sample(s) per message: {', '.join(f'{r:g}' for r in ramp)} readings/s")
            load_output, keys, load = _load(env, f"pipeline-{samples}", _schedule(ramp, step_s, gap_s), samples)
            measured: list[tuple[dict[str, object], float | None, float | None, dict[str, float]]] = []
            with _CpuSampler(env, {**pipeline.pids(), "load": load.pid}) as cpu:
                seen = 0
                while load.poll() is None or seen < len(ramp):
                    lines = _steps(load_output)
                    for line in lines[seen:]:
                        started, ended = _span(line, samples)
                        acked = int(str(line["acknowledged"])) * samples
                        window = {"prefix": PREFIX + "%", "start": started / 1000, "end": ended / 1000}
                        drain, worker = _wait_drained(env, pipeline, ended, acked, window, max_drain_s)
                        measured.append((line, drain, worker, cpu.cores(started, ended)))
                    seen = len(lines)
                    if load.poll() is not None and seen >= len(_steps(load_output)):
                        break
                    time.sleep(0.5)
            time.sleep(3.0)
            _wait_persisted(env, pipeline)
            result.pipeline[samples] = _judge(env, observer, keys, measured, samples)
    finally:
        observer.stop()
        pipeline.stop()
    return result


def _judge(
    env: BenchEnvironment,
    observer: TaskObserver,
    keys: Path,
    measured: list[tuple[dict[str, object], float | None, float | None, dict[str, float]]],
    samples: int,
) -> list[Step]:
    topic = _readings_topic(env)
    opened = _opened_incidents(env)
    assigned = observer.first_assigned()
    incident_rows = env.query(
        """
        SELECT i.id, extract(epoch FROM i.projected_at) * 1000,
               (SELECT extract(epoch FROM min(w.created_at)) * 1000 FROM work_orders w WHERE w.incident_id = i.id),
               (SELECT min(w.id) FROM work_orders w WHERE w.incident_id = i.id)
        FROM incidents i WHERE i.source LIKE %s AND i.kind = 'device'
        """,
        (PREFIX + "%",),
    )
    steps = []
    for line, drain, worker, cores in measured:
        started, ended = _span(line, samples)
        acknowledged = _acknowledged(keys, started, ended)
        window = {"prefix": PREFIX + "%", "start": started / 1000, "end": ended / 1000}
        rows = env.query(
            "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, extract(epoch FROM stored_at - ts) * 1000 "
            "FROM readings WHERE device_id LIKE %(prefix)s AND metric = 'water_level_cm' "
            "AND ts >= to_timestamp(%(start)s) AND ts <= to_timestamp(%(end)s)",
            window,
        )
        stored = {(str(r[0]), int(str(r[1]))) for r in rows}
        in_step = [(d, ts, kafka_ms) for d, ts, kafka_ms in topic if started <= ts <= ended]
        copies = Counter((d, ts) for d, ts, _ in in_step)
        stages: dict[str, list[float]] = {name: [] for name in STAGES}
        stages["publish_to_kafka"] = [kafka_ms - ts for _, ts, kafka_ms in in_step]
        stages["publish_to_row"] = [float(str(r[2])) for r in rows]
        for incident_id, projected_ms, order_ms, order_id in incident_rows:
            if str(incident_id) not in opened:
                continue
            published, event_ms = opened[str(incident_id)]
            if not started <= published <= ended:
                continue
            stages["publish_to_incident"].append(event_ms - published)
            stages["publish_to_projected"].append(float(str(projected_ms)) - published)
            if order_ms is not None:
                stages["publish_to_work_order"].append(float(str(order_ms)) - published)
            task = assigned.get(str(order_id)) if order_id is not None else None
            if task is not None:
                stages["publish_to_crew"].append(task.received_at * 1000 - published)
                stages["incident_to_crew"].append(task.received_at * 1000 - event_ms)
        steps.append(
            Step(
                rate=float(str(line["rate"])),
                samples_per_message=samples,
                acknowledged=len(acknowledged),
                stored=len(stored & acknowledged),
                lost=len(acknowledged - stored),
                duplicated_on_topic=sum(n - 1 for n in copies.values() if n > 1),
                drain_s=drain,
                worker_drain_s=worker,
                stages={name: Percentiles.of(values) for name, values in stages.items()},
                cpu_cores=cores,
            )
        )
    return steps


# --- the report -----------------------------------------------------------------------------------------------


def summary(result: E2eResult) -> dict[str, object]:
    """The numbers scripts read (``cityops bench e2e --json`` prints this as its last line)."""
    single = result.pipeline.get(1, [])
    best = result.best(single)
    baseline = result.best(result.baseline.get(1, []))
    counted = [s for s in single if best is None or s.rate <= best.rate]

    def stage(name: str) -> dict[str, float | None]:
        if best is None or name not in best.stages:
            return {"p50_ms": None, "p99_ms": None}
        return {"p50_ms": best.stages[name].p50_ms, "p99_ms": best.stages[name].p99_ms}

    numbers: dict[str, object] = {
        "bench": "e2e",
        "readings_per_s": best.rate if best else 0,
        "baseline_readings_per_s": baseline.rate if baseline else 0,
        "ratio_to_baseline": round(best.rate / baseline.rate, 3) if best and baseline else None,
        "lost": sum(s.lost for s in counted),
        "duplicated": sum(s.duplicated_on_topic for s in counted),
        "duplicated_counted_as": "records of one (device, ts) more than once on the readings topic; "
        "rows cannot repeat (primary key device, metric, ts)",
        **{name: stage(name) for name in STAGES},
        "gauges": result.gauges,
    }
    for samples, steps in result.pipeline.items():
        if samples != 1:
            arrays = result.best(steps)
            numbers[f"arrays_of_{samples}"] = {
                "readings_per_s": arrays.rate if arrays else 0,
                "lost": sum(s.lost for s in steps if arrays is None or s.rate <= arrays.rate),
                "publish_to_row": {
                    "p50_ms": arrays.stages["publish_to_row"].p50_ms if arrays else None,
                    "p99_ms": arrays.stages["publish_to_row"].p99_ms if arrays else None,
                },
            }
    return numbers


def render(result: E2eResult, command: str) -> str:
    from cityops.bench.report import plot, stamp, table

    numbers = summary(result)
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {}
    for samples, steps in result.baseline.items():
        series[f"baseline: broker + bare subscriber, {samples}/message"] = (
            [s.rate for s in steps],
            [s.stored / result.step_s for s in steps],
        )
    for samples, steps in result.pipeline.items():
        series[f"pipeline to rows, {samples} sample(s)/message"] = (
            [s.rate for s in steps],
            [s.stored / result.step_s if s.sustained(result.max_drain_s) else 0 for s in steps],
        )
    plot_path = plot(
        "e2e", series, xlabel="offered readings/s", ylabel="sustained readings/s (0: lost or lag grew)",
        title="cityops bench e2e",
    )  # fmt: skip

    def cell(p: Percentiles | None) -> str:
        return "-" if p is None or p.p50_ms is None else f"{p.p50_ms:g} / {p.p99_ms:g} ({p.samples})"

    body = [
        "## End to end: device publish to the crew's task",
        "",
        stamp(command),
        f"{result.gauges} water-level gauges of Helsinki, each its own MQTT connection and credentials, publish QoS 1 "
        f"at stepped offered rates for {result.step_s:g} s each; every minute another 5 % of them flood to 60 cm "
        "for 30 % of it (new critical incidents at every step: dispatched at once). `cityops ingest`, `persist`, "
        "`worker` and `dispatch` run as processes; an observer on `crews/+/tasks` records when each task arrives. "
        "A step is *sustained* when "
        f"every acknowledged sample is a row and, within {result.max_drain_s:g} s of the step's end, all are stored "
        "and the worker's committed offsets reach the end of `readings`. `lost`: acknowledged samples that are not "
        "rows; `duplicated`: records of one (device, ts) more than once on `readings` (rows cannot repeat: the "
        "primary key is (device, metric, ts)). Latency from the sample's publish time (its `ts`); for incidents, "
        "from the publish of the newest reading of its evidence. Method: `cityops/bench/e2e.py`.",
        "",
        table(
            [
                "",
                "readings/s sustained",
                "lost",
                "duplicated (topic)",
                "publish→row p50 / p99 ms",
                "publish→incident",
                "incident→crew task",
            ],
            [
                [
                    "pipeline, 1 sample per message",
                    numbers["readings_per_s"],
                    numbers["lost"],
                    numbers["duplicated"],
                    _pair(numbers["publish_to_row"]),
                    _pair(numbers["publish_to_incident"]),
                    _pair(numbers["incident_to_crew"]),
                ],
                ["baseline (broker + bare subscriber)", numbers["baseline_readings_per_s"], "", "", "", "", ""],
                ["ratio pipeline / baseline", numbers["ratio_to_baseline"], "", "", "", "", ""],
            ],
        ),
        "",
        f"![e2e ramp](bench/{plot_path.name})",
        "",
    ]
    for samples, steps in result.pipeline.items():
        label = "one sample per message" if samples == 1 else f"data loggers: arrays of {samples} samples per message"
        baseline = {s.rate: s for s in result.baseline.get(samples, [])}
        body += [
            f"### Ramp, {label}",
            "",
            table(
                [
                    "offered/s",
                    "baseline delivered",
                    "acknowledged",
                    "stored",
                    "lost",
                    "dup. on topic",
                    "drain s",
                    "worker drain s",
                    "verdict",
                ],
                [
                    [
                        f"{s.rate:g}",
                        baseline[s.rate].stored if s.rate in baseline else "",
                        s.acknowledged,
                        s.stored,
                        s.lost,
                        s.duplicated_on_topic,
                        s.drain_s,
                        s.worker_drain_s,
                        "sustained" if s.sustained(result.max_drain_s) else "not sustained",
                    ]
                    for s in steps
                ],
            ),
            "",
            "Latency p50 / p99 ms (samples), per stage:",
            "",
            table(
                ["offered/s", *STAGES],
                [[f"{s.rate:g}", *(cell(s.stages.get(name)) for name in STAGES)] for s in steps],
            ),
            "",
            "CPU per process (cores, averaged over each step):",
            "",
            _cpu_table(steps),
            "",
        ]
    return "\n".join(body)


def _pair(value: object) -> str:
    if not isinstance(value, dict) or value.get("p50_ms") is None:
        return "-"
    return f"{value['p50_ms']} / {value['p99_ms']}"


def _cpu_table(steps: list[Step]) -> str:
    from cityops.bench.report import table

    processes = sorted({name for step in steps for name in step.cpu_cores})
    return table(
        ["offered/s", *processes], [[f"{s.rate:g}", *(s.cpu_cores.get(p, "") for p in processes)] for s in steps]
    )


def run(env: BenchEnvironment, *, quick: bool, command: str) -> BenchOutcome:
    rates = (
        {1: [500.0, 1500.0], 12: [1500.0]}
        if quick
        else {1: [1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0], 12: [2000.0, 4000.0, 8000.0, 12000.0]}
    )
    result = run_e2e_bench(env, rates=rates, step_s=6.0 if quick else 20.0, devices=None if quick else 6000)
    numbers = summary(result)
    headline = (
        f"e2e: {numbers['readings_per_s']} readings/s sustained end to end (baseline "
        f"{numbers['baseline_readings_per_s']}), lost {numbers['lost']}, incident→crew p99 "
        f"{_pair(numbers['incident_to_crew'])} ms"
    )
    return BenchOutcome(render(result, command), numbers, headline)
