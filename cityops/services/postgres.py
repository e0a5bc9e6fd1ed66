"""PostgreSQL 15 with PostGIS (Debian packages) as a cluster owned by the project, inside the state folder.

TimescaleDB is preloaded and created when its extension is installed on the machine and the settings allow it;
otherwise the schema takes its plain-PostgreSQL path (see infra/db/README.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from cityops.services.base import (
    Health,
    ManagedService,
    MissingDependencyError,
    ServiceError,
    chown_tree,
    pid_alive,
    running_as_root,
    system_user_exists,
)

_INSTALL = "sudo apt-get install -y postgresql-15 postgresql-15-postgis-3   (or: make install)"
_SUPERUSER = "postgres"


class Postgres(ManagedService):
    name = "postgres"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.data_dir = self.home / "data"
        self.socket_dir = self.home / "run"
        # The server writes its own log, so it lives where the server's user may write.
        self.log_path = self.home / "postgres.log"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.db.port,)

    @property
    def bindir(self) -> Path:
        return self.settings.services.pg_bindir

    def _pg_config(self, flag: str) -> Path:
        out = subprocess.run([str(self.bindir / "pg_config"), flag], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())

    def check_installed(self) -> None:
        for program in ("postgres", "initdb", "pg_ctl", "pg_config"):
            if not (self.bindir / program).exists():
                raise MissingDependencyError(self.name, f"PostgreSQL 15 ({self.bindir / program})", _INSTALL)
        if not (self._pg_config("--sharedir") / "extension" / "postgis.control").exists():
            raise MissingDependencyError(self.name, "the PostGIS extension for PostgreSQL 15", _INSTALL)
        if running_as_root() and not system_user_exists(_SUPERUSER):
            raise MissingDependencyError(
                self.name, "the 'postgres' system user (PostgreSQL refuses to run as root)", _INSTALL
            )

    def timescale_installed(self) -> bool:
        libdir = self._pg_config("--pkglibdir")
        control = self._pg_config("--sharedir") / "extension" / "timescaledb.control"
        return control.exists() and any(libdir.glob("timescaledb*.so"))

    def use_timescale(self) -> bool:
        mode = self.settings.db.timescale
        installed = self.timescale_installed()
        if mode == "on" and not installed:
            raise MissingDependencyError(
                self.name,
                "TimescaleDB (CITYOPS_DB__TIMESCALE=on)",
                "install timescaledb-2-postgresql-15 from Timescale's repository",
            )
        return mode != "off" and installed

    # -- running commands as the cluster's owner -----------------------------------------------------------
    def _as_owner(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", _SUPERUSER, "--", *command] if running_as_root() else command

    def _check_reachable_by_owner(self) -> None:
        if not running_as_root():
            return
        for parent in reversed(self.home.parents):
            if parent.exists() and not os.stat(parent).st_mode & 0o001:
                raise ServiceError(
                    f"postgres: the server runs as user 'postgres', which cannot enter {parent} (mode "
                    f"{oct(os.stat(parent).st_mode & 0o777)}). Set CITYOPS_STATE_DIR to a folder it can reach, "
                    f"or run `chmod o+x {parent}`."
                )

    # -- lifecycle -----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        self._check_reachable_by_owner()
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if running_as_root():
            chown_tree(self.home, _SUPERUSER)
        if not (self.data_dir / "PG_VERSION").exists():
            result = subprocess.run(
                self._as_owner(
                    [
                        str(self.bindir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        _SUPERUSER,
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ServiceError(f"postgres: initdb failed:\n{result.stdout}\n{result.stderr}")
        preload = "timescaledb" if self.use_timescale() else ""
        config = "\n".join(
            [
                "# written by cityops services up; settings from CITYOPS_DB__",
                f"listen_addresses = '{self.settings.db.host}'",
                f"port = {self.settings.db.port}",
                f"unix_socket_directories = '{self.socket_dir}'",
                f"shared_preload_libraries = '{preload}'",
                "max_connections = 200",
                "shared_buffers = 512MB",
                "work_mem = 16MB",
                "maintenance_work_mem = 256MB",
                "wal_buffers = 16MB",
                "max_wal_size = 2GB",
                "checkpoint_timeout = 10min",
                "timezone = 'UTC'",
                "log_timezone = 'UTC'",
                "log_min_duration_statement = 2000",
                "",
            ]
        )
        self._write_owned(self.data_dir / "cityops.conf", config)
        main_conf = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'cityops.conf'" not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write("\ninclude_if_exists = 'cityops.conf'\n")
        hba = "\n".join(
            [
                "# written by cityops services up",
                "# the socket lives in the private state folder; only the cluster's owner and root reach it",
                f"local   all   {_SUPERUSER}   trust",
                "local   all   all   scram-sha-256",
                "host    all   all   127.0.0.1/32   scram-sha-256",
                "",
            ]
        )
        self._write_owned(self.data_dir / "pg_hba.conf", hba)

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        if running_as_root():
            chown_tree(path, _SUPERUSER)

    def recorded_pid(self) -> int | None:
        """The postmaster's pid from its own pid file, if that process runs on our data folder."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        from cityops.services.base import process_cmdline

        if not pid_alive(pid) or str(self.data_dir) not in process_cmdline(pid):
            return None
        return pid

    def spawn(self) -> None:
        self._remove_stale_lock()
        result = subprocess.run(
            self._as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-W", "start"]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"postgres: pg_ctl start failed:\n{result.stdout}\n{result.stderr}")

    def _remove_stale_lock(self) -> None:
        """A postmaster killed with SIGKILL leaves its lock files (``postmaster.pid`` in the data folder, and
        ``.s.PGSQL.<port>.lock`` beside its socket). PostgreSQL ignores a stale one, except when the pid in it still
        answers ``kill(pid, 0)``: a killed postmaster that nobody has reaped yet (its parent, pg_ctl, exited long
        ago; an init that reaps orphans late, as in some containers) is such a zombie, and a new postmaster then
        refuses to start ("lock file ... already exists"). Remove the files whose pid is not a running process."""
        for lock in (self.data_dir / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.settings.db.port}.lock"):
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not pid_alive(pid):
                lock.unlink(missing_ok=True)

    def wait_healthy(self, deadline: float) -> Health:
        # pg_ctl -W returns before the postmaster writes its pid file; give it that moment before judging.
        import time

        while self.recorded_pid() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return super().wait_healthy(deadline)

    def superuser_connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.settings.db.port,
            user=_SUPERUSER,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def probe(self) -> Health:
        try:
            with self.superuser_connect() as conn:
                row = conn.execute("SELECT current_setting('server_version')").fetchone()
        except psycopg.Error as error:
            return Health(False, f"cannot connect: {str(error).strip()}")
        return Health(True, f"PostgreSQL {row[0] if row else '?'} accepting connections")

    def after_healthy(self) -> None:
        """The application role and database, with PostGIS (and TimescaleDB when used) created as superuser."""
        db = self.settings.db
        with self.superuser_connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db.user,)).fetchone()
            verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    verb, sql.Identifier(db.user), sql.Literal(db.password.get_secret_value())
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.name), sql.Identifier(db.user))
                )
        with self.superuser_connect(db.name) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            if self.use_timescale():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    def stop(self) -> bool:
        if self.recorded_pid() is None:
            return False
        result = subprocess.run(
            self._as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 and self.recorded_pid() is not None:
            raise ServiceError(f"postgres: pg_ctl stop failed:\n{result.stdout}\n{result.stderr}")
        return True
