"""Constant-rate load for benchmarks: a fleet of real device connections publishing readings on a schedule.

Run as a process of its own so it does not share a CPU core's time slices with what it measures:

    python -m simulators.load --credentials FILE --prefix bn- --schedule 2000:15,4000:15 --host H --port P

Each reading carries ``ts`` = the publish time (epoch ms), so the platform's stored rows give publish-to-row
latency. One JSON line per step goes to stdout: offered rate, wall-clock window, messages published and
acknowledged, and the publisher's own CPU time.

Options for drills and the end-to-end benchmark (without them the load is what it always was):

* ``--samples K``: each message is a JSON array of K samples (a data logger), 1 ms apart and ending at the publish
  time; ``--schedule`` rates stay readings (samples) per second.
* ``--pattern city``: instead of ``seq % 300``, a quiet street (1-4 cm) where a share of the devices
  (``--trippers``) floods to 40 cm (``--trip-level``) for 30 % of every ``--trip-period`` seconds (each at its
  own phase), so incidents, clearings and work orders keep coming at a known pace.
* ``--keys FILE``: every sample sent, as ``device_id,ts_ms,acknowledged`` (1 when the broker acknowledged its
  message with success by the end of the step's drain), appended after each step: what the platform promised.
* ``--reconnect``: a connection the broker drops (a broker restart) is made again in the background, and the
  schedule goes on with the devices that are connected; a sample that could not be sent is not written to
  ``--keys`` (nothing was promised for it).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simulators.mqtt_device import DeviceConnection, DeviceCounters, DeviceFleet, encode_connect

PUBACK = 4  # MQTT packet type (upper nibble of the fixed header)
TRIP_LEVEL_CM = 40.0  # above the waterlogging rule's 15 cm (and its 30 cm "high")


@dataclass(frozen=True, slots=True)
class Step:
    rate: float  # readings per second offered
    seconds: float


@dataclass(frozen=True, slots=True)
class StepResult:
    rate: float
    started_ms: int
    ended_ms: int
    published: int  # messages
    acknowledged: int  # messages
    refused: int
    publisher_cpu_s: float
    samples: int = 1  # per message
    not_sent: int = 0  # samples due while their device was not connected (--reconnect)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    samples: int = 1
    pattern: str = "cycle"  # "cycle" (seq % 300) or "city" (quiet, with trippers)
    trippers: float = 0.1  # share of devices that trip, with pattern "city"
    trip_period_s: float = 120.0
    trip_level: float = TRIP_LEVEL_CM
    rotate_trippers: bool = False  # a new share of devices trips in each period (fresh incidents, not reopenings)
    keys: Path | None = None
    reconnect: bool = False


class _TrackedConnection(DeviceConnection):
    """A device connection that knows which samples each PUBACK acknowledges (by packet id)."""

    def __init__(self, device_id: str, counters: DeviceCounters, on_lost: Callable[[DeviceConnection], None]) -> None:
        super().__init__(device_id, counters, on_lost)
        self.pending: dict[int, tuple[int, ...]] = {}
        self.acknowledged_stamps: list[int] = []

    def publish_samples(self, payload: bytes, stamps: tuple[int, ...]) -> None:
        self.publish_telemetry(payload)
        self.pending[self._next_id] = stamps  # the packet id _publish just used

    def _handle(self, kind: int, body: bytes) -> None:
        if kind == PUBACK and len(body) >= 2:
            stamps = self.pending.pop(int.from_bytes(body[:2], "big"), ())
            if not (len(body) > 2 and body[2] >= 0x80):
                self.acknowledged_stamps.extend(stamps)
        super()._handle(kind, body)


@dataclass
class _TrackedFleet(DeviceFleet):
    """DeviceFleet with tracked connections, and everything sent remembered per device for ``--keys``."""

    sent: dict[str, list[int]] = field(default_factory=dict)
    acknowledged: dict[str, list[int]] = field(default_factory=dict)

    async def connect(self, device_id: str, password: str, *, birth: bool | None = None) -> DeviceConnection:
        loop = asyncio.get_running_loop()

        def forget(connection: DeviceConnection) -> None:
            self.lost += 1
            self._collect(connection)
            if self.connections.get(connection.device_id) is connection:
                del self.connections[connection.device_id]

        _, protocol = await loop.create_connection(
            lambda: _TrackedConnection(device_id, self.counters, forget), self.host, self.port
        )
        assert isinstance(protocol, _TrackedConnection)
        assert protocol.transport is not None
        protocol.transport.write(
            encode_connect(
                f"dev-{device_id}",
                device_id,
                password,
                keepalive_s=self.keepalive_s,
                clean_start=True,
                session_expiry_s=self.session_expiry_s,
                will=None,
            )
        )
        try:
            await asyncio.wait_for(protocol.connected, 15)
        except BaseException:
            protocol.drop()
            raise
        self.connections[device_id] = protocol
        return protocol

    def _collect(self, connection: DeviceConnection) -> None:
        if isinstance(connection, _TrackedConnection):
            self.acknowledged.setdefault(connection.device_id, []).extend(connection.acknowledged_stamps)
            connection.acknowledged_stamps = []

    def write_keys(self, path: Path) -> None:
        """Append every sample sent since the last call, with whether it was acknowledged, and forget them."""
        for connection in self.connections.values():
            self._collect(connection)
        with path.open("a") as handle:
            for device_id, stamps in self.sent.items():
                acknowledged = set(self.acknowledged.get(device_id, ()))
                handle.writelines(f"{device_id},{ts},{1 if ts in acknowledged else 0}\n" for ts in stamps)
        self.sent = {}
        self.acknowledged = {}

    async def reconnect(self, logins: dict[str, str]) -> None:
        """Connect again, in the background, every device whose connection the broker dropped."""
        while True:
            await asyncio.sleep(0.5)
            missing = [d for d in logins if d not in self.connections]
            for device_id in missing:
                try:
                    await self.connect(device_id, logins[device_id])
                except (OSError, ConnectionError, TimeoutError):
                    break  # the broker is not back yet; try again in a moment


def parse_schedule(text: str) -> list[Step]:
    steps = []
    for part in text.split(","):
        rate, _, seconds = part.partition(":")
        steps.append(Step(float(rate), float(seconds)))
    return steps


def city_level(device_index: int, devices: int, now_s: float, options: LoadOptions) -> float:
    """Pattern ``city``: the first ``trippers`` share of devices flood for 30 % of each period, at phases spread
    over the period; the others (and trippers between floods) stay at 1-4 cm. With ``rotate_trippers`` the share
    that floods moves on by its own size every period, so each period's floods are new incidents on other devices
    (a device's incident reopened within the rules' ``close_after_s`` keeps its work order)."""
    quiet = 1.0 + device_index % 4
    tripping = max(1, round(devices * options.trippers)) if options.trippers > 0 else 0
    if not tripping:
        return quiet
    period = int(now_s // options.trip_period_s) if options.rotate_trippers else 0
    index = (device_index - period * tripping) % devices
    if index >= tripping:
        return quiet
    phase = (now_s / options.trip_period_s + index / tripping) % 1.0
    return options.trip_level if 0.4 <= phase < 0.7 else quiet


async def run(
    host: str,
    port: int,
    logins: dict[str, str],
    schedule: Sequence[Step],
    *,
    metric: str = "water_level_cm",
    options: LoadOptions | None = None,
) -> list[StepResult]:
    if options is not None:
        return await _run_tracked(host, port, logins, schedule, metric=metric, options=options)
    fleet = DeviceFleet(host, port, last_will=False)
    await fleet.connect_all(logins)
    connections = [fleet.connections[d] for d in sorted(logins)]
    keepalive = asyncio.create_task(fleet.keepalive())
    results: list[StepResult] = []
    seq = 0
    try:
        for step in schedule:
            acked_before, refused_before = fleet.counters.acknowledged, fleet.counters.refused
            cpu_before = time.process_time()
            started = time.monotonic()
            started_ms = int(time.time() * 1000)
            sent = 0
            while (elapsed := time.monotonic() - started) < step.seconds:
                due = int(elapsed * step.rate) - sent
                for _ in range(due):
                    now_ms = int(time.time() * 1000)
                    payload = b'{"ts":%d,"seq":%d,"metrics":{"%s":%d}}' % (now_ms, seq, metric.encode(), seq % 300)
                    connections[seq % len(connections)].publish_telemetry(payload)
                    seq += 1
                    sent += 1
                await asyncio.sleep(0.002)
            ended_ms = int(time.time() * 1000)
            await fleet.drain(30)
            results.append(
                StepResult(
                    rate=step.rate,
                    started_ms=started_ms,
                    ended_ms=ended_ms,
                    published=sent,
                    acknowledged=fleet.counters.acknowledged - acked_before,
                    refused=fleet.counters.refused - refused_before,
                    publisher_cpu_s=time.process_time() - cpu_before,
                )
            )
            print(json.dumps(asdict(results[-1])), flush=True)  # noqa: T201 - the tool's output
    finally:
        keepalive.cancel()
        fleet.close()
        await asyncio.sleep(0.1)
    return results


async def _run_tracked(
    host: str, port: int, logins: dict[str, str], schedule: Sequence[Step], *, metric: str, options: LoadOptions
) -> list[StepResult]:
    """The load with the options: arrays of samples, the city pattern, acknowledged keys, reconnection."""
    fleet = _TrackedFleet(host, port, last_will=False)
    await fleet.connect_all(logins)
    devices = sorted(logins)
    background = [asyncio.create_task(fleet.keepalive())]
    if options.reconnect:
        background.append(asyncio.create_task(fleet.reconnect(logins)))
    k = options.samples
    metric_bytes = metric.encode()
    last_ms: dict[str, int] = {}
    results: list[StepResult] = []
    seq = 0
    try:
        for step in schedule:
            acked_before, refused_before = fleet.counters.acknowledged, fleet.counters.refused
            published_before = fleet.counters.published
            cpu_before = time.process_time()
            started = time.monotonic()
            started_ms = int(time.time() * 1000)
            sent = not_sent = 0
            while (elapsed := time.monotonic() - started) < step.seconds:
                due = int(elapsed * step.rate / k) - sent - not_sent
                for _ in range(due):
                    device_index = seq % len(devices)
                    device_id = devices[device_index]
                    seq += 1
                    connection = fleet.connections.get(device_id)
                    if not isinstance(connection, _TrackedConnection) or connection.transport is None:
                        not_sent += 1
                        continue
                    # Samples 1 ms apart ending now, never repeating a device's earlier stamps (a duplicate).
                    end_ms = max(int(time.time() * 1000), last_ms.get(device_id, 0) + k)
                    last_ms[device_id] = end_ms
                    stamps = tuple(end_ms - (k - 1 - j) for j in range(k))
                    samples = []
                    for ts in stamps:
                        value = (
                            city_level(device_index, len(devices), ts / 1000, options)
                            if options.pattern == "city"
                            else float(seq % 300)
                        )
                        samples.append(b'{"ts":%d,"seq":%d,"metrics":{"%s":%g}}' % (ts, seq, metric_bytes, value))
                    payload = samples[0] if k == 1 else b"[" + b",".join(samples) + b"]"
                    connection.publish_samples(payload, stamps)
                    fleet.sent.setdefault(device_id, []).extend(stamps)
                    sent += 1
                await asyncio.sleep(0.002)
            ended_ms = int(time.time() * 1000)
            await fleet.drain(30)
            if options.keys is not None:
                fleet.write_keys(options.keys)
            results.append(
                StepResult(
                    rate=step.rate,
                    started_ms=started_ms,
                    ended_ms=ended_ms,
                    published=fleet.counters.published - published_before,
                    acknowledged=fleet.counters.acknowledged - acked_before,
                    refused=fleet.counters.refused - refused_before,
                    publisher_cpu_s=time.process_time() - cpu_before,
                    samples=k,
                    not_sent=not_sent * k,
                )
            )
            print(json.dumps(asdict(results[-1])), flush=True)  # noqa: T201 - the tool's output
    finally:
        for task in background:
            task.cancel()
        fleet.close()
        await asyncio.sleep(0.1)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials", type=Path, required=True, help="CSV username,password (from provisioning)")
    parser.add_argument("--prefix", required=True, help="use the devices whose id starts with this")
    parser.add_argument("--schedule", required=True, help="rate:seconds[,rate:seconds...]")
    parser.add_argument("--metric", default="water_level_cm", help="the metric every sample carries")
    parser.add_argument("--samples", type=int, default=1, help="samples per message (a JSON array when above 1)")
    parser.add_argument("--pattern", choices=("cycle", "city"), default="cycle", help="the values (see above)")
    parser.add_argument("--trippers", type=float, default=0.1, help="pattern city: share of devices that flood")
    parser.add_argument("--trip-period", type=float, default=120.0, help="pattern city: seconds per flood cycle")
    parser.add_argument("--trip-level", type=float, default=TRIP_LEVEL_CM, help="pattern city: the flood's level")
    parser.add_argument(
        "--rotate-trippers", action="store_true", help="pattern city: other devices flood in each period"
    )
    parser.add_argument("--keys", type=Path, help="append device_id,ts_ms,acknowledged for every sample sent")
    parser.add_argument("--reconnect", action="store_true", help="connect again when the broker drops a device")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    with args.credentials.open(newline="") as handle:
        logins = {
            row["username"]: row["password"]
            for row in csv.DictReader(handle)
            if row["username"].startswith(args.prefix)
        }
    if not logins:
        sys.exit(f"no credentials for devices starting with {args.prefix!r} in {args.credentials}")
    tracked = (
        args.samples != 1 or args.pattern != "cycle" or args.keys is not None or args.reconnect
    )  # without any option: exactly the load it always was
    options = (
        LoadOptions(
            samples=args.samples,
            pattern=args.pattern,
            trippers=args.trippers,
            trip_period_s=args.trip_period,
            trip_level=args.trip_level,
            rotate_trippers=args.rotate_trippers,
            keys=args.keys,
            reconnect=args.reconnect,
        )
        if tracked
        else None
    )
    asyncio.run(run(args.host, args.port, logins, parse_schedule(args.schedule), metric=args.metric, options=options))


if __name__ == "__main__":
    main()
