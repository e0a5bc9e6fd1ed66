"""`cityops bench ingest`: MQTT to database rows, ramped, against the bare broker as a baseline.

Method. Devices (each its own MQTT connection and credentials) publish readings at stepped offered rates with
idle gaps between steps, from a separate load process. First the baseline: the broker with a bare QoS 1
subscriber (cityops.bench.sink). Then the pipeline: `cityops ingest` and `cityops persist` as processes. A step
is *sustained* when every acknowledged reading is stored and the last one is stored within ``max_drain_s`` after
the step ends. Latency is each row's ``stored_at - ts`` (ts is the publish time). CPU per process is sampled
across each step. The bridge runs under cProfile, and where its time goes is reported.
"""

from __future__ import annotations

import pstats
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cityops.bench import BenchOutcome
from cityops.bench.environment import BenchEnvironment, read_json_lines
from cityops.provision import credentials_dir, provision_devices
from domain.catalogue import load_catalogue
from domain.devices import Device
from domain.geo import Position

PREFIX = "bn-"


@dataclass(frozen=True, slots=True)
class StepOutcome:
    rate: float
    published: int
    delivered: int
    drain_s: float | None  # after the step ended, until its last reading was delivered
    p50_ms: float | None
    p99_ms: float | None
    cpu_cores: dict[str, float]  # average cores used during the step, per process

    @property
    def lost(self) -> int:
        return max(0, self.published - self.delivered)

    def sustained(self, max_drain_s: float) -> bool:
        return self.lost == 0 and self.drain_s is not None and self.drain_s <= max_drain_s

    @property
    def achieved_rate(self) -> float:
        return self.delivered / max(1e-9, self.published) * self.rate


@dataclass
class IngestBenchResult:
    devices: int
    step_s: float
    max_drain_s: float
    baseline: list[StepOutcome] = field(default_factory=list)
    pipeline: list[StepOutcome] = field(default_factory=list)
    profile_top: list[str] = field(default_factory=list)
    profile_rate: float = 0.0

    def best(self, steps: list[StepOutcome]) -> StepOutcome | None:
        good = [s for s in steps if s.sustained(self.max_drain_s)]
        return max(good, key=lambda s: s.rate) if good else None


def _provision(env: BenchEnvironment, count: int) -> None:
    catalogue = load_catalogue()
    water_level = catalogue.device_types["water_level"]
    devices = [
        Device(
            id=f"{PREFIX}{n:05d}",
            type_code="water_level",
            category_code=water_level.category_code,
            department_code="water",
            position=Position(24.90 + (n % 100) * 0.001, 60.15 + (n // 100) * 0.001),
        )
        for n in range(count)
    ]
    provision_devices(env.settings, catalogue, devices)


def _schedule(rates: list[float], step_s: float, gap_s: float) -> str:
    return ",".join(f"{rate:.0f}:{step_s},0:{gap_s}" for rate in rates)


class _CpuSampler:
    """Samples CPU seconds per process twice a second in a thread, for per-step averages afterwards."""

    def __init__(self, env: BenchEnvironment, extra: dict[str, int]) -> None:
        self.env = env
        self.extra = extra
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time() * 1000, self.env.cpu_snapshot(self.extra)))
            self._stop.wait(0.5)

    def cores(self, start_ms: float, end_ms: float) -> dict[str, float]:
        inside = [s for s in self.samples if start_ms <= s[0] <= end_ms]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        seconds = (t1 - t0) / 1000
        return {name: round((last.get(name, 0.0) - first.get(name, 0.0)) / seconds, 3) for name in last}


def _load_steps(path: Path) -> list[dict[str, object]]:
    return [step for step in read_json_lines(path) if float(str(step["rate"])) > 0]


def _run_load(env: BenchEnvironment, name: str, schedule: str) -> tuple[Path, subprocess.Popen[bytes]]:
    output = env.log_dir / f"load-{name}.jsonl"
    load = env.start_python(
        "simulators.load",
        "--port", str(env.settings.mqtt.port),
        "--credentials", str(credentials_dir(env.settings) / "devices.csv"),
        "--prefix", PREFIX,
        "--schedule", schedule,
        output=output,
    )  # fmt: skip
    return output, load


