"""The one settings object. Built once, by the CLI, from ``CITYOPS_``-prefixed environment variables.

Nested sections use ``__``: ``CITYOPS_MQTT__PORT=1884``, ``CITYOPS_DB__PASSWORD=...``. Library code receives the
section it needs as an argument and never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityops.paths import DEFAULT_STATE_DIR

Host = str
Port = int


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttSettings(_Section):
    host: Host = "127.0.0.1"
    port: Port = Field(1883, ge=1, le=65535)
    tls_port: Port = Field(8883, ge=1, le=65535, description="TLS listener for devices in the field")
    ingest_username: str = "cityops-ingest"
    ingest_password: SecretStr
    dispatch_username: str = "cityops-dispatch"
    dispatch_password: SecretStr
    observer_username: str = "cityops-observer"
    observer_password: SecretStr
    keepalive_s: int = Field(30, ge=5)
    max_payload_bytes: int = Field(65536, ge=256, description="broker-side limit; ingest applies its own too")


class KafkaSettings(_Section):
    host: Host = "127.0.0.1"
    port: Port = Field(9092, ge=1, le=65535)
    controller_port: Port = Field(9093, ge=1, le=65535, description="KRaft controller listener (local broker)")
    heap: str = Field("768m", pattern=r"^\d+[mg]$")
    client_id: str = "cityops"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"


class DbSettings(_Section):
    host: Host = "127.0.0.1"
    port: Port = Field(5433, ge=1, le=65535)
    name: str = "cityops"
    user: str = "cityops"
    password: SecretStr
    timescale: Literal["auto", "on", "off"] = Field(
        "auto", description="use TimescaleDB when the extension is available (auto), require it (on) or not (off)"
    )
    pool_min: int = Field(1, ge=1)
    pool_max: int = Field(8, ge=1)

    def conninfo(self) -> str:
        """A libpq connection string; the password is revealed only here, where the driver needs it."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.name,
            user=self.user,
            password=self.password.get_secret_value(),
            application_name="cityops",
        )


class ApiSettings(_Section):
    host: Host = "127.0.0.1"
    port: Port = Field(8000, ge=1, le=65535)
    token_secret: SecretStr
    token_ttl_s: int = Field(8 * 3600, ge=60, le=7 * 24 * 3600, description="lifetime of a bearer token (a shift)")
    public_url: str | None = Field(None, description="the API's address as clients see it (Open311 discovery)")
    open311_contact: str = Field("Write to the city's operations centre.", description="Open311 discovery contact")
    open311_key_service: str = Field(
        "Ask the operations centre for a key (cityops api-keys add NAME).", description="how to get an Open311 key"
    )


class DashboardSettings(_Section):
    host: Host = "127.0.0.1"
    port: Port = Field(8050, ge=1, le=65535)
    session_secret: SecretStr
    tiles_url: str | None = Field(None, description="optional XYZ base-map tiles; the map works without them")
    refresh_s: float = Field(5.0, gt=0)
    api_url: str | None = Field(None, description="the HTTP API the dashboard acts through; default: the api section")
    map_marker_limit: int = Field(2000, ge=0, description="above this many devices the wall map draws grid cells")
    wall_rotate_s: float = Field(30.0, gt=0, description="wall mode: seconds per view (city, hot district, SLA)")
    wall_pause_s: float = Field(120.0, ge=0, description="wall mode: rotation pauses this long after interaction")


class IngestSettings(_Section):
    instance: str = Field("1", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="one per bridge; names its MQTT session")
    metrics_host: Host = "127.0.0.1"
    metrics_port: Port = Field(9108, ge=1, le=65535)
    max_payload_bytes: int = Field(32768, ge=256)
    max_samples: int = Field(500, ge=1)
    max_future_s: float = Field(300.0, ge=0, description="how far ahead of our clock a device's ts may be")
    max_age_s: float = Field(7 * 24 * 3600.0, gt=0, description="how old a (buffered) sample may be")
    receive_maximum: int = Field(1000, ge=1, le=65535)


class PersistSettings(_Section):
    metrics_host: Host = "127.0.0.1"
    metrics_port: Port = Field(9109, ge=1, le=65535)
    max_batch_rows: int = Field(5000, ge=1)
    max_batch_age_s: float = Field(0.25, gt=0)


