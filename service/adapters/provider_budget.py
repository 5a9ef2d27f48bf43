"""This process's share of the provider's requests-per-second budget, paced: every request gets
a send time booked in advance, one interval after the last one booked.

Booking before acting is what keeps the dial protocol simple: a participant is marked `dialing`
only once its dial has a send time, so the mark can say exactly until when the request may still
be on its way, and no dial ever waits for budget after its mark. Booking also refuses what the
budget cannot serve before a deadline, so that a step never waits past its claim's lease.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from service import metrics
from service.logging import get_logger
from service.ports import Urgency

log = get_logger(__name__)

# A refused booking is logged at most this often: under a burst, every step would say it.
_EXHAUSTED_LOG_EVERY_SECONDS = 30.0

# How far ahead a request below `DIAL` may book: so many intervals of the share, and never less
# than a floor (at a large budget an interval is a fraction of a millisecond). Dials book as far
# as their step allows, so at most this much lower-urgency work is ever queued ahead of a dial,
# and a burst's creates do not fill the future that the rooms' dials need.
_HORIZON = {Urgency.CREATE: (3, 0.15), Urgency.END: (2, 0.1), Urgency.POLL: (2, 0.1)}


class PacedBudget:
    """Requests evenly spaced at `rate` a second, any rate above zero, fractional shares
    included: a slot is a moment, not a token, so a share of 0.3/s simply spaces requests
    3.3 s apart. No burst is kept for later: a strict provider counts every second."""

    def __init__(self, requests_per_second: float, by_urgency: bool = True) -> None:
        if requests_per_second <= 0:
            raise ValueError("the budget must be above zero")
        # False: one first-come queue, every request booked as far ahead as it likes (the
        # baseline `make bench` measures the urgency order against).
        self.by_urgency = by_urgency
        self.total = requests_per_second
        self.rate = requests_per_second
        self._holders = 0  # not yet told: the first share() is logged
        self._next_free = time.monotonic()
        self._exhausted_logged_at = float("-inf")
        self._refused_at = float("-inf")
        metrics.PROVIDER_BUDGET_SHARE.set(self.rate)

    def share(self, holders: int) -> None:
        """The budget is shared by `holders` processes: take only this one's part of it."""
        holders = max(holders, 1)
        if holders != self._holders:
            self._holders = holders
            self.rate = self.total / holders
            metrics.PROVIDER_BUDGET_SHARE.set(self.rate)
            log.info("provider_budget_shared", workers=holders, share=round(self.rate, 3))

    def book(
        self, requests: int, not_after: datetime | None = None, urgency: Urgency = Urgency.DIAL
    ) -> list[datetime]:
        """Send times for up to `requests` requests, none later than `not_after` nor past the
        horizon of their urgency, kept for the caller: fewer (even none) when the budget cannot
        serve them all by then."""
        now = time.monotonic()
        limit = None if not_after is None else now + _seconds_until(not_after)
        horizon = self._horizon(urgency)
        if horizon is not None:
            limit = now + horizon if limit is None else min(limit, now + horizon)
        slots: list[float] = []
        for _ in range(requests):
            slot = max(now, self._next_free)
            if limit is not None and slot > limit:
                break
            slots.append(slot)
            self._next_free = slot + 1.0 / self.rate
        for slot in slots:
            metrics.PROVIDER_BUDGET_WAIT.observe(slot - now)
        if len(slots) < requests:
            self._refused_at = now
            metrics.PROVIDER_BUDGET_REFUSED.inc(requests - len(slots))
            if now - self._exhausted_logged_at >= _EXHAUSTED_LOG_EVERY_SECONDS:
                self._exhausted_logged_at = now
                log.warning(
                    "provider_budget_exhausted",
                    share=round(self.rate, 3),
                    workers=self._holders,
                    booked_ahead_seconds=round(self._next_free - now, 1),
                )
        wall = datetime.now(UTC)
        return [wall + timedelta(seconds=slot - now) for slot in slots]

    async def book_when_free(self, urgency: Urgency, not_after: datetime) -> datetime | None:
        """One send time, taken once the near future has room for this urgency (waiting here,
        unbooked, so that a dial arriving meanwhile goes first); None if that is not before
        `not_after`."""
        horizon = self._horizon(urgency) or 0.0
        deadline = time.monotonic() + _seconds_until(not_after)
        while True:
            now = time.monotonic()
            opens = max(now, self._next_free) - horizon  # when the next slot comes in reach
            if opens <= now or opens > deadline:
                slots = self.book(1, not_after, urgency)
                return slots[0] if slots else None
            await asyncio.sleep(opens - now)

    def spare(self, within: float, urgency: Urgency = Urgency.DIAL) -> int:
        """How many more requests of this urgency could be booked to go within `within`
        seconds from now."""
        horizon = self._horizon(urgency)
        if horizon is not None:
            within = min(within, horizon)
        now = time.monotonic()
        start = max(now, self._next_free)
        if start > now + within:
            return 0
        return int((now + within - start) * self.rate) + 1

    def _horizon(self, urgency: Urgency) -> float | None:
        if not self.by_urgency or urgency is Urgency.DIAL:
            return None
        intervals, floor_seconds = _HORIZON[urgency]
        return max(intervals / self.rate, floor_seconds)

    def refused_within(self, seconds: float) -> bool:
        return time.monotonic() - self._refused_at <= seconds

    def seconds_until_free(self) -> float:
        """How long until the next request could go."""
        return max(self._next_free - time.monotonic(), 0.0)

    async def acquire(self) -> None:
        """Wait for a slot of one's own: for requests that are safe whenever they go."""
        [slot] = self.book(1)
        await wait_until(slot)


async def wait_until(moment: datetime) -> None:
    delay = _seconds_until(moment)
    if delay > 0:
        await asyncio.sleep(delay)


def _seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()
