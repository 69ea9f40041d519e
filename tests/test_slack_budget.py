"""The adapter's own accounting of Slack's per-method limits (deterministic clock)."""

from __future__ import annotations

from adapters.slack._budget import ChannelPacer, UpdateBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answers_open_messages_only_while_their_final_edit_stays_affordable() -> None:
    clock = Clock()
    b = UpdateBudget(45, interim_share=0.7, clock=clock)  # 31 for interim use
    opened = sum(b.try_open() for _ in range(100))
    assert opened == 31, "the rest keep to the status line and post their final text"
    # Interim edits have no room left: every reservation may still need its final edit.
    assert not b.try_interim()
    # Finals may use the whole minute.
    assert all(b.take_final() == 0 for _ in range(31))
    for _ in range(31):
        b.release()
    assert sum(b.take_final() == 0 for _ in range(20)) == 14  # 45 per minute in total
    assert b.take_final() > 0
    clock.now += 60
    assert b.take_final() == 0, "the window slides"


def test_interim_edits_leave_room_for_the_reserved_finals() -> None:
    clock = Clock()
    b = UpdateBudget(10, interim_share=0.5, clock=clock)  # 5 for interim use
    assert b.try_open() and b.try_open()
    assert [b.try_interim() for _ in range(5)] == [True, True, True, False, False]
    assert b.take_final() == 0 and b.take_final() == 0


def test_channel_pacer_allows_a_short_burst_then_one_post_per_second() -> None:
    clock = Clock()
    p = ChannelPacer(rate=1.0, burst=3.0, clock=clock)
    assert [p.take("C1") for _ in range(3)] == [0, 0, 0]
    assert p.take("C1") > 0.9
    assert p.take("C2") == 0, "channels are paced separately"
    clock.now += 1.0
    assert p.take("C1") == 0