def run_ingest_bench(
    env: BenchEnvironment,
    *,
    rates: list[float],
    step_s: float = 15.0,
    gap_s: float = 6.0,
    devices: int = 2000,
    max_drain_s: float = 2.0,
) -> IngestBenchResult:
    result = IngestBenchResult(devices=devices, step_s=step_s, max_drain_s=max_drain_s)
    env.report(f"provisioning {devices} devices")
    _provision(env, devices)
    schedule = _schedule(rates, step_s, gap_s)

    # -- baseline: the broker and a bare subscriber -----------------------------------------------------------
    env.report("baseline: broker + bare QoS 1 subscriber")
    sink_output = env.log_dir / "sink.jsonl"
    sink = env.start_python(
        "cityops.bench.sink",
        "--port", str(env.settings.mqtt.port),
        "--username", env.settings.mqtt.observer_username,
        "--password-env", "CITYOPS_MQTT__OBSERVER_PASSWORD",
        output=sink_output,
    )  # fmt: skip
    time.sleep(2.0)
    load_output, load = _run_load(env, "baseline", schedule)
    with _CpuSampler(env, {"baseline-sink": sink.pid, "load": load.pid}) as cpu:
        load.wait()
        time.sleep(gap_s)
    sink.terminate()
    sink.wait(10)
    timeline = [(float(str(r["t_ms"])), int(str(r["received"]))) for r in read_json_lines(sink_output)]
    for step in _load_steps(load_output):
        result.baseline.append(_baseline_step(step, timeline, cpu))

    # -- the pipeline ----------------------------------------------------------------------------------------
    env.report("pipeline: cityops ingest + cityops persist")
    bridge = env.start("ingest")
    env.start("persist")
    time.sleep(4.0)
    load_output, load = _run_load(env, "pipeline", schedule)
    with _CpuSampler(env, {"load": load.pid}) as cpu:
        load.wait()
        time.sleep(gap_s)
        for step in _load_steps(load_output):
            result.pipeline.append(_pipeline_step(env, step, cpu))
    bridge.stop()

    # -- where the bridge's time goes: a separate profiled run, since cProfile roughly halves its speed -------
    profile_rate = min(rates)
    env.report(f"profiling the bridge at {profile_rate:.0f} readings/s")
    profile_path = env.log_dir / "ingest.prof"
    profiled = env.start("ingest", CITYOPS_PROFILE_PATH=str(profile_path))
    time.sleep(3.0)
    _, load = _run_load(env, "profile", _schedule([profile_rate], step_s, gap_s))
    load.wait()
    profiled.stop()
    result.profile_top = _profile_top(profile_path)
    result.profile_rate = profile_rate
    return result


def _baseline_step(step: dict[str, object], timeline: list[tuple[float, int]], cpu: _CpuSampler) -> StepOutcome:
    started, ended = float(str(step["started_ms"])), float(str(step["ended_ms"]))
    published = int(str(step["acknowledged"]))
    before = max((count for t, count in timeline if t <= started), default=0)
    after_points = [(t, count - before) for t, count in timeline if t > started]
    delivered = max((count for _, count in after_points), default=0)
    done = next((t for t, count in after_points if count >= published), None)
    return StepOutcome(
        rate=float(str(step["rate"])),
        published=published,
        delivered=min(delivered, published),
        drain_s=None if done is None else max(0.0, (done - ended) / 1000),
        p50_ms=None,
        p99_ms=None,
        cpu_cores=cpu.cores(started, ended),
    )


def _pipeline_step(env: BenchEnvironment, step: dict[str, object], cpu: _CpuSampler) -> StepOutcome:
    started, ended = int(str(step["started_ms"])), int(str(step["ended_ms"]))
    published = int(str(step["acknowledged"]))
    window = {"prefix": PREFIX + "%", "start": started / 1000, "end": ended / 1000 + 1}

    def stored() -> int:
        rows = env.query(
            "SELECT count(*) FROM readings WHERE device_id LIKE %(prefix)s "
            "AND ts >= to_timestamp(%(start)s) AND ts < to_timestamp(%(end)s)",
            window,
        )
        return int(str(rows[0][0]))

    deadline = time.monotonic() + 60
    while stored() < published and time.monotonic() < deadline:
        time.sleep(0.5)
    count, last_stored, p50, p99 = env.query(
        """
        SELECT count(*),
               extract(epoch FROM max(stored_at)) * 1000,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - ts) * 1000),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - ts) * 1000)
        FROM readings
        WHERE device_id LIKE %(prefix)s AND ts >= to_timestamp(%(start)s) AND ts < to_timestamp(%(end)s)
        """,
        window,
    )[0]
    delivered = int(str(count))
    drain = None
    if delivered >= published and last_stored is not None:
        drain = max(0.0, (float(str(last_stored)) - ended) / 1000)
    return StepOutcome(
        rate=float(str(step["rate"])),
        published=published,
        delivered=delivered,
        drain_s=drain,
        p50_ms=None if p50 is None else round(float(str(p50)), 1),
        p99_ms=None if p99 is None else round(float(str(p99)), 1),
        cpu_cores=cpu.cores(started, ended),
    )


def _profile_top(path: Path, count: int = 15) -> list[str]:
    if not path.exists():
        return []
    stats = pstats.Stats(str(path))
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "poll" in function or "select" in function:
            continue  # waiting for the network, not working
        rows.append((own, calls, cumulative, f"{Path(filename).name}:{line}({function})"))
    total = sum(row[0] for row in rows) or 1.0
    rows.sort(reverse=True)
    return [
        f"{own:7.2f} s {own / total * 100:5.1f}%  {calls:>9} calls  cum {cumulative:7.2f} s  {name}"
        for own, calls, cumulative, name in rows[:count]
    ]


