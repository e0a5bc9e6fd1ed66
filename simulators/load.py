"""Constant-rate load for benchmarks: a fleet of real device connections publishing readings on a schedule.

Run as a process of its own so it does not share a CPU core's time slices with what it measures:

    python -m simulators.load --credentials FILE --prefix bn- --schedule 2000:15,4000:15 --host H --port P

Each reading carries ``ts`` = the publish time (epoch ms), so the platform's stored rows give publish-to-row
latency. One JSON line per step goes to stdout: offered rate, wall-clock window, messages published and
acknowledged, and the publisher's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from simulators.mqtt_device import DeviceFleet


@dataclass(frozen=True, slots=True)
class Step:
    rate: float  # readings per second offered
    seconds: float


@dataclass(frozen=True, slots=True)
class StepResult:
    rate: float
    started_ms: int
    ended_ms: int
    published: int
    acknowledged: int
    refused: int
    publisher_cpu_s: float


def parse_schedule(text: str) -> list[Step]:
    steps = []
    for part in text.split(","):
        rate, _, seconds = part.partition(":")
        steps.append(Step(float(rate), float(seconds)))
    return steps


async def run(
    host: str, port: int, logins: dict[str, str], schedule: Sequence[Step], *, metric: str = "water_level_cm"
) -> list[StepResult]:
    fleet = DeviceFleet(host, port, last_will=False)
    await fleet.connect_all(logins)
    connections = [fleet.connections[d] for d in sorted(logins)]
    keepalive = asyncio.create_task(fleet.keepalive())
    results: list[StepResult] = []
    seq = 0
    try:
        for step in schedule:
            acked_before, refused_before = fleet.counters.acknowledged, fleet.counters.refused
            cpu_before = time.process_time()
            started = time.monotonic()
            started_ms = int(time.time() * 1000)
            sent = 0
            while (elapsed := time.monotonic() - started) < step.seconds:
                due = int(elapsed * step.rate) - sent
                for _ in range(due):
                    now_ms = int(time.time() * 1000)
                    payload = b'{"ts":%d,"seq":%d,"metrics":{"%s":%d}}' % (now_ms, seq, metric.encode(), seq % 300)
                    connections[seq % len(connections)].publish_telemetry(payload)
                    seq += 1
                    sent += 1
                await asyncio.sleep(0.002)
            ended_ms = int(time.time() * 1000)
            await fleet.drain(30)
            results.append(
                StepResult(
                    rate=step.rate,
                    started_ms=started_ms,
                    ended_ms=ended_ms,
                    published=sent,
                    acknowledged=fleet.counters.acknowledged - acked_before,
                    refused=fleet.counters.refused - refused_before,
                    publisher_cpu_s=time.process_time() - cpu_before,
                )
            )
            print(json.dumps(asdict(results[-1])), flush=True)  # noqa: T201 - the tool's output
    finally:
        keepalive.cancel()
        fleet.close()
        await asyncio.sleep(0.1)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials", type=Path, required=True, help="CSV username,password (from provisioning)")
    parser.add_argument("--prefix", required=True, help="use the devices whose id starts with this")
    parser.add_argument("--schedule", required=True, help="rate:seconds[,rate:seconds...]")
    args = parser.parse_args(argv)
    with args.credentials.open(newline="") as handle:
        logins = {
            row["username"]: row["password"]
            for row in csv.DictReader(handle)
            if row["username"].startswith(args.prefix)
        }
    if not logins:
        sys.exit(f"no credentials for devices starting with {args.prefix!r} in {args.credentials}")
    asyncio.run(run(args.host, args.port, logins, parse_schedule(args.schedule)))


if __name__ == "__main__":
    main()
