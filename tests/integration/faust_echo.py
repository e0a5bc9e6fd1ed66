"""A minimal faust app for the foundation test: one agent that consumes one topic and produces to another.

Run by tests/integration/test_kafka.py as a real worker process:
``faust -A tests.integration.faust_echo worker``, configured through ECHO_* environment variables.
"""

from __future__ import annotations

import os
from typing import Any

import faust
from faust.types import StreamT

app = faust.App(
    os.environ.get("ECHO_APP_ID", "cityops-test-echo"),
    broker=f"kafka://{os.environ.get('ECHO_BROKER', '127.0.0.1:9092')}",
    store="memory://",
    datadir=os.environ.get("ECHO_DATADIR", "/tmp/cityops-faust-echo"),
    web_enabled=False,
    topic_replication_factor=1,
)
source = app.topic(os.environ.get("ECHO_SOURCE", "echo.in"), value_serializer="json")
sink = app.topic(os.environ.get("ECHO_SINK", "echo.out"), value_serializer="json")


@app.agent(source)
async def echo(stream: StreamT[Any]) -> None:
    async for event in stream:
        await sink.send(key=str(event["n"]), value={"echo": event["n"], "by": "faust"})
