"""`cityops bench`: measured speed, written to docs/BENCHMARKS.md with the machine, the date and the command.

Every benchmark runs on an instance of its own (state folder `.state/bench`, its own ports), started clean, so
runs are comparable and a demo on the same machine is never touched. Loads come from separate processes, and
each result is reported next to a baseline measured in the same run, as a ratio.
"""
