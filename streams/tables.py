"""The state tables of the rule engines: one DeviceState per device id, one AreaState per area key, each in memory
and in a compacted changelog topic (``<app-id>-device-states-changelog``, ``<app-id>-area-states-changelog``).

* A key's changelog partition is Kafka's default partition of the key (:func:`partition_for`, murmur2 of its
  bytes), which is what ingest's producer and the outbox relay use for ``readings``, ``device.status``,
  ``incident.acks`` and ``incident.facts``: a key's state lives in the changelog partition with the number of the
  input partition it arrives on, so a worker that owns input partition *p* recovers exactly changelog partition *p*.
* The codecs turn a state into its JSON (``rules.detection.state_to_json``, ``rules.correlation.area_to_json``) only
  on the way to the changelog. Recovery reads *every* record a key still has in the changelog (compaction lags
  behind, and a busy device has one record per batch it was in), so it keeps each as :class:`Undecoded` bytes and the
  engine decodes only the last one of each key, once (``KeyedEngine.state``, ``recovered``). Measured: a worker that
  decoded every record spent 70 s restarting on 180,000 changelog records of 3,000 gauges. After that the memory
  store holds decoded states: the hot path never parses JSON (docs/RULES.md, "Speed").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from rules.catalogue import RuleSet
from rules.correlation import AreaState, area_from_json, area_to_json
from rules.detection import DeviceState, state_from_json, state_to_json

DEVICE_TABLE = "device-states"
AREA_TABLE = "area-states"


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java client and aiokafka alike) gives this key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of a table (the names faust gave them, which earlier versions of the worker used)."""
    return f"{app_id}-{table}-changelog"


@dataclass(frozen=True, slots=True)
class Undecoded:
    """A state as recovery read it from the changelog; :meth:`StateCodec.decode_state` makes it a state."""

    data: bytes


class StateCodec:
    """An engine state to JSON bytes and back, with the rule set that gives a saved state its meaning."""

    def __init__(self, encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> None:
        self._encode = encode
        self._decode = decode

    def dumps(self, state: Any) -> bytes:
        return orjson.dumps(self._encode(state), default=_as_array)

    def decode_state(self, data: bytes) -> Any:
        return self._decode(orjson.loads(data))


def _as_array(value: Any) -> Any:
    """Detector states are NamedTuples, which orjson (unlike json) does not write as arrays by itself."""
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def device_state_codec(rules: RuleSet) -> StateCodec:
    return StateCodec(encode=state_to_json, decode=lambda data: state_from_json(rules, data))


def area_state_codec(rules: RuleSet) -> StateCodec:
    return StateCodec(encode=area_to_json, decode=area_from_json)


__all__ = [
    "AREA_TABLE",
    "DEVICE_TABLE",
    "AreaState",
    "DeviceState",
    "StateCodec",
    "Undecoded",
    "area_state_codec",
    "changelog_topic",
    "device_state_codec",
    "partition_for",
]
