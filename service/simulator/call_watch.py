"""Watches calls in progress and announces each of their events once simulated time reaches it."""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.simulator.calls import Call, CallEvent, events
from service.simulator.clock import SimulatedClock

logger = logging.getLogger(__name__)

Announce = Callable[[Call, CallEvent], None]


class CallWatch:
    """Sleeps until the next event is due, or until a dial or a hang-up changes the timelines."""

    def __init__(self, clock: SimulatedClock, announce: Announce) -> None:
        self._clock = clock
        self._announce = announce
        self._watched: dict[int, Call] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, call: Call) -> None:
        self._watched[call.id] = call
        self.notice_change()

    def notice_change(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._changed.set()

    def forget_all(self) -> None:
        self._watched.clear()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            next_due = self._announce_due(self._clock.now())
            wait = None if next_due is None else self._clock.real_seconds_until(next_due)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    def _announce_due(self, now: float) -> float | None:
        next_due: float | None = None
        for call in list(self._watched.values()):
            pending = [event for event in events(call) if event.kind not in call.announced]
            for event in pending:
                if event.at > now:
                    next_due = event.at if next_due is None else min(next_due, event.at)
                    break
                call.announced.add(event.kind)
                try:
                    self._announce(call, event)
                except Exception:
                    logger.exception("call_event_announcement_failed call_id=%s", call.id)
            if all(event.kind in call.announced for event in events(call)):
                del self._watched[call.id]
        return next_due
