"""Apache Kafka 3.9 in KRaft mode, one node, started with ``java -cp`` from the jars Maven fetched."""

from __future__ import annotations

import asyncio
import base64
import logging
import string
import subprocess
import uuid
from collections.abc import Callable, Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from cityops.paths import INFRA_DIR
from cityops.services.base import Health, ManagedService, MissingDependencyError, ServiceError, require_binary
from streams.topology import TOPICS, TopicSpec

KAFKA_VERSION = "3.9.1"
_INSTALL_JAVA = "sudo apt-get install -y openjdk-17-jre-headless   (or: make install)"


def _install_jars(libs: str) -> str:
    return (
        f"mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory={libs}   (or: make install)"
    )


def new_cluster_id(draw: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid`` makes one: 16 random bytes in URL-safe base64 without
    padding, never starting with ``-`` (the storage tool would read such an id as an option and refuse it)."""
    while True:
        candidate = base64.urlsafe_b64encode(draw()).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


class Kafka(ManagedService):
    name = "kafka"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.kafka.port, self.settings.kafka.controller_port)

    @property
    def libs_dir(self) -> str:
        return str(self.settings.services.kafka_libs_dir.resolve())

    def check_installed(self) -> None:
        require_binary(self.name, self.settings.services.java_bin, _INSTALL_JAVA)
        jar = self.settings.services.kafka_libs_dir / f"kafka_2.13-{KAFKA_VERSION}.jar"
        if not jar.exists():
            raise MissingDependencyError(
                self.name, f"the Kafka {KAFKA_VERSION} broker jars ({jar})", _install_jars(self.libs_dir)
            )

    def _java(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        java = require_binary(self.name, self.settings.services.java_bin, _INSTALL_JAVA)
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}" if heap != "256m" else "-Xms64m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{INFRA_DIR / 'kafka' / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        for sub in ("config", "data", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        kafka_settings = self.settings.kafka
        template = string.Template((INFRA_DIR / "kafka" / "server.properties.tmpl").read_text())
        properties = template.substitute(
            version=KAFKA_VERSION,
            host=kafka_settings.host,
            port=kafka_settings.port,
            controller_port=kafka_settings.controller_port,
            data_dir=self.home / "data",
        )
        config_path = self.home / "config" / "server.properties"
        config_path.write_text(properties)
        if not (self.home / "data" / "meta.properties").exists():
            self._format_storage()

    def _format_storage(self) -> None:
        """Format the KRaft metadata log once; the cluster id is kept so re-formatting never happens by accident."""
        cluster_id_path = self.home / "cluster.id"
        kept = cluster_id_path.read_text().strip() if cluster_id_path.exists() else ""
        if not kept or kept.startswith("-"):  # none yet, or one an older cityops drew that formatting refused
            cluster_id_path.write_text(new_cluster_id() + "\n")
        cluster_id = cluster_id_path.read_text().strip()
        command = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.home / "config" / "server.properties"),
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"kafka: formatting storage failed:\n{result.stdout}\n{result.stderr}")

    def spawn(self) -> None:
        command = self._java(
            "kafka.Kafka", str(self.home / "config" / "server.properties"), heap=self.settings.kafka.heap
        )
        self._popen(command)

    def probe(self) -> Health:
        try:
            return asyncio.run(self._probe())
        except (KafkaError, OSError, TimeoutError) as error:
            return Health(False, f"no answer from {self.settings.kafka.bootstrap_servers}: {error!r}")

    async def _probe(self) -> Health:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka.bootstrap_servers, request_timeout_ms=3000)
        with _quiet("aiokafka"):
            await asyncio.wait_for(admin.start(), timeout=4)
            try:
                cluster = await asyncio.wait_for(admin.describe_cluster(), timeout=4)
            finally:
                await admin.close()
        brokers = cluster.get("brokers", [])
        if not brokers:
            return Health(False, "broker answered but reports no live brokers yet")
        return Health(True, f"KRaft cluster {cluster.get('cluster_id')} with {len(brokers)} broker(s)")

    def after_healthy(self) -> None:
        asyncio.run(ensure_topics(self.settings.kafka.bootstrap_servers, TOPICS))


async def ensure_topics(bootstrap_servers: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet, with their partition counts; return the names created now.

    An existing topic with another partition count than its spec is an error: adding partitions later would move
    keys (devices) to other partitions and split their rule state.
    """
    specs = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        listed = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in listed]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(
                [NewTopic(s.name, s.partitions, 1, topic_configs=s.config()) for s in missing]
            )
            # CreateTopics reports per-topic errors in its response rather than raising.
            failures = []
            for name, error_code, message in response.topic_errors:
                if error_code == 0:
                    created.append(name)
                elif error_code != _TOPIC_ALREADY_EXISTS:  # created meanwhile (or listed late): checked below
                    failures.append(f"{name}: {message or f'error code {error_code}'}")
            if failures:
                raise ServiceError("kafka: could not create topics: " + "; ".join(failures))
        await _wait_for_leaders(admin, [spec.name for spec in specs])
        described = await admin.describe_topics([spec.name for spec in specs])
        counts = {entry["topic"]: len(entry["partitions"]) for entry in described}
        wrong = [
            f"{s.name} has {counts[s.name]}, expected {s.partitions}" for s in specs if counts[s.name] != s.partitions
        ]
        if wrong:
            raise ServiceError("kafka: topics exist with the wrong partition count: " + "; ".join(wrong))
    finally:
        await admin.close()
    return created


_TOPIC_ALREADY_EXISTS = 36


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15.0) -> None:
    """New partitions take a moment to elect a leader; producing before that fails with NotLeaderForPartition."""
    async with asyncio.timeout(timeout_s):
        while True:
            described = await admin.describe_topics(names)
            if all(
                entry.get("error_code", 0) == 0
                and entry["partitions"]
                and all(p["leader"] >= 0 for p in entry["partitions"])
                for entry in described
            ):
                return
            await asyncio.sleep(0.1)


class _quiet:
    """Silence a library's connection-refused noise while we poll a broker that is still starting."""

    def __init__(self, logger_name: str) -> None:
        self.logger = logging.getLogger(logger_name)
        self.level = self.logger.level

    def __enter__(self) -> None:
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
