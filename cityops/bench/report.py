"""docs/BENCHMARKS.md: one section per benchmark, replaced by each run, with the machine, date and command."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cityops.bench.environment import machine_description
from cityops.paths import REPO_ROOT

BENCHMARKS = REPO_ROOT / "docs" / "BENCHMARKS.md"
PLOTS = REPO_ROOT / "docs" / "bench"

_HEADER = """# Benchmarks

Measured by `cityops bench NAME` on an instance of its own (`.state/bench`, started clean), with every service
and the load generator on the same machine. Each section is replaced when its benchmark runs again. Absolute
numbers on a shared 2-core machine are noisy; the ratio against the baseline measured in the same run is the
figure to compare across runs.
"""


def stamp(command: str) -> str:
    return (
        f"*Machine:* {machine_description()}  \n"
        f"*Date:* {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}  \n"
        f"*Command:* `{command}`\n"
    )


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    text = path.read_text() if path.exists() else _HEADER
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(
    name: str, series: dict[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str, title: str
) -> Path:
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / f"{name}.png"
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    for label, (xs, ys) in series.items():
        axes.plot(xs, ys, marker="o", label=label)
    low = min((min(xs) for xs, _ in series.values() if xs), default=0)
    high = max((max(xs) for xs, _ in series.values() if xs), default=1)
    axes.plot([low, high], [low, high], linestyle=":", color="grey", label="offered")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
