"""From an MQTT message to readings or reasons: topic and payload decoding, validation, normalisation, dedup.

Pure: no sockets, no clock (the receive time is passed in). Every message ends as zero or more ``Reading`` objects
plus zero or more ``Rejection`` objects; nothing is silently dropped. Validation is per metric: a sample with one
impossible value keeps its valid metrics and the bad one is rejected with its own reason, so nothing valid is lost.

Payload contract (ARCHITECTURE.md): ``{"ts": RFC 3339 or epoch ms, "seq": int, "metrics": {name: number}}``, or a
JSON array of such samples (a device flushing its buffer after being offline).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from domain.devices import DeviceStatus, DeviceType, MetricSpec
from domain.readings import ConnectionState, Reading, StatusChange

TELEMETRY_PREFIX = "city/telemetry/"
STATUS_PREFIX = "city/status/"
_SAMPLE_FIELDS = frozenset({"ts", "seq", "metrics"})
_MAX_SEQ = 2**63 - 1  # readings.seq is a bigint


class Reason(StrEnum):
    """Why a message (or part of it) was rejected. The values are stable: dashboards and alerts count them."""

    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_DECOMMISSIONED = "device_decommissioned"
    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed_json"
    TOO_DEEP = "too_deep"
    WRONG_SHAPE = "wrong_shape"
    EMPTY = "empty"
    TOO_MANY_SAMPLES = "too_many_samples"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    UNKNOWN_METRIC = "unknown_metric"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    BAD_SEQ = "bad_seq"
    DUPLICATE = "duplicate"
    BAD_STATUS = "bad_status"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str  # for a person: what was wrong, with the offending value
    sample_index: int | None = None
    metric: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What ingest needs to know about a registered device."""

    device_id: str
    device_type: DeviceType
    status: DeviceStatus
    grid_cell: str | None = None
    district: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 32 * 1024
    max_samples: int = 500
    max_depth: int = 8  # a valid payload nests 3 deep; anything far deeper is junk
    max_future: timedelta = timedelta(minutes=5)  # device clocks drift; more than this is a broken clock
    max_age: timedelta = timedelta(days=7)  # an offline device may flush a week of buffer, not more
    dedup_memory: int = 64  # recent (seq, ts) pairs remembered per device


@dataclass(frozen=True, slots=True)
class Decoded:
    device_id: str | None
    readings: tuple[Reading, ...] = ()
    status: StatusChange | None = None
    rejections: tuple[Rejection, ...] = ()


@dataclass(slots=True)
class _Recent:
    """A device's recently accepted samples, to recognise retransmissions (QoS 1 redelivery, buffer re-flush).

    A sample is a duplicate if its ts was accepted recently, or if its seq was and it is not newer than the newest
    sample accepted (a re-sent or re-stamped old sample). A remembered seq on a sample newer than everything
    accepted means the device's counter restarted (a reboot): it is accepted and the seq memory starts over.
    """

    seqs: deque[int]
    timestamps: deque[datetime]
    seq_set: set[int] = field(default_factory=set)
    ts_set: set[datetime] = field(default_factory=set)
    newest: datetime | None = None

    def seen(self, seq: int | None, ts: datetime) -> str | None:
        if ts in self.ts_set:
            return f"a sample with ts {ts.isoformat()} was already accepted"
        if seq is not None and seq in self.seq_set:
            if self.newest is not None and ts > self.newest:
                self.seqs.clear()
                self.seq_set.clear()
                return None
            return f"seq {seq} was already accepted (and this sample is not newer than the newest accepted)"
        return None

    def remember(self, seq: int | None, ts: datetime) -> None:
        if len(self.timestamps) == self.timestamps.maxlen:
            self.ts_set.discard(self.timestamps[0])
        self.timestamps.append(ts)
        self.ts_set.add(ts)
        if self.newest is None or ts > self.newest:
            self.newest = ts
        if seq is not None:
            if len(self.seqs) == self.seqs.maxlen:
                self.seq_set.discard(self.seqs[0])
            self.seqs.append(seq)
            self.seq_set.add(seq)


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, stopping as soon as it exceeds ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
    return deepest


