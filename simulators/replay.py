"""Replaying measured series through real device connections, at any speed.

A replay file is a CSV of measurements, one value per line: ``timestamp,device,metric,value`` (timestamp RFC 3339
with a zone, or epoch milliseconds; device a registered device id; metric one its type reports, in any unit
spelling the catalogue knows). Lines of one device at one timestamp become one sample. Every device publishes
its own samples over its own connection and credentials, in time order, ``speed`` times faster than they were
measured. With ``shift_to_now`` the timestamps move so that the last sample is stamped at the moment it is sent
(the series "ends now"); every sample is then in the past when it is sent, and inside the platform's skew window
if the series spans less than a week. Without it, the file's own timestamps are sent, which the platform accepts
only if they are at most 7 days old.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.time import from_epoch_ms
from simulators.clock import MAX_AGE_S
from simulators.mqtt_device import ConnectRefused, DeviceFleet
from simulators.signals import DECIMALS

COLUMNS = ("timestamp", "device", "metric", "value")


class ReplayError(ValueError):
    """A replay file or request that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class ReplaySample:
    ts: datetime
    device_id: str
    metrics: Mapping[str, float]
    line: int  # where it starts in the file


@dataclass(slots=True)
class ReplayReport:
    samples: int = 0
    published: int = 0
    devices: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    shifted_by: timedelta = field(default_factory=timedelta)


def read_replay_csv(path: Path) -> list[ReplaySample]:
    """The samples of a replay file, in time order (see the module docstring for the format)."""
    grouped: dict[tuple[str, datetime], tuple[int, dict[str, float]]] = {}
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise ReplayError(f"{path}: cannot read: {error}") from error
    with handle:
        reader = csv.DictReader(line for line in handle if not line.startswith("#"))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReplayError(f"{path}: missing column(s) {', '.join(missing)}; need {','.join(COLUMNS)}")
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            ts = _timestamp(row["timestamp"], where)
            device = (row["device"] or "").strip()
            metric = (row["metric"] or "").strip()
            if not device or not metric:
                raise ReplayError(f"{where}: device and metric must not be empty")
            try:
                value = float(row["value"])
            except (TypeError, ValueError) as error:
                raise ReplayError(f"{where}: value {row['value']!r} is not a number") from error
            if not math.isfinite(value):
                raise ReplayError(f"{where}: value {row['value']!r} is not finite")
            _, metrics = grouped.setdefault((device, ts), (number, {}))
            if metric in metrics:
                raise ReplayError(f"{where}: {device} has {metric} twice at {ts.isoformat()}")
            metrics[metric] = value
    samples = [ReplaySample(ts, device, metrics, line) for (device, ts), (line, metrics) in grouped.items()]
    if not samples:
        raise ReplayError(f"{path}: no measurements")
    samples.sort(key=lambda s: (s.ts, s.device_id))
    return samples


def _timestamp(text: str | None, where: str) -> datetime:
    raw = (text or "").strip()
    if raw.lstrip("-").isdigit():
        return from_epoch_ms(int(raw))
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as error:
        raise ReplayError(f"{where}: timestamp {raw!r} is neither RFC 3339 nor epoch milliseconds") from error
    if moment.tzinfo is None:
        raise ReplayError(f"{where}: timestamp {raw!r} has no zone (add Z or +hh:mm)")
    return moment.astimezone(UTC)


def payload(sample: ReplaySample, seq: int, ts: datetime) -> bytes:
    metrics = {name: round(value, DECIMALS.get(name, 3)) for name, value in sample.metrics.items()}
    return json.dumps(
        {"ts": int(ts.timestamp() * 1000), "seq": seq, "metrics": metrics}, separators=(",", ":")
    ).encode()


async def replay(
    samples: Sequence[ReplaySample],
    logins: Mapping[str, str],
    *,
    host: str,
    port: int,
    speed: float = 1.0,
    shift_to_now: bool = False,
    stop: asyncio.Event | None = None,
    now: Callable[[], float] = time.time,
    report: Callable[[str], None] = lambda _: None,
) -> ReplayReport:
    """Publish ``samples`` through their devices' own connections, ``speed`` times faster than measured."""
    if not speed > 0:
        raise ReplayError(f"speed must be positive, got {speed}")
    if not samples:
        raise ReplayError("nothing to replay")
    devices = sorted({s.device_id for s in samples})
    missing = [d for d in devices if d not in logins]
    if missing:
        raise ReplayError(f"no credentials for {len(missing)} device(s) of the file, e.g. {', '.join(missing[:3])}")
    first, last = samples[0].ts, samples[-1].ts
    started = now()
    span_wall = (last - first).total_seconds() / speed
    shift = timedelta(seconds=started + span_wall - last.timestamp()) if shift_to_now else timedelta()
    oldest = (first + shift).timestamp()
    if started - oldest > MAX_AGE_S:
        hint = "" if shift_to_now else "; use --shift-to-now to move them to end now"
        raise ReplayError(f"the first sample ({first.isoformat()}) would be older than 7 days when sent{hint}")
    if not shift_to_now and (last.timestamp() - (started + span_wall)) > 300:
        raise ReplayError("the file's timestamps lie in the future (more than 5 minutes ahead of when they are sent)")
    outcome = ReplayReport(devices=len(devices), first_ts=first + shift, last_ts=last + shift, shifted_by=shift)
    stop = stop or asyncio.Event()
    fleet = DeviceFleet(host, port)
    try:
        await fleet.connect_all({d: logins[d] for d in devices})
    except ConnectRefused as error:
        raise ReplayError(f"a device of the file cannot connect: {error}") from error
    report(f"replaying {len(samples)} samples from {len(devices)} devices at {speed:g}x")
    seqs = dict.fromkeys(devices, 0)
    keepalive = asyncio.create_task(fleet.keepalive())
    try:
        for sample in samples:
            due = started + (sample.ts - first).total_seconds() / speed
            wait = due - now()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                break
            connection = fleet.connections.get(sample.device_id)
            if connection is None:
                connection = await fleet.connect(sample.device_id, logins[sample.device_id])
            connection.publish_telemetry(payload(sample, seqs[sample.device_id], sample.ts + shift))
            seqs[sample.device_id] += 1
            outcome.published += 1
        outcome.samples = len(samples)
        await fleet.drain(10.0)
    finally:
        keepalive.cancel()
        fleet.close()
        await asyncio.sleep(0.05)
    return outcome
