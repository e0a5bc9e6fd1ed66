"""The fleet's publishing logic without a broker: fake connections stand in for the sockets; the platform's real
telemetry decoder judges every payload. (The real broker: tests/integration/test_simulators.py.)"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from domain.catalogue import load_catalogue
from domain.devices import DeviceStatus
from domain.readings import Reading
from gis import load_pack
from ingest.decode import DeviceEntry, Reason, TelemetryDecoder
from simulators.clock import Clock
from simulators.fleet import (
    MALFORMED_MARKER,
    EffectBoard,
    FaultConfig,
    Fleet,
    FleetError,
    FleetOptions,
    ensure_descriptors,
    parse_faults,
)
from simulators.history import readings
from simulators.placement import place
from simulators.signals import SignalModel

PACK = load_pack("helsinki")
CATALOGUE = load_catalogue()
DEVICES = place(PACK, count=150, seed=8)
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC).timestamp()


class FakeConnection:
    def __init__(self) -> None:
        self.transport: object | None = object()
        self.sent: list[bytes] = []

    def publish_telemetry(self, payload: bytes, qos: int = 1) -> None:
        self.sent.append(payload)

    def drop(self) -> None:
        self.transport = None


def fleet(
    clock: Clock, *, faults: FaultConfig | None = None, rate: float | None = None
) -> tuple[Fleet, dict[str, FakeConnection]]:
    model = SignalModel(DEVICES, seed=4, timezone=PACK.timezone, device_types=CATALOGUE.device_types)
    subject = Fleet(
        model,
        {d.id: "pw" for d in DEVICES},
        FleetOptions(host="127.0.0.1", port=1, rate=rate, seed=4),
        clock,
        EffectBoard(model),
        faults=faults,
        now=lambda: NOW,
    )
    connections = {d.id: FakeConnection() for d in DEVICES}
    subject.client.connections.update(connections)  # type: ignore[arg-type]
    subject._start_schedule()
    return subject, connections


def decoder() -> TelemetryDecoder:
    return TelemetryDecoder(
        {
            d.id: DeviceEntry(d.id, CATALOGUE.device_types[d.type_code], DeviceStatus.ONLINE, d.grid_cell, d.district)
            for d in DEVICES
        }
    )


def ticks(subject: Fleet, seconds: float, every: float = 0.5) -> None:
    for n in range(1, int(seconds / every) + 1):
        subject.tick(NOW + n * every)


def test_a_backfill_publishes_exactly_what_the_history_says() -> None:
    clock = Clock.backfill(NOW, sim_start_s=NOW - 7200, speed=60.0)
    subject, connections = fleet(clock)
    ticks(subject, 60.0)  # one wall minute: one simulated hour
    received_at = datetime.fromtimestamp(NOW + 60, tz=UTC)
    published: set[tuple[str, datetime, tuple[tuple[str, float], ...]]] = set()
    judge = decoder()
    for device_id, connection in connections.items():
        for payload in connection.sent:
            decoded = judge.decode(f"city/telemetry/{device_id}", payload, received_at)
            assert decoded.rejections == ()
            (reading,) = decoded.readings
            published.add((device_id, reading.ts, tuple(sorted(reading.metrics.items()))))
    start = datetime.fromtimestamp(NOW - 7200, tz=UTC)
    history = {
        (r.device_id, r.ts, tuple(sorted(r.metrics.items())))
        for r in readings(subject.model, start, start + timedelta(hours=1))
        if isinstance(r, Reading)
    }
    assert published == history  # same instants, same values, to the digit
    assert subject.stats.published == len(history)


def test_a_wall_clock_stamps_now_and_a_rate_spreads_over_the_devices() -> None:
    subject, connections = fleet(Clock.wall(NOW, speed=60.0), rate=300.0)
    ticks(subject, 2.0, every=0.1)
    counts = Counter(len(c.sent) for c in connections.values())
    assert sum(n * k for n, k in counts.items()) == 600
    assert set(counts) == {4}  # 600 readings over 150 devices, in turns
    stamps = [json.loads(p)["ts"] for c in connections.values() for p in c.sent]
    assert min(stamps) >= NOW * 1000
    assert max(stamps) <= (NOW + 2) * 1000
    seqs = [[json.loads(p)["seq"] for p in c.sent] for c in connections.values()]
    assert all(s == [0, 1, 2, 3] for s in seqs)


def test_faults_give_what_the_platform_refuses_with_the_right_reasons() -> None:
    faults = FaultConfig(skew=0.3, skew_s=1800.0, duplicate=0.05, malformed=0.05, spike=0.05)
    subject, connections = fleet(Clock.wall(NOW, speed=60.0), faults=faults, rate=1500.0)
    ticks(subject, 4.0, every=0.1)
    judge = decoder()
    received_at = datetime.fromtimestamp(NOW + 4, tz=UTC)
    reasons: Counter[Reason] = Counter()
    for device_id, connection in connections.items():
        for payload in connection.sent:
            decoded = judge.decode(f"city/telemetry/{device_id}", payload, received_at)
            reasons.update(r.reason for r in decoded.rejections)
            if MALFORMED_MARKER in payload:
                assert decoded.rejections[0].reason is Reason.MALFORMED_JSON
    stats = subject.stats
    assert stats.malformed > 0
    assert reasons[Reason.MALFORMED_JSON] == stats.malformed
    assert stats.duplicates > 0
    assert 0.2 * 150 < stats.skewed_devices < 0.4 * 150
    assert reasons[Reason.TS_IN_FUTURE] > 0  # the clocks more than five minutes fast
    skewed_ahead = [d for d in subject.devices if d.skew_ms > 300_000]
    assert reasons[Reason.TS_IN_FUTURE] == sum(
        len([p for p in connections[d.id].sent if MALFORMED_MARKER not in p]) for d in skewed_ahead
    )
    assert set(reasons) <= {Reason.MALFORMED_JSON, Reason.TS_IN_FUTURE, Reason.DUPLICATE}
    assert stats.spikes > 0  # spikes stay inside the valid range: the platform must judge them, not drop them


def test_stuck_devices_repeat_their_values() -> None:
    subject, connections = fleet(Clock.wall(NOW, speed=60.0), faults=FaultConfig(stuck=1000.0), rate=300.0)
    ticks(subject, 3.0, every=0.1)
    assert subject.stats.stuck > 0
    repeated = 0
    for connection in connections.values():
        values = [json.dumps(json.loads(p)["metrics"], sort_keys=True) for p in connection.sent]
        repeated += len(values) - len(set(values))
    assert repeated > 100


def test_the_fleet_refuses_what_it_cannot_do() -> None:
    model = SignalModel(DEVICES, seed=4, timezone=PACK.timezone, device_types=CATALOGUE.device_types)
    with pytest.raises(FleetError, match="have no credentials"):
        Fleet(model, {}, FleetOptions(host="h", port=1), Clock.wall(NOW), EffectBoard(model))
    with pytest.raises(FleetError, match="twice in a millisecond"):
        Fleet(
            model,
            {d.id: "pw" for d in DEVICES},
            FleetOptions(host="h", port=1, rate=1e6),
            Clock.wall(NOW),
            EffectBoard(model),
        )
    with pytest.raises(FleetError, match="file descriptors"):
        ensure_descriptors(10**9)
    assert ensure_descriptors(100) >= 164


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["offline"], "write NAME=VALUE"),
        (["wobble=1"], "write NAME=VALUE"),
        (["spike=often"], "is not a number"),
        (["spike=2"], "probability"),
        (["offline_s=300:30"], "low <= high"),
    ],
)
def test_fault_options_are_checked(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_faults(items)


def test_fault_options_parse() -> None:
    assert parse_faults(["offline=0.5", "offline_s=30:300", "malformed=0.001"]) == FaultConfig(
        offline=0.5, offline_s=(30.0, 300.0), malformed=0.001
    )
