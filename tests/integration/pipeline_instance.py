"""An instance of its own for tests that run the whole pipeline (and kill its services): a state folder under the
test slot's and ports 40 above the slot's, so the session's shared services are never touched or polluted."""

from __future__ import annotations

from pathlib import Path

from cityops.settings import Settings

PORT_OFFSET = 40  # the slot's own ports are base + 92 ... 884; base + 40 + the same offsets collide with none


def instance_location(session: Settings, name: str) -> tuple[Path, int]:
    """(state folder, port base) of a test instance named ``name`` inside the session's slot."""
    slot_base = session.kafka.port - 92  # isolated_settings puts Kafka at port_base + 92
    return session.state_dir / name, slot_base + PORT_OFFSET
