"""The faust Tables of the rule engines: one DeviceState per device id, one AreaState per area key.

Why the partition of a key, and codecs of our own:

* The tables are written from agents *and* from timers (ticks have no current event), so a key's changelog
  partition cannot come from "the event being processed" (faust's default). :func:`partition_for` computes it from
  the key with Kafka's default partitioner (murmur2 of the key's bytes), which is what ingest's producer and the
  outbox relay use for ``readings``, ``device.status``, ``incident.acks`` and ``incident.facts``: a key's state
  lives in the changelog partition with the number of the input partitions it arrives on, so faust's co-partitioned
  assignment hands a worker exactly the states of the keys it consumes.
* The codecs turn a state into its JSON (``rules.detection.state_to_json``, ``rules.correlation.area_to_json``) only
  on the way to the changelog. Recovery replays *every* record a key has in the changelog (compaction lags behind,
  and a busy device has one record per batch it was in), so it keeps each as :class:`Undecoded` bytes and the
  engine decodes only the last one of each key, once, when it first needs it (``KeyedEngine.state``,
  ``recovered``). Measured: a worker restarting on 180,000 changelog records of 3,000 gauges spent 70 s decoding
  states that the next record of the same key replaced. After that the memory store holds decoded states: the hot
  path never parses JSON (docs/RULES.md, "Speed").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.serializers.codecs import Codec

from rules.catalogue import RuleSet
from rules.correlation import AreaState, area_from_json, area_to_json
from rules.detection import DeviceState, state_from_json, state_to_json


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java client and aiokafka alike) gives this key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class KeyCodec(Codec):
    """Table keys are text (device ids, area keys), UTF-8 on the wire."""

    def _dumps(self, key: Any) -> bytes:
        return key.encode() if isinstance(key, str) else bytes(key)

    def _loads(self, data: bytes) -> str:
        return data.decode()


@dataclass(frozen=True, slots=True)
class Undecoded:
    """A state as recovery read it from the changelog; :meth:`StateCodec.decode_state` makes it a state."""

    data: bytes


class StateCodec(Codec):
    """An engine state to JSON bytes and back, with the rule set that gives a saved state its meaning."""

    def __init__(
        self,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(encode=encode, decode=decode, **kwargs)
        self._encode = encode
        self._decode = decode

    def _dumps(self, state: Any) -> bytes:
        assert self._encode is not None
        return orjson.dumps(self._encode(state), default=_as_array)

    def _loads(self, data: bytes) -> Any:
        return Undecoded(data)  # decoded by the engine, once, if still the key's latest (module docstring)

    def decode_state(self, data: bytes) -> Any:
        assert self._decode is not None
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


def state_table(app: faust.App, name: str, *, partitions: int, codec: StateCodec, help: str) -> Any:
    """A table of engine states. Its changelog records are produced by the engines themselves, each to the
    partition of its key (:func:`partition_for`), not by ``table[key] = value`` (streams/outputs.py says why);
    faust still owns the changelog topic, recovery and the memory store."""
    table: faust.Table[str, Any] = faust.Table(
        app, name=name, beacon=app.tables.beacon, partitions=partitions, help=help
    )
    # faust derives the serializers from key_type/value_type (json or raw). Ours must be set before the changelog
    # topic, which takes them, is made: that happens when the table is added to the app (app.Table would be too
    # early), and recovery decodes with that topic's serializers.
    table.key_serializer = KeyCodec()
    table.value_serializer = codec
    app.tables.add(table)
    return table


__all__ = [
    "AreaState",
    "DeviceState",
    "StateCodec",
    "Undecoded",
    "area_state_codec",
    "device_state_codec",
    "partition_for",
    "state_table",
]
