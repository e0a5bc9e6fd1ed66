"""Simulated time for a fleet: how fast the city's day runs, and what time devices write on their readings.

Two clocks, both pure functions of the wall time (epoch seconds) passed in:

* :meth:`Clock.wall` -- readings are stamped with the wall time, so every timestamp is inside the platform's skew
  window; the *simulated* time that drives the signals (daily cycles, scenario timelines) runs ``speed`` times
  faster from ``sim_start`` (by default: now). At ``speed`` 60 a scenario's hour passes in a minute and the noise
  of a whole day in 24 minutes, stamped with the minutes it really took.
* :meth:`Clock.backfill` -- simulated time starts in the past and runs ``speed`` times faster than the wall until
  it catches up with it, then goes on at the wall's pace; readings carry the simulated time. The platform sees
  a device history arriving fast (as a gateway flushing its backlog would), never in the future, and never older
  than the platform's 7-day limit (checked when the clock is made).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_AGE_S = 7 * 24 * 3600.0  # the platform refuses older samples (ingest.decode.Limits.max_age)
AGE_MARGIN_S = 3600.0  # a backfill starts at least this much inside the limit


class ClockKind(StrEnum):
    WALL = "wall"
    BACKFILL = "backfill"


class ClockError(ValueError):
    """A clock that would stamp readings the platform must refuse."""


@dataclass(frozen=True, slots=True)
class Clock:
    kind: ClockKind
    started_wall_s: float  # the wall time at which the run started
    sim_start_s: float  # the simulated time at that moment
    speed: float  # simulated seconds per wall second (before a backfill catches up)

    @classmethod
    def wall(cls, now_s: float, *, speed: float = 1.0, sim_start_s: float | None = None) -> Clock:
        if not speed > 0:
            raise ClockError(f"speed must be positive, got {speed}")
        return cls(ClockKind.WALL, now_s, now_s if sim_start_s is None else sim_start_s, speed)

    @classmethod
    def backfill(cls, now_s: float, *, sim_start_s: float, speed: float) -> Clock:
        if not speed > 0:
            raise ClockError(f"speed must be positive, got {speed}")
        if sim_start_s > now_s:
            raise ClockError("a backfill starts in the past; use a wall clock to start now or later")
        if now_s - sim_start_s > MAX_AGE_S - AGE_MARGIN_S:
            days = (now_s - sim_start_s) / 86400.0
            raise ClockError(
                f"a backfill from {days:.1f} days ago would send samples the platform refuses (older than 7 days)"
            )
        return cls(ClockKind.BACKFILL, now_s, sim_start_s, speed)

    @property
    def caught_up_wall_s(self) -> float | None:
        """The wall time at which a backfill reaches the present (None: a wall clock, or a backfill that never does)."""
        if self.kind is ClockKind.WALL:
            return None
        if self.sim_start_s >= self.started_wall_s:
            return self.started_wall_s
        if self.speed <= 1.0:
            return None
        return (self.sim_start_s - self.started_wall_s * self.speed) / (1.0 - self.speed)

    def sim(self, wall_s: float) -> float:
        """Simulated epoch seconds at a wall time."""
        running = self.sim_start_s + (wall_s - self.started_wall_s) * self.speed
        if self.kind is ClockKind.BACKFILL:
            return min(running, wall_s)
        return running

    def stamp(self, wall_s: float, sim_s: float | None = None) -> float:
        """What a reading taken at this wall time (or at simulated instant ``sim_s``) says its time is."""
        if self.kind is ClockKind.WALL:
            return wall_s
        return self.sim(wall_s) if sim_s is None else min(sim_s, wall_s)

    def wall_at(self, sim_s: float) -> float:
        """The wall time at which simulated time reaches ``sim_s`` (for scheduling)."""
        if self.kind is ClockKind.BACKFILL:
            caught = self.caught_up_wall_s
            if caught is not None and sim_s >= caught:
                return sim_s
        return self.started_wall_s + (sim_s - self.sim_start_s) / self.speed

    def sim_rate(self, wall_s: float) -> float:
        """Simulated seconds per wall second at this moment."""
        if self.kind is ClockKind.BACKFILL:
            caught = self.caught_up_wall_s
            if caught is not None and wall_s >= caught:
                return 1.0
        return self.speed
