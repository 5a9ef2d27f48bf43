"""The dialer and the poller: loops that claim due conferences from the Postgres schedule and
advance each one a step. Several processes may run them; the claim keeps them apart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from service.domain.conference import Conference, ConferenceStatus
from service.handlers import WorkerDeps, advance_dialing, poll_conference
from service.logging import get_logger

log = get_logger(__name__)

Step = Callable[[WorkerDeps, Conference], Awaitable[None]]

DIALER: tuple[Sequence[ConferenceStatus], Step] = (
    (ConferenceStatus.ACCEPTED, ConferenceStatus.DIALING),
    advance_dialing,
)
POLLER: tuple[Sequence[ConferenceStatus], Step] = ((ConferenceStatus.IN_PROGRESS,), poll_conference)

_IDLE_SECONDS = 0.2


async def run_schedule(
    name: str,
    deps: WorkerDeps,
    statuses: Sequence[ConferenceStatus],
    step: Step,
    batch: int,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        try:
            due = await deps.store.claim_due(statuses, batch, deps.timing.lease)
        except Exception as error:
            log.warning("schedule_claim_failed", loop=name, error=repr(error)[:300])
            await pause(stop, 1.0)
            continue
        if not due:
            await pause(stop, _IDLE_SECONDS)
            continue
        # Claimed work is finished even when a stop arrives meanwhile: it is short, and an
        # abandoned lease would only delay these conferences until it expires.
        await asyncio.gather(*(_step_safely(name, deps, step, c) for c in due))


async def _step_safely(name: str, deps: WorkerDeps, step: Step, conference: Conference) -> None:
    try:
        await step(deps, conference)
    except Exception:
        # The lease expires and another pass retries: one bad conference never stops the loop.
        log.exception("schedule_step_failed", loop=name, conference_id=str(conference.id))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
