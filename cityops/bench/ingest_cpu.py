"""What one MQTT message costs the ingest bridge: CPU seconds and instructions per message, on a fixed load.

A measuring script, not a test and not a `cityops bench` section (those are written by the lead on a quiet
machine). It drives the real path: Mosquitto, Kafka and PostgreSQL of an instance of its own, devices provisioned
with their own credentials, one real `cityops ingest` process, and a lean publisher (this process, with the
simulators' asyncio MQTT client) sending N pre-encoded QoS 1 PUBLISHes. For each payload shape (k samples per
message) it reports the bridge process's CPU time per message and per reading between the first publish and the
moment the bridge has acknowledged all N to the broker (read from its own metrics), and checks that every reading
was accepted and none rejected.

Wall-clock and CPU figures on a shared machine are noisy. ``--callgrind`` runs the bridge under valgrind's
callgrind with instrumentation switched on only for each measured phase, so the instruction count per message is
repeatable for the same code and inputs (the bridge runs ~50x slower there, so use a few thousand messages).

    python -m cityops.bench.ingest_cpu --slot 6 --messages 20000 --samples 1,5,12
    python -m cityops.bench.ingest_cpu --slot 6 --messages 3000 --samples 1 --callgrind
    python -m cityops.bench.ingest_cpu --slot 6 --messages 20000 --rate 2000      # offered rate instead of flat out
    python -m cityops.bench.ingest_cpu --slot 6 --profile /tmp/ingest.prof        # cProfile of the bridge

``--slot N`` uses the ports of test slot N (21000 + 1000 N) and the state folder ``.state/ingest-cpu-N``, so do
not run it while that slot's test session runs. ``--bridge-pythonpath DIR`` runs the bridge from another copy of
the code (a snapshot of ``ingest/``, ``domain/``, ``cityops/``), to measure before and after with one harness.
``--keep-services`` leaves the services running for the next run (which then starts in seconds);
``--stop-services`` stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cityops.bench.ingest import _profile_top
from cityops.children import cpu_seconds
from cityops.paths import DEFAULT_STATE_DIR, MIGRATIONS_DIR, REPO_ROOT
from cityops.provision import credentials_dir, provision_devices, read_credentials
from cityops.services.supervisor import Supervisor
from cityops.settings import Settings, isolated_settings, settings_environment
from domain.catalogue import load_catalogue
from domain.devices import Device
from domain.geo import Position
from simulators.mqtt_device import DeviceConnection, DeviceFleet
from store.migrations import migrate

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PREFIX = "cpu-"
WINDOW = 40  # QoS 1 publishes in flight per device connection (the broker's receive maximum is far above)


@dataclass(frozen=True, slots=True)
class CpuTimes:
    user: float
    system: float


@dataclass(frozen=True, slots=True)
class Phase:
    samples_per_message: int
    messages: int
    readings: int
    wall_s: float
    cpu_s: float
    system_s: float  # the part of cpu_s spent in the kernel (system calls, wake-ups)
    instructions: int | None
    ack_latency_ms: float  # mean, MQTT receive to MQTT acknowledgement (the bridge's own histogram)
    services_s: dict[str, float]  # CPU seconds of Kafka and Mosquitto in the phase: what the bridge makes them do

    @property
    def us_per_message(self) -> float:
        return self.cpu_s / self.messages * 1e6

    @property
    def us_per_reading(self) -> float:
        return self.cpu_s / self.readings * 1e6

    def row(self) -> dict[str, object]:
        row: dict[str, object] = asdict(self)
        row["us_per_message"] = round(self.us_per_message, 1)
        row["system_us_per_message"] = round(self.system_s / self.messages * 1e6, 1)
        for name, seconds in self.services_s.items():
            row[f"{name}_us_per_message"] = round(seconds / self.messages * 1e6, 1)
        row["us_per_reading"] = round(self.us_per_reading, 1)
        row["messages_per_s_wall"] = round(self.messages / self.wall_s)
        row["messages_per_core_s"] = round(self.messages / self.cpu_s) if self.cpu_s else None
        if self.instructions is not None:
            row["instructions_per_message"] = round(self.instructions / self.messages)
            row["instructions_per_reading"] = round(self.instructions / self.readings)
        return row


# -- the instance ------------------------------------------------------------------------------------------------
def _instance(slot: int) -> tuple[Settings, Path]:
    state_dir = DEFAULT_STATE_DIR / f"ingest-cpu-{slot}"
    env_file = state_dir / "harness.env"
    if env_file.exists():
        settings = Settings(_env_file=env_file)
        if all(status.health.ok for status in Supervisor(settings).status()):
            return settings, env_file
        Supervisor(settings).down()
    if state_dir.exists():
        shutil.rmtree(state_dir)
    settings = isolated_settings(state_dir, 21000 + 1000 * slot)
    return settings, env_file


def _start_services(settings: Settings, env_file: Path, devices: int) -> None:
    supervisor = Supervisor(settings)
    started = supervisor.up(report=lambda line: print(f"  {line}", file=sys.stderr))  # noqa: T201 - progress
    if started:
        migrate(settings.db.conninfo(), MIGRATIONS_DIR)
        catalogue = load_catalogue()
        water_level = catalogue.device_types["water_level"]
        provision_devices(
            settings,
            catalogue,
            [
                Device(
                    id=f"{PREFIX}{n:04d}",
                    type_code="water_level",
                    category_code=water_level.category_code,
                    department_code=catalogue.department_for(water_level.category_code),
                    position=Position(24.90 + (n % 100) * 0.001, 60.15 + (n // 100) * 0.001),
                )
                for n in range(devices)
            ],
        )
        lines = [f"{key}={value}" for key, value in settings_environment(settings, {}).items()]
        env_file.write_text("\n".join(lines) + "\n")
        env_file.chmod(0o600)


# -- the bridge --------------------------------------------------------------------------------------------------
@dataclass
class Bridge:
    process: subprocess.Popen[bytes]
    metrics_url: str
    callgrind_out: Path | None

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:  # noqa: S310 - our own http:// URL
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def callgrind(self, *commands: str) -> None:
        for command in commands:
            subprocess.run(
                ["callgrind_control", command, str(self.process.pid)], check=True, capture_output=True, timeout=120
            )

    def last_dump_instructions(self, dumps_before: int) -> int:
        """Ir of the newest dump (callgrind writes ``<out>.<n>`` per dump, totals on a ``totals:`` line)."""
        assert self.callgrind_out is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            dumps = sorted(self.callgrind_out.parent.glob(self.callgrind_out.name + ".*"), key=_dump_number)
            if len(dumps) > dumps_before:
                match = re.search(r"^totals:\s+(\d+)", dumps[-1].read_text(errors="replace"), re.MULTILINE)
                if match:
                    return int(match.group(1))
            time.sleep(0.5)
        raise RuntimeError("callgrind wrote no dump")

    def dumps(self) -> int:
        assert self.callgrind_out is not None
        return len(list(self.callgrind_out.parent.glob(self.callgrind_out.name + ".*")))

    def cpu_times(self) -> CpuTimes:
        """User and system CPU seconds of the bridge process, all its threads (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return CpuTimes(int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(300)


def _dump_number(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _start_bridge(
    settings: Settings, log_dir: Path, *, callgrind: bool, profile: Path | None, pythonpath: Path | None
) -> Bridge:
    log_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"PYTHONHASHSEED": "0"}  # same dict layouts every run, for repeatable instruction counts
    if profile is not None:
        overrides["CITYOPS_PROFILE_PATH"] = str(profile)
    if pythonpath is not None:
        overrides["PYTHONPATH"] = str(pythonpath)
    env = settings_environment(settings, dict(os.environ), **overrides)
    command = [sys.executable, str(REPO_ROOT / ".venv" / "bin" / "cityops"), "ingest"]
    callgrind_out = None
    if callgrind:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise SystemExit("--callgrind needs valgrind and callgrind_control: apt-get install -y valgrind")
        callgrind_out = log_dir / "callgrind.out"
        for old in log_dir.glob("callgrind.out*"):
            old.unlink()
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={callgrind_out}"]
        command += [sys.executable, str(REPO_ROOT / ".venv" / "bin" / "cityops"), "ingest"]
    with (log_dir / "ingest.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    bridge = Bridge(process, f"http://127.0.0.1:{settings.ingest.metrics_port}/metrics", callgrind_out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the bridge exited with {process.returncode}; see {log_dir / 'ingest.log'}")
        try:
            if bridge.metrics().get("cityops_ingest_broker_connected") == 1.0:
                return bridge
        except OSError:
            pass
        time.sleep(0.5)
    bridge.stop()
    raise SystemExit("the bridge did not connect within 300 s")


# -- the load ----------------------------------------------------------------------------------------------------
def encode_payloads(messages: int, samples: int, first_sample: int, ts0_ms: int) -> list[bytes]:
    """``messages`` payloads of ``samples`` samples each; sample n has seq n and ts ts0 + n ms (all distinct)."""
    payloads = []
    for m in range(messages):
        parts = []
        for j in range(samples):
            n = first_sample + m * samples + j
            parts.append(b'{"ts":%d,"seq":%d,"metrics":{"water_level_cm":%d}}' % (ts0_ms + n, n, n % 300))
        payloads.append(parts[0] if samples == 1 else b"[" + b",".join(parts) + b"]")
    return payloads


async def publish(connections: Sequence[DeviceConnection], payloads: Sequence[bytes], rate: float) -> None:
    """Message i goes to device i mod D: flat out within a per-connection window, or at ``rate`` per second."""
    started = time.monotonic()
    for index, payload in enumerate(payloads):
        connection = connections[index % len(connections)]
        # A schedule and PUBACK counters, not events: polling them is the simple way to pace.
        if rate > 0:
            while index > (time.monotonic() - started) * rate:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        while connection.in_flight >= WINDOW:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        connection.publish_telemetry(payload)
        if index % 200 == 199:
            await asyncio.sleep(0)  # let PUBACKs in


async def _wait_until(bridge: Bridge, name: str, target: float, timeout_s: float) -> dict[str, float]:
    # Each scrape of the metrics costs the bridge some work too: seldom, and far less often under valgrind.
    interval = 5.0 if bridge.callgrind_out is not None else 1.0
    deadline = time.monotonic() + timeout_s
    while True:
        values = await asyncio.to_thread(bridge.metrics)
        if values.get(name, 0.0) >= target:
            return values
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {name} = {values.get(name)} (waiting for {target})")
        await asyncio.sleep(interval)


def _service_cpu(settings: Settings) -> dict[str, float]:
    """CPU seconds so far of the broker and Kafka (PostgreSQL is not on the bridge's path)."""
    services = Supervisor(settings, names=("mosquitto", "kafka")).services
    pids = {service.name: service.recorded_pid() for service in services}
    return {name: cpu_seconds(pid) for name, pid in pids.items() if pid is not None}


def _rejections(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("cityops_ingest_rejections_total"))


async def measure(
    settings: Settings, bridge: Bridge, *, messages: int, samples: Sequence[int], rate: float, warmup: int
) -> list[Phase]:
    logins = read_credentials(credentials_dir(settings) / "devices.csv")
    logins = {device: password for device, password in logins.items() if device.startswith(PREFIX)}
    fleet = DeviceFleet(settings.mqtt.host, settings.mqtt.port, last_will=False)
    await fleet.connect_all(logins)
    connections = [fleet.connections[d] for d in sorted(logins)]
    total = warmup + messages * sum(samples)
    ts0 = int(time.time() * 1000) - total - 60_000  # in the past, 1 ms apart, within the accepted age
    acked_name, accepted_name = "cityops_ingest_messages_acked_total", "cityops_ingest_readings_accepted_total"
    timeout = 3600.0 if bridge.callgrind_out is not None else 600.0
    phases = []
    try:
        start = await asyncio.to_thread(bridge.metrics)
        await publish(connections, encode_payloads(warmup, 1, 0, ts0), 0)
        before = await _wait_until(bridge, acked_name, start.get(acked_name, 0) + warmup, timeout)
        first_sample = warmup
        for k in samples:
            payloads = encode_payloads(messages, k, first_sample, ts0)
            first_sample += messages * k
            dumps = 0
            if bridge.callgrind_out is not None:
                dumps = bridge.dumps()
                bridge.callgrind("--zero", "--instr=on")
            services_before = _service_cpu(settings)
            cpu_before, wall_before = bridge.cpu_times(), time.monotonic()
            await publish(connections, payloads, rate)
            after = await _wait_until(bridge, acked_name, before[acked_name] + messages, timeout)
            cpu_after, wall_after = bridge.cpu_times(), time.monotonic()
            services_after = _service_cpu(settings)
            instructions = None
            if bridge.callgrind_out is not None:
                bridge.callgrind("--instr=off", "--dump")
                instructions = bridge.last_dump_instructions(dumps)
            accepted = after[accepted_name] - before[accepted_name]
            rejected = _rejections(after) - _rejections(before)
            if accepted != messages * k or rejected:
                raise SystemExit(f"k={k}: {accepted:.0f} readings accepted, {rejected:.0f} rejected; expected "
                                 f"{messages * k} and none: the measurement is not of the happy path")  # fmt: skip
            latency = "cityops_ingest_receive_to_ack_seconds"
            phase = Phase(
                k,
                messages,
                messages * k,
                wall_after - wall_before,
                cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system,
                cpu_after.system - cpu_before.system,
                instructions,
                round(
                    (after[latency + "_sum"] - before[latency + "_sum"])
                    / max(1.0, after[latency + "_count"] - before[latency + "_count"])
                    * 1000,
                    2,
                ),
                {name: services_after[name] - services_before[name] for name in services_after},
            )
            print(json.dumps(phase.row()), file=sys.stderr)  # noqa: T201 - progress, one line per phase
            phases.append(phase)
            before = after
    finally:
        fleet.close()
    return phases


def render(phases: Sequence[Phase], *, rate: float, callgrind: bool) -> str:
    header = (
        "| samples/message | messages | CPU µs/message (of it system) | CPU µs/reading | messages per core-second "
        "| wall msg/s | receive→ack ms | Kafka µs/message | Mosquitto µs/message |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|"
    if callgrind:
        header += " instructions/message | instructions/reading |"
        rule += "---|---|"
    lines = [f"offered: {'flat out' if rate <= 0 else f'{rate:.0f} messages/s'}", "", header, rule]
    for phase in phases:
        row = phase.row()
        line = (
            f"| {phase.samples_per_message} | {phase.messages} | {row['us_per_message']} "
            f"({row['system_us_per_message']}) | {row['us_per_reading']} | "
            f"{row['messages_per_core_s']} | {row['messages_per_s_wall']} | {phase.ack_latency_ms} | "
            f"{row.get('kafka_us_per_message', '')} | {row.get('mosquitto_us_per_message', '')} |"
        )
        if callgrind:
            line += f" {row['instructions_per_message']:,} | {row['instructions_per_reading']:,} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slot", type=int, required=True, help="test slot whose ports to use (0..20)")
    parser.add_argument("--messages", type=int, default=20000, help="messages per measured phase")
    parser.add_argument("--samples", default="1", help="samples per message, one phase each: e.g. 1,5,12")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s offered; 0 = flat out (default)")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2000, help="messages before the first measured phase")
    parser.add_argument("--callgrind", action="store_true", help="count instructions with valgrind's callgrind")
    parser.add_argument("--profile", type=Path, help="cProfile the bridge into this file; print the top")
    parser.add_argument("--bridge-pythonpath", type=Path, help="run the bridge from this copy of the code")
    parser.add_argument("--keep-services", action="store_true", help="leave the services running afterwards")
    parser.add_argument("--stop-services", action="store_true", help="only stop services a kept run left running")
    parser.add_argument("--json", action="store_true", help="print the phases as JSON on the last line")
    args = parser.parse_args(argv)
    if not 0 <= args.slot <= 20:
        parser.error("--slot must be 0..20")
    samples = [int(k) for k in args.samples.split(",")]

    settings, env_file = _instance(args.slot)
    if args.stop_services:
        Supervisor(settings).down()
        env_file.unlink(missing_ok=True)
        return
    _start_services(settings, env_file, args.devices)
    log_dir = settings.state_dir / "logs" / "harness"
    bridge = _start_bridge(
        settings, log_dir, callgrind=args.callgrind, profile=args.profile, pythonpath=args.bridge_pythonpath
    )
    try:
        phases = asyncio.run(
            measure(settings, bridge, messages=args.messages, samples=samples, rate=args.rate, warmup=args.warmup)
        )
    finally:
        code = bridge.stop()
        if not args.keep_services:
            Supervisor(settings).down()
            env_file.unlink(missing_ok=True)
    if code != 0:
        raise SystemExit(f"the bridge stopped with {code}; see {log_dir / 'ingest.log'}")
    print(render(phases, rate=args.rate, callgrind=args.callgrind))  # noqa: T201 - the tool's output
    if args.profile is not None:
        print("\n".join(["", "cProfile of the bridge (own time):", *_profile_top(args.profile, 25)]))  # noqa: T201
    if args.json:
        print(json.dumps([phase.row() for phase in phases]))  # noqa: T201


if __name__ == "__main__":
    main()
