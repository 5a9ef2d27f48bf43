"""The dialer and the poller: loops that claim due conferences from the Postgres schedule and
advance each one a step. Several processes may run them; the claim keeps them apart."""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from service import tracing
from service.domain.conference import Conference, ConferenceStatus
from service.handlers import WorkerDeps, advance_dialing, poll_conference
from service.logging import get_logger
from service.ports import Urgency

log = get_logger(__name__)

Step = Callable[[WorkerDeps, Conference], Awaitable[None]]


@dataclass(frozen=True)
class Loop:
    """What a schedule loop claims and the step it runs. `requests_per_step` is what a step
    usually asks of the provider (a create and two dials; one GET): a loop claims only what the
    budget serves within half a lease, so claimed work never waits for budget until its lease
    runs out. `waits_for_account`: the loop claims nothing while the provider refuses our
    account (polls go on: a call in progress still settles without balance)."""

    statuses: Sequence[ConferenceStatus]
    step: Step
    requests_per_step: int
    waits_for_account: bool
    # The urgency of a step's first request: the loop claims what the budget leaves to it.
    urgency: Urgency
    # Claimed even when the budget leaves nothing to `urgency`: steps due this long ago (the
    # poll backoff cap), whose requests then go ahead (see handlers._poll_urgency).
    overdue_after: Callable[[WorkerDeps], float | None] = lambda deps: None


DIALER = Loop(
    (ConferenceStatus.ACCEPTED, ConferenceStatus.DIALING), advance_dialing, 3, True, Urgency.CREATE
)
POLLER = Loop(
    (ConferenceStatus.IN_PROGRESS,),
    poll_conference,
    1,
    False,
    Urgency.POLL,
    overdue_after=lambda deps: deps.timing.poll_max,
)

_IDLE_SECONDS = 0.2  # nothing was due: look again after this
_TOPUP_SECONDS = 0.02  # fewer were due than there was room for: top up after this


async def run_schedule(
    name: str,
    deps: WorkerDeps,
    loop: Loop,
    batch: int,
    stop: asyncio.Event,
    wakeup: asyncio.Event | None = None,
) -> None:
    """Keep up to `batch` conferences in hand, claiming more once a quarter of them is done,
    so that one slow step never holds back the others claimed with it, and a busy loop still
    claims in batches rather than once per step. Never more than the provider budget serves
    within half a lease (at least one, whose step books what it can)."""
    refill_at = max(1, batch // 4)
    running: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            room = batch - len(running)
            if running and room < refill_at:
                running = await _until_one_finishes(running, stop, None)
                continue
            paused = deps.account.remaining(deps.clock()) if loop.waits_for_account else 0.0
            if paused:
                # The provider refuses our account: conferences wait in the schedule.
                running = await _until_one_finishes(running, stop, min(paused, 1.0))
                continue
            window = deps.timing.lease / 2
            spare = deps.budget.spare(window, loop.urgency)
            overdue_by = 0.0
            if spare == 0 and (overdue := loop.overdue_after(deps)) is not None:
                # The budget is busy with more urgent work: only what waited past its cap.
                spare, overdue_by = deps.budget.spare(window), overdue
            if spare == 0:
                running = await _until_one_finishes(
                    running, stop, max(deps.budget.seconds_until_free(), _TOPUP_SECONDS)
                )
                continue
            room = min(room, max(1, spare // loop.requests_per_step))
            try:
                due = await deps.store.claim_due(loop.statuses, room, deps.timing.lease, overdue_by)
            except Exception as error:
                log.warning("schedule_claim_failed", loop=name, error=repr(error)[:300])
                await pause(stop, 1.0)
                continue
            for conference in due:
                running.add(asyncio.create_task(_step_safely(name, deps, loop.step, conference)))
            if len(due) == room:
                wait = None  # full: the next claim is for the room finished steps leave
            elif due:
                wait = _TOPUP_SECONDS
            elif deps.budget.refused_within(_IDLE_SECONDS):
                # Steps were put off for budget and come due when it frees: look then.
                busy = deps.budget.seconds_until_free()
                wait = min(max(busy, _TOPUP_SECONDS), _IDLE_SECONDS)
            else:
                wait = _IDLE_SECONDS
            running = await _until_one_finishes(running, stop, wait, wakeup)
    finally:
        # Claimed work is finished even when a stop arrives meanwhile: it is short, and an
        # abandoned lease would only delay these conferences until it expires.
        if running:
            await asyncio.gather(*running)


async def _until_one_finishes(
    running: set[asyncio.Task[None]],
    stop: asyncio.Event,
    timeout: float | None,
    wakeup: asyncio.Event | None = None,
) -> set[asyncio.Task[None]]:
    """Wait until a step finishes, the stop is asked, new work is announced, or `timeout`
    passes; the unfinished."""
    signals = [stop] if wakeup is None else [stop, wakeup]
    waits = {asyncio.ensure_future(signal.wait()) for signal in signals}
    try:
        await asyncio.wait({*running, *waits}, timeout=timeout, return_when=FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if wakeup is not None:
        wakeup.clear()
    return {task for task in running if not task.done()}


async def _step_safely(name: str, deps: WorkerDeps, step: Step, conference: Conference) -> None:
    try:
        # Its provider requests and queries are the span's children; the span is linked to the
        # trace of the conference's command.
        with tracing.step(f"{name} step", str(conference.id), conference.trace_parent):
            await step(deps, conference)
    except Exception:
        # The lease expires and another pass retries: one bad conference never stops the loop.
        log.exception("schedule_step_failed", loop=name, conference_id=str(conference.id))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
