"""docker-compose.yml, the Dockerfile and .env.example cannot run here (no Docker engine); keep them consistent
with the local path: the same settings names, the same broker version, every package in the image."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml
from pydantic import BaseModel

from cityops.paths import REPO_ROOT
from cityops.secrets import LOCAL_SECRET_VARIABLES
from cityops.services.kafka import KAFKA_VERSION
from cityops.settings import Settings

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _setting_exists(variable: str) -> bool:
    parts = variable.removeprefix("CITYOPS_").lower().split("__")
    model: type[BaseModel] = Settings
    for part in parts[:-1]:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return False
        model = field.annotation
    return parts[-1] in model.model_fields


def _compose_variables() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.startswith("CITYOPS_"):
                    found.add(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            found.update(re.findall(r"CITYOPS_[A-Z_]+", node))

    walk(COMPOSE)
    return found


def test_every_cityops_variable_in_compose_is_a_real_setting() -> None:
    variables = _compose_variables()
    assert variables, "compose should configure the app through CITYOPS_ variables"
    unknown = sorted(v for v in variables if not _setting_exists(v))
    assert unknown == []


def test_env_example_lists_exactly_the_secrets() -> None:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert sorted(names) == sorted(LOCAL_SECRET_VARIABLES)
    assert all(_setting_exists(name) for name in names)


def test_compose_runs_the_same_kafka_and_a_timescale_postgis_database() -> None:
    services = COMPOSE["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["db"]["image"].startswith("timescale/timescaledb-ha:pg15")
    assert services["init"]["command"] == ["init"]


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_the_image_contains_every_package_of_the_distribution() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, re.M))
    assert set(packages) <= copied
    assert "infra" in copied


def test_the_kafka_pom_and_the_supervisor_agree_on_the_version() -> None:
    pom = (REPO_ROOT / "infra" / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom


def test_every_app_process_in_compose_is_a_cityops_command() -> None:
    from typer.main import get_command

    from cityops.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    app_services = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "cityops:latest"}
    assert {"init", "ingest", "persist", "worker", "dispatch", "api", "dashboard"} <= set(app_services)
    for name, service in app_services.items():
        assert service["command"][0] in commands, f"{name} runs an unknown command {service['command']}"