class DispatchSettings(_Section):
    """`cityops dispatch`: incidents to work orders to crews, SLA timers, verification (docs/DISPATCH.md)."""

    instance: str = Field("1", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="one per dispatcher; names its session")
    metrics_host: Host = "127.0.0.1"
    metrics_port: Port = Field(9110, ge=0, le=65535, description="0: no metrics endpoint")
    group_id: str = Field("cityops-dispatch", description="Kafka consumer groups: <group_id>.incidents, .crew-updates")
    incidents_topic: str = "incidents"
    crew_updates_topic: str = "crew.updates"
    crew_updates_dlq_topic: str = "crew.updates.dlq"
    mqtt_share_group: str = Field("dispatch", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    mqtt_session_expiry_s: int = Field(24 * 3600, ge=0)
    hold_s: float = Field(90.0, ge=0, description="how long a correlatable device incident waits for a parent")
    hold_exempt_families: str = Field("gas,fire", description="comma-separated category families never held")
    timer_interval_s: float = Field(2.0, gt=0)
    relay_poll_s: float = Field(0.2, gt=0, description="how often the outbox is looked at when nothing woke it")
    relay_batch: int = Field(200, ge=1)
    publish_timeout_s: float = Field(15.0, gt=0)
    reassign_unacknowledged: bool = True
    workload_penalty_s: float = Field(1800.0, ge=0, description="what one open work order costs a crew in choice")
    sla_file: Path | None = Field(None, description="service levels (default: domain/catalogue/sla.toml)")
    pool_max: int = Field(4, ge=1)

    @property
    def exempt_families(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.hold_exempt_families.split(",") if part.strip())


class CitySettings(_Section):
    pack: str = Field(
        "helsinki", description="the city pack this deployment runs: a name under gis/packs/ or a folder path"
    )


class ServicesSettings(_Section):
    """How the local supervisor runs the real services from the machine's packages."""

    start_timeout_s: float = Field(90.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)
    pg_bindir: Path = Path("/usr/lib/postgresql/15/bin")
    mosquitto_bin: str = "mosquitto"
    java_bin: str = "java"
    mvn_bin: str = "mvn"
    kafka_libs_dir: Path = Field(DEFAULT_STATE_DIR / "kafka-libs", description="shared by every state folder")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CITYOPS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    state_dir: Path = DEFAULT_STATE_DIR
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    profile_path: Path | None = Field(None, description="profile a long-running command (cProfile) into this file")
    mqtt: MqttSettings
    kafka: KafkaSettings = KafkaSettings()
    db: DbSettings
    api: ApiSettings
    dashboard: DashboardSettings
    ingest: IngestSettings = IngestSettings()
    persist: PersistSettings = PersistSettings()
    dispatch: DispatchSettings = DispatchSettings()
    city: CitySettings = CitySettings()
    services: ServicesSettings = ServicesSettings()


def explain_settings_error(error: ValidationError) -> str:
    """Each problem with the environment it comes from, e.g. ``CITYOPS_DB__PASSWORD: required, not set``."""
    lines = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        if problem["type"] == "missing":
            names = _required_variables(location)
            lines.append(f"{', '.join(names)}: required, not set")
        else:
            variable = "CITYOPS_" + "__".join(part.upper() for part in location)
            lines.append(f"{variable}: {problem['msg']}")
    return "\n".join(lines)


def _required_variables(location: list[str]) -> list[str]:
    """A missing section is reported by pydantic as one error; name each required variable inside it."""
    model: type[BaseModel] = Settings
    for part in location:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return ["CITYOPS_" + "__".join(p.upper() for p in location)]
    prefix = "CITYOPS_" + "__".join(p.upper() for p in location)
    return [f"{prefix}__{name.upper()}" for name, field in model.model_fields.items() if field.is_required()]


def isolated_settings(state_dir: Path, port_base: int, *, kafka_heap: str = "512m") -> Settings:
    """Settings for an instance of its own (tests, benchmarks): its own state folder, every port at
    ``port_base`` + a fixed offset, fresh random secrets. Nothing is read from the environment."""
    import secrets as random_secrets

    def secret() -> SecretStr:
        return SecretStr(random_secrets.token_urlsafe(16))

    return Settings(
        state_dir=state_dir,
        mqtt=MqttSettings(
            port=port_base + 883,
            tls_port=port_base + 884,
            ingest_password=secret(),
            dispatch_password=secret(),
            observer_password=secret(),
        ),
        kafka=KafkaSettings(port=port_base + 92, controller_port=port_base + 93, heap=kafka_heap),
        db=DbSettings(port=port_base + 433, password=secret()),
        api=ApiSettings(port=port_base + 800, token_secret=secret()),
        dashboard=DashboardSettings(port=port_base + 850, session_secret=secret()),
        ingest=IngestSettings(metrics_port=port_base + 108),
        persist=PersistSettings(metrics_port=port_base + 109),
    )


def settings_environment(settings: Settings, base: dict[str, str], **overrides: str) -> dict[str, str]:
    """An environment (``base`` without its CITYOPS_ variables) from which a `cityops` process builds ``settings``."""
    env = {key: value for key, value in base.items() if not key.startswith("CITYOPS_")}

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
