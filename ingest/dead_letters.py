"""Dead letters: what ingest refused, kept on ``readings.dlq`` with everything needed to understand and replay it.

One record per refused MQTT message (not per reason), so a flushed buffer of 500 bad samples is one record with
500 reasons and the payload once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

import orjson

from ingest.decode import Rejection

_TEXT_PREVIEW = 2048


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    received_at: datetime
    device_id: str | None
    rejections: tuple[Rejection, ...]

    @property
    def key(self) -> bytes:
        return (self.device_id or self.topic).encode()

    def encode(self) -> bytes:
        first = self.rejections[0]
        try:
            text: str | None = self.payload[:_TEXT_PREVIEW].decode("utf-8")
        except UnicodeDecodeError:
            text = None
        record = {
            "reason": first.reason.value,
            "detail": first.detail,
            "reasons": [
                {"reason": r.reason.value, "detail": r.detail, "sample_index": r.sample_index, "metric": r.metric}
                for r in self.rejections
            ],
            "topic": self.topic,
            "device_id": self.device_id,
            "received_at": self.received_at.isoformat(),
            "payload_b64": base64.b64encode(self.payload).decode(),
            "payload_text": text,
            "payload_bytes": len(self.payload),
        }
        try:
            return orjson.dumps(record)
        except TypeError:
            # A JSON string escape in the payload can carry a lone surrogate (e.g. a metric named "\ud800"), which
            # is not UTF-8: spell such characters out rather than fail on the one message that must be kept.
            return orjson.dumps(_utf8_safe(record))


def _utf8_safe(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8_safe(v) for v in value]
    return value


def decode_dead_letter(data: bytes) -> dict[str, object]:
    """For tools and tests: the record as a dict, with the raw payload restored under ``payload``."""
    record: dict[str, object] = orjson.loads(data)
    record["payload"] = base64.b64decode(str(record["payload_b64"]))
    return record
