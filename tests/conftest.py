"""Settings for tests: a state folder and ports of their own, so a running demo is never touched."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from cityops.paths import DEFAULT_STATE_DIR
from cityops.settings import (
    ApiSettings,
    DashboardSettings,
    DbSettings,
    IngestSettings,
    KafkaSettings,
    MqttSettings,
    PersistSettings,
    Settings,
)


def make_settings(state_dir: Path, port_base: int) -> Settings:
    """Settings for an isolated instance: every port is ``port_base`` + a fixed offset, secrets are random."""

    def secret() -> SecretStr:
        return SecretStr(secrets.token_urlsafe(16))

    return Settings(
        state_dir=state_dir,
        mqtt=MqttSettings(
            port=port_base + 883,
            tls_port=port_base + 884,
            ingest_password=secret(),
            dispatch_password=secret(),
            observer_password=secret(),
        ),
        kafka=KafkaSettings(port=port_base + 92, controller_port=port_base + 93, heap="512m"),
        db=DbSettings(port=port_base + 433, password=secret()),
        api=ApiSettings(port=port_base + 800, token_secret=secret()),
        dashboard=DashboardSettings(port=port_base + 850, session_secret=secret()),
        ingest=IngestSettings(metrics_port=port_base + 108),
        persist=PersistSettings(metrics_port=port_base + 109),
    )


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings(DEFAULT_STATE_DIR / "test", 21000)


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that makes a `cityops` subprocess build exactly ``settings`` (plus ``overrides``)."""
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith("CITYOPS_")}

    def flatten(prefix: str, data: dict[str, object]) -> None:
        for key, value in data.items():
            name = f"{prefix}__{key.upper()}" if prefix else f"CITYOPS_{key.upper()}"
            if isinstance(value, dict):
                flatten(name, value)
            elif value is not None:
                env[name] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    flatten("", settings.model_dump())
    env.update(overrides)
    return env
