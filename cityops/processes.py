"""The long-running cityops processes, composed from settings: adapters are built here and passed in.

Each process stops gracefully on SIGTERM or Ctrl-C: it finishes and acknowledges (ingest) or flushes and commits
(persist) what it has, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

import psycopg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, start_http_server

from cityops.settings import Settings
from domain.catalogue import Catalogue, load_catalogue
from ingest.bridge import BridgeConfig, IngestBridge
from ingest.decode import DeviceEntry, Limits, TelemetryDecoder
from ingest.metrics import IngestMetrics
from store.devices import list_devices
from store.pool import open_pool
from store.readings import ReadingSink, readings_rollups_kept_by_application
from streams.persist import PersistConfig, Persister, PersistMetrics

log = logging.getLogger(__name__)


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _every(seconds: float, action: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        action()


def _serve_metrics(registry: CollectorRegistry, host: str, port: int, what: str) -> None:
    start_http_server(port, addr=host, registry=registry)
    log.info(f"{what} metrics on http://{host}:{port}/metrics")


def device_directory_loader(settings: Settings, catalogue: Catalogue) -> Callable[[], Mapping[str, DeviceEntry]]:
    def load() -> Mapping[str, DeviceEntry]:
        with psycopg.connect(settings.db.conninfo(), connect_timeout=5) as conn:
            devices = list_devices(conn)
        return {
            d.id: DeviceEntry(d.id, catalogue.device_types[d.type_code], d.status, d.grid_cell, d.district)
            for d in devices
            if d.type_code in catalogue.device_types
        }

    return load


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        compression_type="lz4",
        request_timeout_ms=15000,
    )


def ingest_summary(metrics: IngestMetrics) -> Callable[[], str]:
    """A one-line summary with rates since the previous call."""
    previous: dict[str, float] = {}
    previous_at = [time.monotonic()]

    def line() -> str:
        now = time.monotonic()
        values = metrics.snapshot()
        elapsed = max(now - previous_at[0], 1e-6)

        def total(prefix: str) -> float:
            return sum(v for k, v in values.items() if k.startswith(prefix))

        received = total("cityops_ingest_messages_received_total")
        accepted = total("cityops_ingest_readings_accepted_total")
        rejected = total("cityops_ingest_rejections_total")
        rate = (accepted - previous.get("accepted", accepted)) / elapsed
        top = sorted(
            (
                (k.split("[", 1)[1].rstrip("]"), v)
                for k, v in values.items()
                if k.startswith("cityops_ingest_rejections_total[") and v
            ),
            key=lambda item: -item[1],
        )[:3]
        previous.update(accepted=accepted)
        previous_at[0] = now
        connected = "connected" if values.get("cityops_ingest_broker_connected") else "DISCONNECTED"
        reasons = ", ".join(f"{reason} {int(count)}" for reason, count in top)
        return (
            f"{connected} | received {int(received):,} | accepted {int(accepted):,} ({rate:,.0f}/s) | "
            f"rejected {int(rejected):,}{' (' + reasons + ')' if reasons else ''} | "
            f"in flight {int(values.get('cityops_ingest_inflight_messages', 0))}"
        )

    return line


async def run_ingest(settings: Settings, *, live: bool) -> None:
    catalogue = load_catalogue()
    metrics = IngestMetrics()
    _serve_metrics(metrics.registry, settings.ingest.metrics_host, settings.ingest.metrics_port, "ingest")
    limits = Limits(
        max_payload_bytes=settings.ingest.max_payload_bytes,
        max_samples=settings.ingest.max_samples,
        max_future=timedelta(seconds=settings.ingest.max_future_s),
        max_age=timedelta(seconds=settings.ingest.max_age_s),
    )
    config = BridgeConfig(
        host=settings.mqtt.host,
        port=settings.mqtt.port,
        username=settings.mqtt.ingest_username,
        password=settings.mqtt.ingest_password.get_secret_value(),
        client_id=f"cityops-ingest-{settings.ingest.instance}",
        receive_maximum=settings.ingest.receive_maximum,
    )
    producer = make_producer(settings, f"cityops-ingest-{settings.ingest.instance}")
    await producer.start()
    bridge = IngestBridge(
        config, producer, device_directory_loader(settings, catalogue), metrics, TelemetryDecoder({}, limits)
    )
    stop = asyncio.Event()
    _install_stop(stop)
    summary = ingest_summary(metrics)
    reporters = [
        asyncio.create_task(_every(10.0, lambda: log.info("ingest", extra={"fields": {"summary": summary()}})))
    ]
    if live:
        reporters.append(asyncio.create_task(_every(1.0, lambda: _status_line(summary()))))
    try:
        await bridge.run(stop)
    finally:
        for task in reporters:
            task.cancel()
        await producer.stop()
        if live:
            sys.stdout.write("\n")
        log.info("ingest stopped", extra={"fields": {"summary": summary()}})


async def run_persist(settings: Settings) -> None:
    metrics = PersistMetrics()
    _serve_metrics(metrics.registry, settings.persist.metrics_host, settings.persist.metrics_port, "persist")
    pool = await asyncio.to_thread(open_pool, settings.db.conninfo(), min_size=1, max_size=2, name="cityops-persist")
    try:
        with pool.connection() as conn:
            rollups = readings_rollups_kept_by_application(conn)
        persister = Persister(
            PersistConfig(
                bootstrap_servers=settings.kafka.bootstrap_servers,
                max_batch_rows=settings.persist.max_batch_rows,
                max_batch_age_s=settings.persist.max_batch_age_s,
            ),
            pool,
            ReadingSink(rollups=rollups),
            metrics,
        )
        stop = asyncio.Event()
        _install_stop(stop)
        await persister.run(stop)
    finally:
        pool.close()


def _status_line(text: str) -> None:
    sys.stdout.write("\r\x1b[2K" + text)
    sys.stdout.flush()
