"""The watchdog for a partition stuck behind a record that never reached an agent (streams/rewind.py)."""

from __future__ import annotations

from dataclasses import dataclass

from streams.rewind import AckProgress, HeadGapWatch

READINGS_2 = ("readings", 2)
READINGS_5 = ("readings", 5)


def test_a_committed_offset_stuck_below_an_acknowledged_one_is_rewound_after_the_stall() -> None:
    watch = HeadGapWatch(stall_s=20)
    assert watch.stuck(0, {READINGS_2: 802}, {READINGS_2: 950}) == []  # behind: first seen
    assert watch.stuck(10, {READINGS_2: 802}, {READINGS_2: 1400}) == []  # not for long enough
    assert watch.stuck(20, {READINGS_2: 802}, {READINGS_2: 1900}) == [(READINGS_2, 802)]
    assert watch.stuck(21, {READINGS_2: 802}, {READINGS_2: 1950}) == []  # the stall starts over after a rewind


def test_a_partition_whose_commits_move_is_never_rewound() -> None:
    watch = HeadGapWatch(stall_s=20)
    for second in range(0, 120, 5):
        committed = 100 * second  # faust commits what was acknowledged a moment ago: always a little behind
        assert watch.stuck(second, {READINGS_5: committed}, {READINGS_5: committed + 40}) == []


def test_a_caught_up_or_never_committed_partition_is_never_rewound() -> None:
    watch = HeadGapWatch(stall_s=20)
    for second in range(0, 120, 5):
        assert watch.stuck(second, {READINGS_2: 1001}, {READINGS_2: 1000, READINGS_5: 7}) == []


def test_a_partition_no_longer_acknowledged_is_forgotten() -> None:
    watch = HeadGapWatch(stall_s=20)
    watch.stuck(0, {READINGS_2: 5}, {READINGS_2: 9})
    watch.stuck(30, {READINGS_2: 5}, {})  # revoked
    assert watch.stuck(31, {READINGS_2: 5}, {READINGS_2: 9}) == []  # back: a new stall begins


@dataclass
class _Message:
    tp: tuple[str, int]
    offset: int


@dataclass
class _Event:
    message: _Message


def test_progress_keeps_the_highest_acknowledged_offset_per_partition() -> None:
    progress = AckProgress()
    progress.note([_Event(_Message(READINGS_2, 7)), _Event(_Message(READINGS_5, 3)), _Event(_Message(READINGS_2, 4))])
    progress.note([_Event(_Message(READINGS_2, 2))])  # read again after a rewind
    assert progress.highest == {READINGS_2: 7, READINGS_5: 3}
