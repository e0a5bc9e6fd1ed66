"""``cityops dispatch``: the process that closes the loop, composed of five concurrent parts.

* **incidents** -- a consumer of ``incidents`` (its own group): each event is projected and decided in one
  database transaction (``DispatchEngine.handle_incident_event``); its offset is committed after that commit.
* **crew updates** -- a consumer of ``crew.updates``: each update applied once, in one transaction.
* **crew gateway** -- MQTT crews' updates to Kafka, and the MQTT side of the relay (``crew_gateway``).
* **outbox relay** -- every outbox row to Kafka or MQTT, marked after both acknowledged (``relay``).
* **timers** -- every ``timer_interval_s``: holds that ended, SLA breaches, acceptance windows, re-dispatch of
  orders no crew could take, verification periods that ended (``DispatchEngine.tick``).

Why plain aiokafka consumers and not faust agents (STYLE.md §7 prefers faust): every decision here is a
PostgreSQL transaction -- the projection, ``work_orders.incident_id`` UNIQUE, row locks, the outbox -- so the
database, not a faust Table, owns the state, and an offset may be committed only after that transaction
committed. aiokafka gives exactly that control (commit per partition after the handler returned, nothing
committed on a failure, seek back to retry); faust commits acknowledged offsets on its own interval and would add
its changelog and leader topics for state we do not keep in it. The timers are database scans shared by every
dispatcher through row locks (``FOR UPDATE SKIP LOCKED``), which faust's per-worker ``@app.timer`` would not make
safe by itself. (The detection worker left faust too: docs/STREAMS.md, "Why a plain consumer".)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from psycopg_pool import ConnectionPool

from domain.crew_messages import CrewMessageError, decode_crew_update_record
from domain.incident_events import EventDecodeError, decode_event
from domain.time import from_epoch_ms
from store import dispatch as records
from streams.dispatch.crew_gateway import CrewGateway
from streams.dispatch.engine import DispatchEngine
from streams.dispatch.metrics import DispatchMetrics
from streams.dispatch.policy import Decision
from streams.dispatch.relay import OutboxRelay

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 3  # a record failing this often for a reason other than the database being away is recorded


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    bootstrap_servers: str
    instance: str = "1"
    group_id: str = "cityops-dispatch"
    incidents_topic: str = "incidents"
    crew_updates_topic: str = "crew.updates"
    timer_interval_s: float = 2.0


class PoisonRecordError(Exception):
    """A record that cannot be handled however often it is tried (e.g. it breaks the topic's contract)."""


class TransactionalConsumer:
    """One topic, one group; each record handled by ``handle`` (a database transaction), offsets committed after.

    A database that is away is waited for, record by record, without committing past it. Any other failure is
    retried ``_MAX_ATTEMPTS`` times, then ``on_poison`` records it (so it is not lost from sight) and the
    partition moves on.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        client_id: str,
        handle: Callable[[Any], Awaitable[None]],
        on_poison: Callable[[Any, BaseException], Awaitable[None]],
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.client_id = client_id
        self.handle = handle
        self.on_poison = on_poison
        self.ready = asyncio.Event()  # set once the group assigned this consumer its partitions

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=200,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                if consumer.assignment():
                    self.ready.set()
                for tp, batch in batches.items():
                    handled = None
                    for record in batch:
                        await self._handle(record, stop)
                        handled = record.offset
                        if stop.is_set():
                            break
                    if handled is None:
                        continue
                    try:
                        await consumer.commit({tp: handled + 1})
                    except (CommitFailedError, KafkaError) as error:
                        # The partition moved to another dispatcher: it replays from the last commit, harmlessly.
                        log.warning(
                            "offset commit failed", extra={"fields": {"topic": self.topic, "error": repr(error)}}
                        )
                    if stop.is_set():
                        break
        finally:
            await consumer.stop()

    async def _handle(self, record: Any, stop: asyncio.Event) -> None:
        attempts = 0
        backoff = 0.5
        while True:
            try:
                await self.handle(record)
                return
            except PoisonRecordError as error:
                await self.on_poison(record, error)
                return
            except psycopg.OperationalError as error:
                log.warning("database unavailable; retrying", extra={"fields": {"error": str(error)[:300]}})
                if stop.is_set():
                    raise
            except Exception as error:
                attempts += 1
                log.exception("handling %s offset %s failed (attempt %s)", self.topic, record.offset, attempts)
                if attempts >= _MAX_ATTEMPTS:
                    await self.on_poison(record, error)
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


class DispatchService:
    def __init__(
        self,
        config: ServiceConfig,
        *,
        engine: DispatchEngine,
        pool: ConnectionPool,
        gateway: CrewGateway,
        relay: OutboxRelay,
        metrics: DispatchMetrics,
    ) -> None:
        self.config = config
        self.engine = engine
        self.pool = pool
        self.gateway = gateway
        self.relay = relay
        self.metrics = metrics
        self.incidents = TransactionalConsumer(
            bootstrap_servers=config.bootstrap_servers,
            topic=config.incidents_topic,
            group_id=f"{config.group_id}.incidents",
            client_id=f"cityops-dispatch-{config.instance}",
            handle=self._incident,
            on_poison=self._incident_poison,
        )
        self.crew_updates = TransactionalConsumer(
            bootstrap_servers=config.bootstrap_servers,
            topic=config.crew_updates_topic,
            group_id=f"{config.group_id}.crew-updates",
            client_id=f"cityops-dispatch-{config.instance}",
            handle=self._crew_update,
            on_poison=self._crew_update_poison,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.gateway.start()
        tasks = [
            asyncio.create_task(self.gateway.run(stop), name="crew-gateway"),
            asyncio.create_task(self.relay.run(stop), name="outbox-relay"),
            asyncio.create_task(self.incidents.run(stop), name="incidents"),
            asyncio.create_task(self.crew_updates.run(stop), name="crew-updates"),
            asyncio.create_task(self._timers(stop), name="timers"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    log.error("dispatcher part %s failed", task.get_name())
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.gateway.stop()

    # -- the parts -------------------------------------------------------------------------------------------
    async def _incident(self, record: Any) -> None:
        try:
            event = decode_event(record.value)
        except EventDecodeError as error:
            raise PoisonRecordError(str(error)) from error
        started = time.monotonic()
        outcomes = await asyncio.to_thread(self._in_connection, self.engine.handle_incident_event, event)
        self.metrics.handling_seconds.labels("incident").observe(time.monotonic() - started)
        self.metrics.incident_events.labels("decided" if outcomes else "replayed").inc()
        for outcome in outcomes:
            self.metrics.decisions.labels(outcome.decision.value).inc()
        self.relay.wake()

    async def _incident_poison(self, record: Any, error: BaseException) -> None:
        self.metrics.poison.labels(self.config.incidents_topic).inc()
        key = record.key.decode(errors="replace") if record.key else f"offset-{record.partition}-{record.offset}"
        detail = f"{self.config.incidents_topic} partition {record.partition} offset {record.offset}: {error!r}"[:2000]
        log.error("incident record recorded as failed", extra={"fields": {"incident": key, "error": detail}})

        def write(conn: psycopg.Connection[Any]) -> None:
            now = self.engine.clock()
            with conn.transaction():
                records.record_decision(conn, key, Decision.ERROR.value, at=now, detail=detail)
                records.notify(
                    conn,
                    records.Notification(
                        kind="dispatch_error",
                        message=f"the dispatcher could not handle an event of incident {key}: {detail}",
                        dedupe_key=f"dispatch_error:{record.topic}:{record.partition}:{record.offset}",
                        created_at=now,
                        incident_id=key,
                    ),
                )

        await asyncio.to_thread(self._in_connection, write)
        self.relay.wake()

    async def _crew_update(self, record: Any) -> None:
        try:
            update = decode_crew_update_record(record.value)
        except CrewMessageError as error:
            raise PoisonRecordError(f"{error.reason}: {error}") from error
        started = time.monotonic()
        outcome = await asyncio.to_thread(
            self._in_connection, self.engine.apply_crew_update, update, received_at=from_epoch_ms(record.timestamp)
        )
        self.metrics.handling_seconds.labels("crew_update").observe(time.monotonic() - started)
        self.metrics.crew_updates.labels(outcome.value).inc()
        self.relay.wake()

    async def _crew_update_poison(self, record: Any, error: BaseException) -> None:
        # The gateway validated it; a record that still fails is a producer bug or a bug here. Kept visible.
        self.metrics.poison.labels(self.config.crew_updates_topic).inc()
        log.error(
            "crew update record skipped after repeated failures",
            extra={"fields": {"partition": record.partition, "offset": record.offset, "error": repr(error)[:500]}},
        )

    async def _timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                report = await asyncio.to_thread(self._in_connection, self.engine.tick)
            except Exception:
                log.exception("a pass of the timed rules failed; trying again at the next one")
            else:
                for kind in ("released", "dispatched", "breaches", "reassigned", "verified", "failed_verification"):
                    count = getattr(report, kind)
                    if count:
                        self.metrics.timer_actions.labels(kind).inc(count)
                if report.total():
                    self.relay.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.timer_interval_s)

    def _in_connection(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.pool.connection() as conn:
            return function(conn, *args, **kwargs)
