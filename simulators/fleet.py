"""The device fleet: thousands of simulated devices, each on its own MQTT connection with its own credentials.

``Fleet`` drives a placed fleet (``simulators.placement``) over the lean device client
(``simulators.mqtt_device``): every device connects with its Last Will (``city/status/{id}`` = ``offline``,
retained) and a retained birth ``online``, then publishes telemetry on ``city/telemetry/{id}`` in the platform's
contract (``{"ts", "seq", "metrics"}``). Values come from the signal model (``simulators.signals``) at simulated
instants from a :class:`~simulators.clock.Clock`; effects come from an :class:`EffectBoard` that scenarios fill and
crews repair.

Two publishing modes: each device every expected interval of its type (in simulated time: at ``speed`` 60 a
five-minute gauge reports every five seconds), on the same seeded phases as ``simulators.history``, so the values
equal a backfill's to the digit; or a global ``rate`` in readings per second, devices taking turns.

One event loop, no thread per device: every tick (20 ms) the due devices are found with one array comparison,
their values computed per device type in one vectorised call, and their packets written connection after
connection; acknowledgements are parsed in bulk by the protocol objects. Measured on the development machine:
see docs/SIMULATORS.md.

Faults real devices have, each seeded and configurable (:class:`FaultConfig`): going offline (the connection is
dropped, so the broker publishes the Will; readings are buffered and flushed as JSON arrays on return, after a new
birth message), stuck values, spikes, clock skew, duplicate sends, and malformed payloads, which carry the marker
``sim_fault`` so they can be recognised in the platform's dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from simulators.clock import Clock, ClockKind
from simulators.effects import Effect, Repair, RepairRequest, covers
from simulators.history import phase_s
from simulators.mqtt_device import ConnectRefused, DeviceConnection, DeviceFleet
from simulators.signals import DECIMALS, FloatArray, IntArray, SignalModel, device_key, uniform

log = logging.getLogger(__name__)

MALFORMED_MARKER = b"sim_fault"  # in every malformed payload, to find them in readings.dlq
MAX_FLUSH_SAMPLES = 200  # per flushed array: well under ingest's 500 samples and 32 KiB
FD_HEADROOM = 64  # descriptors the process needs beside one socket per device


class FleetError(RuntimeError):
    """The fleet cannot run as asked (missing credentials, too few file descriptors, too high a rate)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """How often each fault happens; all zero by default (a perfect fleet).

    Per-reading probabilities: ``spike``, ``duplicate``, ``malformed``. Per device-hour of simulated time:
    ``offline`` (drop off the network for ``offline_s``), ``stuck`` (freeze for ``stuck_s``). ``skew``: the share
    of devices whose clock is off by up to ``skew_s`` seconds either way (beyond 300 s ahead the platform refuses
    their readings as ``ts_in_future``).
    """

    offline: float = 0.0
    offline_s: tuple[float, float] = (60.0, 900.0)
    stuck: float = 0.0
    stuck_s: tuple[float, float] = (1800.0, 7200.0)
    spike: float = 0.0
    skew: float = 0.0
    skew_s: float = 900.0
    duplicate: float = 0.0
    malformed: float = 0.0

    def __post_init__(self) -> None:
        for name in ("spike", "skew", "duplicate", "malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} is a probability in [0, 1], got {value}")
        for name in ("offline", "stuck"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault {name} is a rate per device-hour, at least 0")
        for name in ("offline_s", "stuck_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"fault {name} must be a range of seconds, low <= high")


FAULT_NAMES = tuple(f.name for f in fields(FaultConfig))


def parse_faults(items: Iterable[str]) -> FaultConfig:
    """``["offline=0.5", "malformed=0.001", "offline_s=30:300"]`` -> FaultConfig, with precise errors."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in FAULT_NAMES:
            raise ValueError(f"fault {item!r}: write NAME=VALUE with NAME one of {', '.join(FAULT_NAMES)}")
        try:
            if name in ("offline_s", "stuck_s"):
                low, _, high = text.partition(":")
                values[name] = (float(low), float(high or low))
            else:
                values[name] = float(text)
        except ValueError as error:
            raise ValueError(f"fault {item!r}: {text!r} is not a number") from error
    return FaultConfig(**values)


@dataclass(slots=True)
class FleetStats:
    readings: int = 0  # samples taken (published, buffered or lost to a dead device)
    published: int = 0  # telemetry messages written (a flushed array is one)
    buffered: int = 0  # samples held while offline
    flushed: int = 0  # buffered samples sent on return
    unsent: int = 0  # buffered samples of devices still offline when the fleet stopped
    dropped_offline: int = 0  # fault: connections dropped (the Will fires)
    failed_offline: int = 0  # scenario device failures that took a device off the network
    reconnects: int = 0
    connect_failures: int = 0
    stuck: int = 0
    spikes: int = 0
    duplicates: int = 0
    malformed: int = 0
    skewed_devices: int = 0


class EffectBoard:
    """The effects now acting on the city: scenarios add them, crews' repairs end them (in this process)."""

    def __init__(self, model: SignalModel) -> None:
        self.model = model
        self._effects: tuple[Effect, ...] = ()
        self.repairs: list[tuple[RepairRequest, tuple[str, ...]]] = []

    @property
    def effects(self) -> tuple[Effect, ...]:
        return self._effects

    def add(self, effects: Iterable[Effect]) -> None:
        self._effects = (*self._effects, *effects)

    def prune(self, before_s: float) -> None:
        """Forget effects that ended before ``before_s`` (their water has long drained)."""
        self._effects = tuple(e for e in self._effects if e.end_s >= before_s)

    def repair(self, request: RepairRequest) -> tuple[str, ...]:
        """End what a crew fixed: every effect of the request's family acting where the crew worked."""
        repaired = []
        updated = []
        for effect in self._effects:
            if covers(effect, self.model.cells_of(effect), request):
                effect = effect.with_repair(Repair(request.at, request.grid_cell, request.work_order_id))
                repaired.append(effect.id)
            updated.append(effect)
        self._effects = tuple(updated)
        self.repairs.append((request, tuple(repaired)))
        return tuple(repaired)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetOptions:
    host: str
    port: int
    rate: float | None = None  # readings/s for the whole fleet; None: every type's expected interval
    qos: int = 1
    keepalive_s: int = 60
    connect_concurrency: int = 200
    tick_s: float = 0.02
    seed: int = 0


@dataclass(slots=True)
class _Device:
    index: int
    id: str
    type_code: str
    row: int
    password: str
    connection: DeviceConnection | None = None
    reconnecting: bool = False
    offline_until_s: float = -math.inf  # fault: simulated time at which it comes back
    failed: bool = False  # a scenario failure holds it off the network
    stuck_from_s: float = math.nan
    stuck_until_s: float = -math.inf
    skew_ms: int = 0
    buffer: list[bytes] = field(default_factory=list)


class Fleet:
    """Devices of a signal model publishing over their own connections (see the module docstring)."""

    def __init__(
        self,
        model: SignalModel,
        logins: Mapping[str, str],
        options: FleetOptions,
        clock: Clock,
        board: EffectBoard,
        *,
        faults: FaultConfig | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self.options = options
        self.clock = clock
        self.board = board
        self.faults = faults or FaultConfig()
        self.now = now
        self.stats = FleetStats()
        self.client = DeviceFleet(options.host, options.port, keepalive_s=options.keepalive_s)
        missing: list[str] = []
        self.devices: list[_Device] = []
        for type_code, block in model.blocks.items():
            for row, device_id in enumerate(block.ids):
                password = logins.get(device_id)
                if password is None:
                    missing.append(device_id)
                    continue
                self.devices.append(_Device(len(self.devices), device_id, type_code, row, password))
        if missing:
            raise FleetError(
                f"{len(missing)} device(s) have no credentials, e.g. {', '.join(missing[:3])}; "
                "provision them first (cityops devices provision --pack ...)"
            )
        count = len(self.devices)
        self.type_codes = sorted(model.blocks)
        self._type_of = np.array([self.type_codes.index(d.type_code) for d in self.devices], dtype=np.int64)
        self._rows = np.array([d.row for d in self.devices], dtype=np.int64)
        self._interval = np.array([model.blocks[d.type_code].interval_s for d in self.devices], dtype=np.float64)
        self._keys = np.array([device_key(options.seed, d.id) for d in self.devices], dtype=np.uint64)
        phases = {code: phase_s(block) for code, block in model.blocks.items()}
        self._phase = np.array([phases[d.type_code][d.row] for d in self.devices], dtype=np.float64)
        self._seq = np.zeros(count, dtype=np.int64)
        self._next = np.full(count, math.inf)
        self._templates = {code: _template(code, model.metrics(code)) for code in self.type_codes}
        self._metric_order = {code: model.metrics(code) for code in self.type_codes}
        self._skew_devices()
        self._turn = 0
        self._sent_for_rate = 0
        self._rate_started_s = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        if options.rate is not None:
            if not options.rate > 0:
                raise FleetError(f"rate must be positive, got {options.rate}")
            if count and count / options.rate < 0.002:
                raise FleetError(
                    f"{count} devices at {options.rate:g} readings/s would send twice in a millisecond; "
                    "use more devices or a lower rate"
                )

    # -- connections -------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect every device (bounded concurrency), each with its Will and birth message."""
        ensure_descriptors(len(self.devices))
        gate = asyncio.Semaphore(self.options.connect_concurrency)
        refused: list[str] = []

        async def one(device: _Device) -> None:
            async with gate:
                try:
                    device.connection = await self.client.connect(device.id, device.password, birth=True)
                except ConnectRefused as error:
                    refused.append(str(error))
                except (OSError, TimeoutError) as error:
                    refused.append(f"{device.id}: {error}")

        await asyncio.gather(*(one(device) for device in self.devices))
        if refused:
            self.stats.connect_failures += len(refused)
            self.client.close()  # all or nothing: a fleet with missing devices would prove the wrong thing
            raise FleetError(f"{len(refused)} device(s) could not connect, e.g. {refused[0]}")
        self._start_schedule()

    def _start_schedule(self) -> None:
        wall = self.now()
        sim_now = self.clock.sim(wall)
        # The next report of every device on its own grid (the same grid simulators.history uses).
        self._next = self._phase + np.ceil((sim_now - self._phase) / self._interval) * self._interval
        self._rate_started_s = wall
        self._sent_for_rate = 0

    async def close(self) -> None:
        """Stop cleanly: wait for acknowledgements, say ``offline`` (retained), DISCONNECT (no Will)."""
        for task in list(self._tasks):
            task.cancel()
        self.stats.unsent = sum(len(device.buffer) for device in self.devices)
        await self.client.drain(5.0)
        for device in self.devices:
            connection = self.client.connections.get(device.id)
            if connection is not None and connection.transport is not None:
                connection.publish_status(b"offline")
        await self.client.drain(5.0)
        self.client.close()
        await asyncio.sleep(0.05)  # let the transports flush their DISCONNECTs

    # -- the loop ----------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, duration_s: float | None = None) -> FleetStats:
        keepalive = asyncio.create_task(self.client.keepalive())
        started = self.now()
        try:
            while not stop.is_set():
                wall = self.now()
                if duration_s is not None and wall - started >= duration_s:
                    break
                self.tick(wall)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.tick_s)
        finally:
            keepalive.cancel()
        return self.stats

    def tick(self, wall: float) -> int:
        """Publish what is due at wall time ``wall``; returns the number of samples taken."""
        sim_now = self.clock.sim(wall)
        if self.options.rate is None:
            due = np.flatnonzero(self._next <= sim_now)
            if not len(due):
                return 0
            instants = self._next[due].copy()
            advanced = self._next[due] + self._interval[due]
            # A loop that fell behind (a stalled machine) skips, rather than bursting a backlog at the broker.
            behind = advanced <= sim_now - self._interval[due]
            if behind.any():
                skip = np.ceil((sim_now - advanced[behind]) / self._interval[due][behind]) * self._interval[due][behind]
                advanced[behind] += skip
            self._next[due] = advanced
        else:
            wanted = int((wall - self._rate_started_s) * self.options.rate) - self._sent_for_rate
            if wanted <= 0:
                return 0
            wanted = min(wanted, len(self.devices))
            due = (self._turn + np.arange(wanted, dtype=np.int64)) % len(self.devices)
            self._turn = int((self._turn + wanted) % len(self.devices))
            self._sent_for_rate += wanted
            instants = np.full(wanted, sim_now)
        order = np.argsort(self._type_of[due], kind="stable")
        due, instants = due[order], instants[order]
        types = self._type_of[due]
        bounds = np.flatnonzero(np.diff(types)) + 1
        effects = self.board.effects
        for group, times in zip(np.split(due, bounds), np.split(instants, bounds), strict=True):
            self._publish_group(group, times, wall, effects)
        self.stats.readings += len(due)
        return len(due)

    def _publish_group(self, group: IntArray, instants: FloatArray, wall: float, effects: Sequence[Effect]) -> None:
        type_code = self.type_codes[int(self._type_of[group[0]])]
        rows = self._rows[group]
        down = self.model.offline(type_code, rows, instants, effects)
        held = self._fault_times(group, instants)
        values = self.model.values(type_code, rows, held, effects)
        metrics = self._metric_order[type_code]
        columns = [values[name].tolist() for name in metrics]
        spikes = self._spikes(group, type_code, columns)
        template = self._templates[type_code]
        seqs = self._seq[group]
        self._seq[group] += 1
        decide = self._decisions(group, seqs)
        stamp_wall = self.clock.stamp(wall)
        for position, index in enumerate(group.tolist()):
            device = self.devices[index]
            if down[position]:
                self._hold_failed(device)
                continue
            if device.failed:
                self._release_failed(device)
            instant = float(instants[position])
            stamp = stamp_wall if self.clock.kind is ClockKind.WALL else self.clock.stamp(wall, instant)
            ts_ms = int(stamp * 1000) + device.skew_ms
            sample = template % (ts_ms, int(seqs[position]), *(column[position] for column in columns))
            if spikes is not None and spikes[position]:
                self.stats.spikes += 1
            self._route(device, sample, instant, decide, position)

    def _route(self, device: _Device, sample: bytes, instant: float, decide: dict[str, Any], position: int) -> None:
        if instant < device.offline_until_s or device.failed:
            device.buffer.append(sample)
            self.stats.buffered += 1
            return
        if decide["offline"][position]:
            self._go_offline(device, instant, float(decide["offline_for"][position]))
            device.buffer.append(sample)
            self.stats.buffered += 1
            return
        connection = self.client.connections.get(device.id)
        if connection is None or connection.transport is None:
            device.buffer.append(sample)
            self.stats.buffered += 1
            self._reconnect_soon(device)
            return
        if device.buffer:
            self._flush(device, connection)
        if decide["malformed"][position]:
            connection.publish_telemetry(
                b'{"%s":"malformed","device":"%s","seq":%d,"metrics":{' % (MALFORMED_MARKER, device.id.encode(), 0),
                self.options.qos,
            )
            self.stats.malformed += 1
        connection.publish_telemetry(sample, self.options.qos)
        self.stats.published += 1
        if decide["duplicate"][position]:
            connection.publish_telemetry(sample, self.options.qos)
            self.stats.duplicates += 1

    # -- faults ------------------------------------------------------------------------------------------
    def _decisions(self, group: IntArray, seqs: IntArray) -> dict[str, Any]:
        keys = self._keys[group]
        faults = self.faults
        count = len(group)
        per_hour = self._interval[group] / 3600.0
        decide: dict[str, Any] = {}
        decide["offline"] = (
            uniform(keys, seqs, "fault:offline") < faults.offline * per_hour
            if faults.offline
            else np.zeros(count, bool)
        )
        low, high = faults.offline_s
        decide["offline_for"] = low + (high - low) * uniform(keys, seqs, "fault:offline-for")
        decide["duplicate"] = (
            uniform(keys, seqs, "fault:duplicate") < faults.duplicate if faults.duplicate else np.zeros(count, bool)
        )
        decide["malformed"] = (
            uniform(keys, seqs, "fault:malformed") < faults.malformed if faults.malformed else np.zeros(count, bool)
        )
        return decide

    def _fault_times(self, group: IntArray, instants: FloatArray) -> FloatArray:
        """Stuck devices: the instant their values are taken at is held where they got stuck."""
        if not self.faults.stuck:
            return instants
        held = instants.copy()
        keys = self._keys[group]
        seqs = self._seq[group]
        starts = uniform(keys, seqs, "fault:stuck") < self.faults.stuck * self._interval[group] / 3600.0
        low, high = self.faults.stuck_s
        lengths = low + (high - low) * uniform(keys, seqs, "fault:stuck-for")
        for position, index in enumerate(group.tolist()):
            device = self.devices[index]
            instant = float(instants[position])
            if instant >= device.stuck_until_s and starts[position]:
                device.stuck_from_s, device.stuck_until_s = instant, instant + float(lengths[position])
                self.stats.stuck += 1
            if instant < device.stuck_until_s:
                held[position] = device.stuck_from_s
        return held

    def _spikes(self, group: IntArray, type_code: str, columns: list[list[float]]) -> np.ndarray[Any, Any] | None:
        """A glitch: the type's first metric jumps most of the way to the top of its valid range for one reading."""
        if not self.faults.spike:
            return None
        keys = self._keys[group]
        seqs = self._seq[group]
        hit = uniform(keys, seqs, "fault:spike") < self.faults.spike
        if hit.any():
            spec = self.model.device_types[type_code].metrics[0]
            height = uniform(keys, seqs, "fault:spike-height")
            decimals = DECIMALS.get(spec.name, 2)
            for position in np.flatnonzero(hit).tolist():
                value = columns[0][position]
                columns[0][position] = round(value + (spec.maximum - value) * (0.5 + 0.4 * height[position]), decimals)
        return hit

    def _skew_devices(self) -> None:
        if not self.faults.skew:
            return
        zero = np.zeros(len(self.devices), dtype=np.int64)
        chosen = uniform(self._keys, zero, "fault:skew") < self.faults.skew
        offsets = (2.0 * uniform(self._keys, zero, "fault:skew-by") - 1.0) * self.faults.skew_s * 1000.0
        for index in np.flatnonzero(chosen).tolist():
            self.devices[index].skew_ms = int(offsets[index])
            self.stats.skewed_devices += 1

    def _go_offline(self, device: _Device, instant: float, seconds: float) -> None:
        device.offline_until_s = instant + seconds
        connection = self.client.connections.get(device.id)
        if connection is not None:
            connection.drop()  # no DISCONNECT: the broker publishes the Last Will
        self.stats.dropped_offline += 1
        self._come_back_at(device, self.clock.wall_at(device.offline_until_s))

    def _hold_failed(self, device: _Device) -> None:
        """A scenario's offline failure: off the network, sending nothing, until the failure ends."""
        if not device.failed:
            device.failed = True
            device.buffer.clear()
            connection = self.client.connections.get(device.id)
            if connection is not None:
                connection.drop()
            self.stats.failed_offline += 1

    def _release_failed(self, device: _Device) -> None:
        device.failed = False
        device.buffer.clear()  # a dead device recorded nothing
        self._reconnect_soon(device)

    def _come_back_at(self, device: _Device, wall_s: float) -> None:
        async def later() -> None:
            await asyncio.sleep(max(0.0, wall_s - self.now()))
            await self._reconnect(device)

        self._spawn(later())

    def _reconnect_soon(self, device: _Device) -> None:
        if not device.reconnecting:
            self._spawn(self._reconnect(device))

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnect(self, device: _Device) -> None:
        if device.reconnecting:
            return
        device.reconnecting = True
        delay = 0.5
        try:
            while True:
                try:
                    device.connection = await self.client.connect(device.id, device.password, birth=True)
                    self.stats.reconnects += 1
                    if device.buffer and not device.failed:
                        self._flush(device, device.connection)
                    return
                except (ConnectRefused, OSError, TimeoutError) as error:
                    self.stats.connect_failures += 1
                    log.warning("%s: reconnect failed (%s); retrying in %.1f s", device.id, error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            device.reconnecting = False

    def _flush(self, device: _Device, connection: DeviceConnection) -> None:
        """Send what was buffered while offline as JSON arrays (what a device does on return)."""
        samples, device.buffer = device.buffer, []
        for start in range(0, len(samples), MAX_FLUSH_SAMPLES):
            chunk = samples[start : start + MAX_FLUSH_SAMPLES]
            connection.publish_telemetry(b"[" + b",".join(chunk) + b"]", self.options.qos)
            self.stats.published += 1
            self.stats.flushed += len(chunk)


def _template(type_code: str, metrics: Sequence[str]) -> bytes:
    """The payload of one reading of a type, to fill with ``%`` (ts ms, seq, one value per metric)."""
    parts = []
    for name in metrics:
        decimals = DECIMALS.get(name, 2)
        parts.append(f'"{name}":%{"d" if decimals == 0 else f".{decimals}f"}')
    return ('{"ts":%d,"seq":%d,"metrics":{' + ",".join(parts) + "}}").encode()


def ensure_descriptors(connections: int) -> int:
    """Raise this process's open-file limit to fit ``connections`` sockets, or say exactly why it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + FD_HEADROOM
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FleetError(
            f"{connections} connections need {needed} file descriptors; this process may open at most {hard} "
            f"(hard limit). Raise it (e.g. `ulimit -Hn {needed}` as root, or LimitNOFILE= for a service)"
        )
    target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, 4096))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
