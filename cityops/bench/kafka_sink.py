"""The baseline of `cityops bench rules`: a bare aiokafka consumer of the readings topic that counts and does
nothing else (no decoding, no state). The worker's throughput divided by this one says what decoding, the rules and
the changelog cost on top of consuming. Prints ``{"t_ms": ..., "received": ...}`` every half second.

    python -m cityops.bench.kafka_sink --broker H:P --topic bench.readings
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer


async def run(broker: str, topic: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        enable_auto_commit=True,
        max_poll_records=2000,
    )
    await consumer.start()
    received = 0
    last_print = 0.0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            received += sum(len(records) for records in batch.values())
            if time.time() - last_print >= 0.5:
                last_print = time.time()
                print(json.dumps({"t_ms": int(last_print * 1000), "received": received}), flush=True)  # noqa: T201
    finally:
        print(json.dumps({"t_ms": int(time.time() * 1000), "received": received}), flush=True)  # noqa: T201
        await consumer.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args(argv)
    asyncio.run(run(args.broker, args.topic))


if __name__ == "__main__":
    main()
