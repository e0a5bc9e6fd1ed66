"""The baseline: a bare MQTT subscriber that acknowledges and counts, nothing else.

It uses the same client stack as the ingest bridge (paho on the asyncio loop with buffered reads, QoS 1, manual
acknowledgement), so the pipeline's throughput divided by this one says what validation, Kafka and the database
cost on top of the broker. Prints a JSON line every half second: ``{"t_ms": ..., "received": ...}``.

    python -m cityops.bench.sink --host H --port P --username U --password-env VAR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.mqtt_loop import AsyncioMqttDriver, BufferedClient


async def run(host: str, port: int, username: str, password: str) -> None:
    received = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="bench-sink", protocol=mqtt.MQTTv5, manual_ack=True)
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(1000)

    def on_connect(c: mqtt.Client, u: object, f: mqtt.ConnectFlags, reason: ReasonCode, p: Properties | None) -> None:
        c.subscribe("$share/bench/city/telemetry/+", options=SubscribeOptions(qos=1))

    def on_message(c: mqtt.Client, u: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        c.ack(message.mid, message.qos)

    client.on_connect = on_connect
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = 1000
    driver = AsyncioMqttDriver(client, loop)
    driver.start(host, port, keepalive=30, clean_start=True, properties=properties)
    while not stop.is_set():
        print(json.dumps({"t_ms": int(time.time() * 1000), "received": received}), flush=True)  # noqa: T201
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    print(json.dumps({"t_ms": int(time.time() * 1000), "received": received}), flush=True)  # noqa: T201
    await driver.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-env", required=True, help="the variable holding the password")
    args = parser.parse_args(argv)
    asyncio.run(run(args.host, args.port, args.username, os.environ[args.password_env]))


if __name__ == "__main__":
    main()
