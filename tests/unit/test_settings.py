from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cityops.secrets import LOCAL_SECRET_VARIABLES, ensure_local_secrets
from cityops.settings import Settings, explain_settings_error

REQUIRED = {
    "CITYOPS_MQTT__INGEST_PASSWORD": "i",
    "CITYOPS_MQTT__DISPATCH_PASSWORD": "d",
    "CITYOPS_MQTT__OBSERVER_PASSWORD": "o",
    "CITYOPS_DB__PASSWORD": "p",
    "CITYOPS_API__TOKEN_SECRET": "t",
    "CITYOPS_DASHBOARD__SESSION_SECRET": "s",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_nested_sections_come_from_prefixed_variables(env: pytest.MonkeyPatch) -> None:
    env.setenv("CITYOPS_MQTT__PORT", "1999")
    env.setenv("CITYOPS_KAFKA__HOST", "kafka")
    settings = Settings()
    assert settings.mqtt.port == 1999
    assert settings.kafka.bootstrap_servers == "kafka:9092"


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.log_level = "DEBUG"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.mqtt.port = 1  # type: ignore[misc]


def test_secrets_never_show_in_reprs(env: pytest.MonkeyPatch) -> None:
    env.setenv("CITYOPS_DB__PASSWORD", "hunter2-very-secret")
    settings = Settings()
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert "hunter2-very-secret" in settings.db.conninfo()


def test_a_missing_secret_is_a_precise_error(env: pytest.MonkeyPatch) -> None:
    env.delenv("CITYOPS_DB__PASSWORD")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert explain_settings_error(raised.value) == "CITYOPS_DB__PASSWORD: required, not set"


def test_out_of_range_port_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("CITYOPS_DB__PORT", "70000")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert explain_settings_error(raised.value) == "CITYOPS_DB__PORT: Input should be less than or equal to 65535"


def test_local_secrets_are_generated_once_private_and_completed(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secrets.env"
    path.parent.mkdir()
    path.write_text("CITYOPS_DB__PASSWORD=kept\n")
    ensure_local_secrets(path)
    first = path.read_text()
    assert "CITYOPS_DB__PASSWORD=kept" in first
    assert all(name in first for name in LOCAL_SECRET_VARIABLES)
    assert path.stat().st_mode & 0o777 == 0o600
    ensure_local_secrets(path)
    assert path.read_text() == first
