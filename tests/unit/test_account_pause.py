"""The account pause: doubling only when a probe is refused, over at the first success."""

from __future__ import annotations

from service.domain.account import AccountPause
from tests.fakes import FakeClock


def test_refusals_already_on_their_way_do_not_lengthen_the_pause() -> None:
    clock, pause = FakeClock(), AccountPause(first=5, cap=20)
    assert pause.trip(clock(), "403") == 5
    assert pause.trip(clock(), "403") == 5  # six creates refused at once: one pause
    clock.advance(5)
    assert pause.trip(clock(), "403") == 10  # the probe after it was refused
    clock.advance(10)
    assert pause.trip(clock(), "403") == 20
    clock.advance(20)
    assert pause.trip(clock(), "403") == 20  # capped
    assert pause.clear() is True
    assert pause.remaining(clock()) == 0 and pause.clear() is False
    assert pause.trip(clock(), "403") == 5  # a new outage starts from the first pause
