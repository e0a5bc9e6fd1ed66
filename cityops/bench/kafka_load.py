"""Load for `cityops bench rules`: readings produced straight into a Kafka topic, as ingest produces them (key: the
device id, value: domain.wire.encode_reading, acks=all), at stepped offered rates.

Water-level gauges report round robin. Every ``--trip-every``-th gauge is a *tripper*, new in each step: it reads
0, 20, 22, 2 and then 1 cm, so it opens one waterlogging incident (on its 22) and clears it; each opened event is
one latency sample (the 22's ``ts`` is its publish time). Each tripper has a grid cell of its own, so correlation
never groups them. One JSON line per step: ``{"rate", "started_ms", "ended_ms", "sent"}``.

    python -m cityops.bench.kafka_load --broker H:P --topic readings --devices 3000 --schedule 2000:20,0:5,...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from domain.readings import Reading
from domain.wire import encode_reading

TRIP = (0.0, 20.0, 22.0, 2.0)
QUIET = 1.0


def _reading(device_id: str, level: float, cell: str, now: datetime) -> bytes:
    return encode_reading(
        Reading(
            device_id=device_id,
            ts=now,
            metrics={"water_level_cm": level},
            ingested_at=now,
            device_type="water_level",
            grid_cell=cell,
        )
    )


async def run(broker: str, topic: str, devices: int, schedule: Sequence[tuple[float, float]], trip_every: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    counters = [0] * devices
    try:
        for step, (rate, seconds) in enumerate(schedule):
            if rate <= 0:
                await asyncio.sleep(seconds)
                continue
            started = time.time()
            sent = 0
            device = 0
            pending = []
            while (elapsed := time.time() - started) < seconds:
                due = int(elapsed * rate) - sent
                now = datetime.now(UTC)
                for _ in range(max(0, due)):
                    n = device
                    device = (device + 1) % devices
                    if trip_every and n % trip_every == 0:
                        index = counters[n]
                        counters[n] += 1
                        level = TRIP[index] if index < len(TRIP) else QUIET
                        device_id, cell = f"bt-{step}-{n:05d}", f"bench-t{step}-{n}"
                    else:
                        level, device_id, cell = 3.0, f"bq-{n:05d}", f"bench-q{n % 100}"
                    value = _reading(device_id, level, cell, now)
                    pending.append(await producer.send(topic, key=device_id.encode(), value=value))
                    sent += 1
                if len(pending) > 20_000:
                    await asyncio.gather(*pending)
                    pending.clear()
                await asyncio.sleep(0.005)
            await asyncio.gather(*pending)
            counters = [0] * devices  # the next step's trippers are new devices
            line = {"rate": rate, "started_ms": int(started * 1000), "ended_ms": int(time.time() * 1000), "sent": sent}
            print(json.dumps(line), flush=True)  # noqa: T201
    finally:
        await producer.stop()


def parse_schedule(text: str) -> list[tuple[float, float]]:
    steps = []
    for part in text.split(","):
        rate, seconds = part.split(":")
        steps.append((float(rate), float(seconds)))
    return steps


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--trip-every", type=int, default=20)
    parser.add_argument("--schedule", required=True, help="rate:seconds,... (rate 0 is a pause)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.broker, args.topic, args.devices, parse_schedule(args.schedule), args.trip_every))


if __name__ == "__main__":
    main()
