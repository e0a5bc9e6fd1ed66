"""Projection: the ``project_incidents`` agent, ``incidents`` → PostgreSQL through
:func:`store.incidents.apply_incident_event`, a batch per transaction.

Why a faust agent and not a plain aiokafka consumer (as streams/persist.py is): incident events are rare next to
readings, so faust's per-event cost does not matter here, and faust can give the guarantee the projection needs.
faust commits only offsets of *acknowledged* events, contiguously (``Consumer._new_offset``, provided no event is
left unacknowledged: streams/batching.py), after flushing its producer. The agent takes batches with
:func:`streams.batching.batches` -- which, unlike faust's ``take``, does not acknowledge a batch when the loop body
leaves it, and unlike ``noack_take`` loses no event -- and acknowledges the events only after the transaction that
holds them committed. A crash before that replays the batch, which the projection ignores (``seq``). A database that
is down stops the agent where it is: the write is retried with backoff, nothing is acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from domain.incident_events import EventDecodeError, IncidentEvent, decode_event
from store.incidents import apply_incident_event
from streams.batching import ack_batch, batches

if TYPE_CHECKING:
    import faust

    from streams.app import StreamsContext

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class IncidentProjector(Protocol):
    def write(self, events: Sequence[IncidentEvent]) -> int:
        """Apply the events in one transaction; return how many were new. Blocking (run in a thread)."""


class DatabaseProjector:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def write(self, events: Sequence[IncidentEvent]) -> int:
        with self.pool.connection() as conn, conn.transaction():
            return sum(1 for event in events if apply_incident_event(conn, event))


async def write_with_retry(projector: IncidentProjector, events: Sequence[IncidentEvent]) -> int:
    attempt = 0
    while True:
        try:
            return await asyncio.to_thread(projector.write, events)
        except psycopg.OperationalError as error:
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            attempt += 1
            log.warning(
                "incident projection failed; retrying",
                extra={"fields": {"attempt": attempt, "retry_in_s": delay, "error": str(error).strip()[:300]}},
            )
            await asyncio.sleep(delay)


def install(app: faust.App, context: StreamsContext) -> None:
    config = context.config
    metrics = context.metrics

    @app.agent(context.topics.incidents, name="project_incidents", supervisor_strategy=context.supervisor)
    async def project_incidents(stream: Any) -> Any:
        """Incident events → the incidents tables, acknowledged only once committed."""
        async for events in batches(stream, config.projection_batch_size, config.projection_within_s):
            decoded: list[IncidentEvent] = []
            for event in events:
                try:
                    decoded.append(decode_event(event.message.value))
                except EventDecodeError as error:
                    metrics.undecodable.labels(event.message.topic).inc()
                    log.error(
                        "incident event breaks the topic contract; skipped",
                        extra={"fields": {"offset": event.message.offset, "error": str(error)[:300]}},
                    )
            new = await write_with_retry(context.projector, decoded) if decoded else 0
            metrics.projected.inc(new)
            await ack_batch(stream, events, context.progress)
            yield new

    context.agents["project_incidents"] = project_incidents
