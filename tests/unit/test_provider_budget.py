"""The paced provider budget: any share above zero sends, bookings never pass their deadline,
and a shared budget spaces requests at the share's rate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from service.adapters.provider_budget import PacedBudget
from service.domain.numbers import from_provider
from service.ports import Urgency


def gaps(slots: list[datetime]) -> list[float]:
    return [round((b - a).total_seconds(), 3) for a, b in pairwise(slots)]


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8, 1, 4])
def test_any_share_above_zero_books_requests_one_interval_apart(share: float) -> None:
    """A share below one request a second used to send nothing at all: a bucket that held at
    most `rate` tokens never reached the whole token a request needs."""
    budget = PacedBudget(share)
    slots = budget.book(4)
    assert len(slots) == 4
    assert gaps(slots) == pytest.approx([1 / share] * 3, abs=0.01)
    assert slots[0] - datetime.now(UTC) < timedelta(seconds=0.1)


def test_a_booking_never_goes_past_its_deadline() -> None:
    budget = PacedBudget(2)
    not_after = datetime.now(UTC) + timedelta(seconds=1.2)
    slots = budget.book(10, not_after)
    assert len(slots) == 3  # now, +0.5 s, +1.0 s
    assert all(slot <= not_after for slot in slots)
    # What was refused was not taken: the next booking starts right after the last kept one.
    [after] = budget.book(1)
    assert (after - slots[-1]).total_seconds() == pytest.approx(0.5, abs=0.01)


def test_spare_counts_what_fits_in_a_window_after_what_is_booked() -> None:
    budget = PacedBudget(4)
    assert budget.spare(5) == 21
    budget.book(8)  # two seconds booked ahead
    assert budget.spare(5) == 13
    assert budget.spare(1) == 0
    assert budget.seconds_until_free() == pytest.approx(2, abs=0.05)


def test_sharing_the_budget_spaces_requests_at_the_share() -> None:
    budget = PacedBudget(2.4)
    budget.share(3)
    assert budget.rate == pytest.approx(0.8)
    assert gaps(budget.book(2)) == pytest.approx([1.25], abs=0.01)
    budget.share(1)
    assert budget.rate == pytest.approx(2.4)


@pytest.mark.parametrize(
    "echoed",
    ["4832830151", "554832830151", "+554832830151", "048 3283-0151", "(48) 3283-0151"],
)
def test_every_echo_form_of_a_number_reads_as_the_same_e164(echoed: str) -> None:
    assert from_provider(echoed) == "+554832830151"


@pytest.mark.parametrize(
    "echoed", ["5548999990000", "48999990000", "+5548999990000", "55 48 99999-0000"]
)
def test_a_mobile_number_in_every_echo_form(echoed: str) -> None:
    assert from_provider(echoed) == "+5548999990000"


def test_a_national_number_with_ddd_55_is_not_taken_for_a_country_code() -> None:
    assert from_provider("55999990000") == "+5555999990000"  # DDD 55, 11 digits
    assert from_provider("5555999990000") == "+5555999990000"


@pytest.mark.parametrize("echoed", ["+14155550100", "1234", "ramal 12", ""])
def test_what_is_not_a_brazilian_number_is_not_made_one(echoed: str) -> None:
    assert from_provider(echoed) is None


def test_lower_urgencies_take_only_the_near_future_and_dials_go_first() -> None:
    """At 20/s, polls may book at most 0.1 s ahead and creates 0.15 s: a burst of them
    leaves the budget's future to the dials of the rooms already made."""
    budget = PacedBudget(20)
    polls = budget.book(50, urgency=Urgency.POLL)
    creates = budget.book(50, urgency=Urgency.CREATE)
    dials = budget.book(3, urgency=Urgency.DIAL)
    start = datetime.now(UTC)
    assert 2 <= len(polls) <= 3  # now, +50 ms, up to +100 ms
    assert all(slot - start <= timedelta(seconds=0.1) for slot in polls)
    assert 1 <= len(creates) <= 2  # what is left up to +0.15 s
    assert all(slot - start <= timedelta(seconds=0.15) for slot in creates)
    assert len(dials) == 3
    assert (dials[0] - creates[-1]).total_seconds() == pytest.approx(0.05, abs=0.01)
    assert budget.spare(5, Urgency.POLL) == 0 and budget.spare(5, Urgency.DIAL) > 0


def test_a_fractional_share_keeps_a_horizon_of_whole_intervals() -> None:
    budget = PacedBudget(0.5)  # one request every 2 s
    assert len(budget.book(10, urgency=Urgency.POLL)) == 3  # 0, 2, 4 s: two intervals ahead
    assert len(budget.book(10, urgency=Urgency.CREATE)) == 1  # 6 s: three intervals ahead
    assert len(budget.book(10, urgency=Urgency.DIAL)) == 10


def test_in_first_come_order_every_request_books_as_far_as_it_likes() -> None:
    budget = PacedBudget(20, by_urgency=False)
    assert len(budget.book(50, urgency=Urgency.POLL)) == 50


async def test_a_create_waits_unbooked_so_that_a_dial_booked_meanwhile_goes_first() -> None:
    budget = PacedBudget(20)
    budget.book(6)  # 0.3 s booked ahead: past a create's horizon of 0.15 s
    not_after = datetime.now(UTC) + timedelta(seconds=5)
    waiting = asyncio.create_task(budget.book_when_free(Urgency.CREATE, not_after))
    await asyncio.sleep(0.05)
    [dial] = budget.book(1)  # a dial arrives while the create waits
    create = await waiting
    assert create is not None and dial < create


async def test_a_create_that_cannot_be_served_in_time_is_refused() -> None:
    budget = PacedBudget(1)
    budget.book(5)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    assert await budget.book_when_free(Urgency.CREATE, soon) is None