def summary(result: IngestBenchResult) -> dict[str, object]:
    """The numbers scripts read (``cityops bench ingest --json`` prints this as its last line)."""
    best = result.best(result.pipeline)
    baseline = result.best(result.baseline)
    lost = sum(step.lost for step in result.pipeline if best is None or step.rate <= best.rate)
    return {
        "bench": "ingest",
        "readings_per_s": best.rate if best else 0,
        "baseline_readings_per_s": baseline.rate if baseline else 0,
        "ratio_to_baseline": round(best.rate / baseline.rate, 3) if best and baseline else None,
        "lost": lost,
        # Not measured here: rows cannot repeat (the key is (device, metric, ts)), so counting them would prove
        # nothing. `cityops bench e2e` counts duplicates where they can occur, on the readings topic.
        "duplicated": None,
        "duplicated_counted_as": "not measured by this benchmark (duplicate rows are impossible by the table's key); "
        "see `cityops bench e2e`, which counts duplicates on the readings topic",
        "publish_to_row": {"p50_ms": best.p50_ms if best else None, "p99_ms": best.p99_ms if best else None},
        "devices": result.devices,
    }


def render(result: IngestBenchResult, command: str) -> str:
    from cityops.bench.report import plot, stamp, table

    numbers = summary(result)
    best = result.best(result.pipeline)
    p50 = f"{best.p50_ms} ms" if best else "-"
    p99 = f"{best.p99_ms} ms" if best else "-"
    processes = sorted({name for step in result.pipeline for name in step.cpu_cores})
    plot_path = plot(
        "ingest",
        {
            "baseline: broker + bare subscriber": (
                [s.rate for s in result.baseline],
                [s.delivered / result.step_s for s in result.baseline],
            ),
            "pipeline: MQTT -> ingest -> Kafka -> persist -> PostgreSQL": (
                [s.rate for s in result.pipeline],
                [s.delivered / result.step_s for s in result.pipeline],
            ),
        },
        xlabel="offered readings/s",
        ylabel="delivered readings/s",
        title="cityops bench ingest",
    )

    def verdict(step: StepOutcome) -> str:
        return "sustained" if step.sustained(result.max_drain_s) else "not sustained"

    body = [
        "## Ingest: MQTT to database rows",
        "",
        stamp(command),
        f"{result.devices} devices, each its own MQTT connection and credentials, publish QoS 1 readings at stepped "
        f"offered rates for {result.step_s:.0f} s each. A step is sustained when every acknowledged reading is "
        f"stored and the last is stored within {result.max_drain_s:.0f} s of the step's end. Latency is "
        "`stored_at - ts` per row (ts = publish time).",
        "",
        table(
            ["", "readings/s sustained", "lost", "publish→row p50", "publish→row p99"],
            [
                ["pipeline", numbers["readings_per_s"], numbers["lost"], p50, p99],
                ["baseline (broker + bare subscriber)", numbers["baseline_readings_per_s"], "", "", ""],
                ["ratio pipeline / baseline", numbers["ratio_to_baseline"], "", "", ""],
            ],
        ),
        "",
        f"![ingest ramp](bench/{plot_path.name})",
        "",
        "### Ramp",
        "",
        table(
            [
                "offered/s",
                "baseline delivered",
                "baseline drain s",
                "pipeline delivered",
                "lost",
                "drain s",
                "p50 ms",
                "p99 ms",
                "pipeline",
            ],
            [
                [
                    f"{p.rate:.0f}",
                    b.delivered,
                    b.drain_s,
                    p.delivered,
                    p.lost,
                    p.drain_s,
                    p.p50_ms,
                    p.p99_ms,
                    verdict(p),
                ]
                for b, p in zip(result.baseline, result.pipeline, strict=False)
            ],
        ),
        "",
        "### CPU per process (cores, averaged over each pipeline step)",
        "",
        table(
            ["offered/s", *processes],
            [[f"{s.rate:.0f}", *(s.cpu_cores.get(p, "") for p in processes)] for s in result.pipeline],
        ),
        "",
        f"### Where the bridge's time goes (cProfile of `cityops ingest` at {result.profile_rate:.0f} readings/s; "
        "own time, % of its working time)",
        "",
        "```",
        *result.profile_top,
        "```",
    ]
    return "\n".join(body)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def run(env: BenchEnvironment, *, quick: bool, command: str) -> BenchOutcome:
    rates = [2000.0, 6000.0] if quick else [2000.0, 4000.0, 6000.0, 8000.0, 10000.0, 12000.0]
    result = run_ingest_bench(env, rates=rates, step_s=6.0 if quick else 15.0, devices=500 if quick else 2000)
    numbers = summary(result)
    headline = (
        f"ingest: {numbers['readings_per_s']} readings/s sustained, baseline {numbers['baseline_readings_per_s']}"
    )
    return BenchOutcome(render(result, command), numbers, headline)
