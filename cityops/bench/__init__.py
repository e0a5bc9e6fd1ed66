"""`cityops bench`: measured speed, written to docs/BENCHMARKS.md with the machine, the date and the command.

Every benchmark runs on an instance of its own (state folder `.state/bench`, its own ports), started clean, so
runs are comparable and a demo on the same machine is never touched. Loads come from separate processes, and
each result is reported next to a baseline measured in the same run, as a ratio.

A benchmark is a module named in :data:`BENCHMARKS` with a function
``run(env: BenchEnvironment, *, quick: bool, command: str) -> BenchOutcome``; the CLI starts the environment, calls
it, writes the section and prints the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# name -> module. Each module's ``run`` returns a BenchOutcome.
BENCHMARKS: dict[str, str] = {
    "ingest": "cityops.bench.ingest",
    "dispatch": "cityops.bench.dispatch",
    "dashboard": "cityops.bench.dashboard",
    "rules": "cityops.bench.rules",
    "e2e": "cityops.bench.e2e",
}


@dataclass(frozen=True, slots=True)
class BenchOutcome:
    section: str  # the Markdown section for docs/BENCHMARKS.md (with the stamp: machine, date, command)
    summary: dict[str, object] = field(default_factory=dict)  # `--json`: one object on the last line
    headline: str = ""  # one line for the terminal
