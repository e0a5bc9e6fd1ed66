"""A PostgreSQL killed with SIGKILL leaves lock files naming its pid; a new postmaster refuses to start while that
pid still answers kill(0), which an unreaped (zombie) postmaster does. cityops.services.postgres removes them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cityops.services.postgres import Postgres
from cityops.settings import isolated_settings


def _zombie() -> int:
    """A child that has exited and that nobody reaped yet."""
    child = subprocess.Popen(["true"])  # never waited for, on purpose
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z":
            break
        time.sleep(0.01)
    child.returncode = 0  # keep Popen from warning that it still runs; the zombie stays until the test ends
    return child.pid


def _write_locks(postgres: Postgres, pid: int) -> tuple[Path, Path]:
    postgres.data_dir.mkdir(parents=True)
    postgres.socket_dir.mkdir(parents=True)
    data_lock = postgres.data_dir / "postmaster.pid"
    socket_lock = postgres.socket_dir / f".s.PGSQL.{postgres.settings.db.port}.lock"
    for lock in (data_lock, socket_lock):
        lock.write_text(f"{pid}\n/some/data\n")
    return data_lock, socket_lock


def test_the_lock_files_of_a_killed_unreaped_postmaster_are_removed(tmp_path: Path) -> None:
    postgres = Postgres(isolated_settings(tmp_path / "state", 45000))
    zombie = _zombie()
    os.kill(zombie, 0)  # what PostgreSQL checks: a zombie still answers
    data_lock, socket_lock = _write_locks(postgres, zombie)
    postgres._remove_stale_lock()
    assert not data_lock.exists()
    assert not socket_lock.exists()
    os.waitpid(zombie, 0)


def test_the_lock_files_of_a_running_postmaster_are_kept(tmp_path: Path) -> None:
    postgres = Postgres(isolated_settings(tmp_path / "state", 45000))
    data_lock, socket_lock = _write_locks(postgres, os.getpid())
    postgres._remove_stale_lock()
    assert data_lock.exists()
    assert socket_lock.exists()
