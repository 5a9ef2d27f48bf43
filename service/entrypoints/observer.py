"""Gauges that only the database knows: outbox backlog, overdue polls, the latest reconcile run.
Every worker samples them now and then; alerts take the maximum across workers."""

from __future__ import annotations

import asyncio

from service import metrics
from service.entrypoints.schedule import pause
from service.logging import get_logger
from service.ports import HealthFigures

log = get_logger(__name__)

SAMPLE_EVERY_SECONDS = 15.0


async def run_observer(figures: HealthFigures, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            backlog, overdue, discrepancies = await figures.health_figures()
            metrics.OUTBOX_BACKLOG.set(backlog)
            metrics.OVERDUE_POLLS.set(overdue)
            metrics.RECONCILE_DISCREPANCIES.set(discrepancies)
        except Exception as error:
            log.warning("observer_sample_failed", error=repr(error)[:300])
        await pause(stop, SAMPLE_EVERY_SECONDS)