def _nests(sample: dict[Any, Any]) -> bool:
    """True if a value of ``sample`` holds an object or array: deeper than a valid sample (sample, metrics, value)
    ever is. Only then is the exact depth worth measuring."""
    for value in sample.values():
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        for child in children:
            if isinstance(child, dict | list):
                return True
    return False


def _short(value: object) -> str:
    """A value for a message, cut short: JSON integers may have thousands of digits."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_timestamp(raw: Any) -> datetime:
    """RFC 3339 with an explicit offset, or integer/float epoch milliseconds. Raises ValueError with the reason."""
    if isinstance(raw, bool):
        raise ValueError(f"ts must be RFC 3339 text or epoch milliseconds, got {raw!r}")
    if isinstance(raw, int | float):
        try:
            finite = math.isfinite(raw)
        except OverflowError:  # an integer beyond any float: finite, and refused just below
            finite = True
        if not finite:
            raise ValueError(f"ts {raw!r} is not a finite number")
        try:
            return datetime.fromtimestamp(raw / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise ValueError(f"ts {_short(raw)} is not a usable epoch-milliseconds value") from error
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as error:
            raise ValueError(f"ts {raw[:40]!r} is not RFC 3339") from error
        if moment.tzinfo is None:
            raise ValueError(f"ts {raw[:40]!r} has no timezone offset; send Z or +hh:mm")
        return moment.astimezone(UTC)
    raise ValueError(f"ts must be RFC 3339 text or epoch milliseconds, got {type(raw).__name__}")


class TelemetryDecoder:
    """Decodes one bridge's MQTT messages. Keeps only a small per-device memory for duplicate detection.

    ``directory`` maps device id to :class:`DeviceEntry`; the bridge swaps in a fresh mapping when the registry
    changes (:meth:`replace_directory`).
    """

    def __init__(self, directory: Mapping[str, DeviceEntry], limits: Limits | None = None) -> None:
        self.directory = directory
        self.limits = limits or Limits()
        self._recent: dict[str, _Recent] = {}
        # Per device type, the metric names its devices have sent that resolved (unknown names are not kept, so
        # garbage cannot grow it): DeviceType.resolve scans the type's metrics and their aliases every time.
        self._resolved: dict[str, dict[str, tuple[MetricSpec, float]]] = {}

    def replace_directory(self, directory: Mapping[str, DeviceEntry]) -> None:
        self.directory = directory
        self._resolved.clear()

    # -- entry point ---------------------------------------------------------------------------------------
    def decode(self, topic: str, payload: bytes, received_at: datetime, *, retained: bool = False) -> Decoded:
        """Decode one message. ``retained`` marks a status the broker replayed on subscribe (not a new change)."""
        if topic.startswith(TELEMETRY_PREFIX):
            device_id = topic[len(TELEMETRY_PREFIX) :]
            kind = "telemetry"
        elif topic.startswith(STATUS_PREFIX):
            device_id = topic[len(STATUS_PREFIX) :]
            kind = "status"
        else:
            return Decoded(None, rejections=(Rejection(Reason.BAD_TOPIC, f"topic {topic[:120]!r} is not ours"),))
        if not device_id or "/" in device_id:
            return Decoded(None, rejections=(Rejection(Reason.BAD_TOPIC, f"topic {topic[:120]!r} has no device id"),))
        entry = self.directory.get(device_id)
        if entry is None:
            return _reject(device_id, Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered")
        if entry.status is DeviceStatus.DECOMMISSIONED:
            return _reject(device_id, Reason.DEVICE_DECOMMISSIONED, f"device {device_id} is decommissioned")
        if len(payload) > self.limits.max_payload_bytes:
            return _reject(
                device_id,
                Reason.OVERSIZE,
                f"payload of {len(payload)} bytes exceeds the limit of {self.limits.max_payload_bytes}",
            )
        if kind == "status":
            return self._decode_status(device_id, payload, received_at, retained=retained)
        return self._decode_telemetry(entry, payload, received_at)

    # -- status --------------------------------------------------------------------------------------------
    def _decode_status(
        self, device_id: str, payload: bytes, received_at: datetime, *, retained: bool = False
    ) -> Decoded:
        text = payload.decode("utf-8", errors="replace").strip()
        try:
            state = ConnectionState(text)
        except ValueError:
            return _reject(device_id, Reason.BAD_STATUS, f"status must be 'online' or 'offline', got {text[:40]!r}")
        change = StatusChange(device_id=device_id, state=state, ts=received_at, retained=retained)
        return Decoded(device_id, status=change)

    # -- telemetry -----------------------------------------------------------------------------------------
    def _parse(self, device_id: str, payload: bytes) -> Any | Decoded:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if not payload.strip():
                return _reject(device_id, Reason.EMPTY, "empty payload")
            # orjson refuses NaN/Infinity like any malformed JSON; ask the lenient parser why, for a precise reason.
            try:
                document = json.loads(payload, parse_constant=_refuse_constant)
            except _NotFinite as constant:
                return _reject(device_id, Reason.NOT_FINITE, f"{constant} is not a finite number")
            except RecursionError:
                return _reject(device_id, Reason.TOO_DEEP, "payload nests too deeply")
            except (ValueError, UnicodeDecodeError) as error:
                return _reject(device_id, Reason.MALFORMED_JSON, f"not JSON: {str(error)[:120]}")
        return document

    def _decode_telemetry(self, entry: DeviceEntry, payload: bytes, received_at: datetime) -> Decoded:
        device_id = entry.device_id
        document = self._parse(device_id, payload)
        if isinstance(document, Decoded):
            return document
        if isinstance(document, dict):
            samples: list[Any] = [document]
            flat = False  # measured per sample
        elif isinstance(document, list):
            # An array of flat samples nests four levels (array, sample, metrics, value): measure only the others.
            flat = self.limits.max_depth >= 4 and all(isinstance(s, dict) and not _nests(s) for s in document)
            if not flat and _depth(document, self.limits.max_depth) > self.limits.max_depth:
                return _reject(device_id, Reason.TOO_DEEP, f"payload nests deeper than {self.limits.max_depth} levels")
            samples = document
            if not samples:
                return _reject(device_id, Reason.EMPTY, "empty array of samples")
            if len(samples) > self.limits.max_samples:
                return _reject(
                    device_id,
                    Reason.TOO_MANY_SAMPLES,
                    f"{len(samples)} samples in one message; at most {self.limits.max_samples}",
                )
        else:
            return _reject(
                device_id, Reason.WRONG_SHAPE, f"payload must be a JSON object or array, got {type(document).__name__}"
            )

        readings: list[Reading] = []
        rejections: list[Rejection] = []
        index = None if len(samples) == 1 and isinstance(document, dict) else 0
        for position, sample in enumerate(samples):
            sample_index = None if index is None else position
            reading = self._decode_sample(entry, sample, sample_index, received_at, rejections, flat=flat)
            if reading is not None:
                readings.append(reading)
        return Decoded(device_id, readings=tuple(readings), rejections=tuple(rejections))

    def _decode_sample(
        self,
        entry: DeviceEntry,
        sample: Any,
        index: int | None,
        received_at: datetime,
        rejections: list[Rejection],
        *,
        flat: bool = False,
    ) -> Reading | None:
        def reject(reason: Reason, detail: str, metric: str | None = None) -> None:
            where = "" if index is None else f"sample {index}: "
            rejections.append(Rejection(reason, where + detail, index, metric))

        if not isinstance(sample, dict):
            reject(Reason.WRONG_SHAPE, f"a sample must be an object, got {type(sample).__name__}")
            return None
        # A valid sample nests three levels (sample, metrics, value). Deeper junk is measured only when present,
        # so the common case pays nothing for the check.
        if not flat and _nests(sample) and _depth(sample, self.limits.max_depth) > self.limits.max_depth:
            reject(Reason.TOO_DEEP, f"sample nests deeper than {self.limits.max_depth} levels")
            return None
        if not sample.keys() <= _SAMPLE_FIELDS:
            unexpected = set(sample) - _SAMPLE_FIELDS
            reject(Reason.WRONG_SHAPE, f"unexpected field(s) {sorted(unexpected)[:5]}; a sample has ts, seq, metrics")
            return None
        if "ts" not in sample:
            reject(Reason.BAD_TIMESTAMP, "missing ts")
            return None
        try:
            ts = parse_timestamp(sample["ts"])
        except ValueError as error:
            reject(Reason.BAD_TIMESTAMP, str(error))
            return None
        if ts > received_at + self.limits.max_future:
            reject(Reason.TS_IN_FUTURE, f"ts {ts.isoformat()} is {ts - received_at} ahead of the platform clock")
            return None
        if ts < received_at - self.limits.max_age:
            reject(Reason.TS_TOO_OLD, f"ts {ts.isoformat()} is older than {self.limits.max_age}")
            return None
        seq = sample.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            reject(Reason.BAD_SEQ, f"seq must be a non-negative integer, got {_short(seq)}")
            return None
        if seq is not None and seq > _MAX_SEQ:
            reject(Reason.BAD_SEQ, f"seq {_short(seq)} does not fit in 64 bits (the readings table's bigint)")
            return None
        metrics = sample.get("metrics")
        if not isinstance(metrics, dict):
            if metrics is None:
                reject(Reason.WRONG_SHAPE, "missing metrics")
            else:
                reject(Reason.WRONG_SHAPE, f"metrics must be an object, got {type(metrics).__name__}")
            return None
        if not metrics:
            reject(Reason.EMPTY, "metrics is empty")
            return None

        recent = self._recent.get(entry.device_id)
        if recent is not None and (why := recent.seen(seq, ts)):
            reject(Reason.DUPLICATE, why)
            return None

        accepted: dict[str, float] = {}
        device_type = entry.device_type
        resolved = self._resolved.get(device_type.code)
        if resolved is None:
            resolved = self._resolved[device_type.code] = {}
        for name, raw in metrics.items():
            value = self._metric_value(device_type, resolved, name, raw, reject)
            if value is not None:
                canonical, normalised = value
                if canonical in accepted:
                    reject(Reason.WRONG_SHAPE, f"{name} repeats {canonical} in the same sample", name)
                    continue
                accepted[canonical] = normalised
        if not accepted:
            return None

        if recent is None:
            recent = self._recent[entry.device_id] = _Recent(
                deque(maxlen=self.limits.dedup_memory), deque(maxlen=self.limits.dedup_memory)
            )
        recent.remember(seq, ts)
        return Reading(
            device_id=entry.device_id,
            ts=ts,
            metrics=accepted,
            ingested_at=received_at,
            seq=seq,
            device_type=entry.device_type.code,
            grid_cell=entry.grid_cell,
            district=entry.district,
        )

    @staticmethod
    def _metric_value(
        device_type: DeviceType,
        resolved: dict[str, tuple[MetricSpec, float]],
        name: str,
        raw: Any,
        reject: Callable[[Reason, str, str | None], None],
    ) -> tuple[str, float] | None:
        known = resolved.get(name)
        if known is None:
            known = device_type.resolve(name)
            if known is None:
                allowed = ", ".join(m.name for m in device_type.metrics)
                reject(
                    Reason.UNKNOWN_METRIC, f"{name[:60]!r} is not a metric of {device_type.code} ({allowed})", name[:60]
                )
                return None
            resolved[name] = known
        spec, factor = known
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            reject(Reason.WRONG_TYPE, f"{name} must be a number, got {type(raw).__name__} {str(raw)[:40]!r}", name)
            return None
        try:
            value = float(raw) * factor
        except OverflowError:  # an integer beyond any float
            value = math.inf
        if not math.isfinite(value):
            reject(Reason.NOT_FINITE, f"{name}={_short(raw)} is not a finite number", name)
            return None
        if not spec.in_range(value):
            unit = f" {spec.unit}" if spec.unit else ""
            reject(
                Reason.OUT_OF_RANGE,
                f"{spec.name}={value:g}{unit} is outside the valid range [{spec.minimum:g}, {spec.maximum:g}]",
                name,
            )
            return None
        return spec.name, value


def _reject(device_id: str | None, reason: Reason, detail: str) -> Decoded:
    return Decoded(device_id, rejections=(Rejection(reason, detail),))
