"""What every worker does now and then besides its real work: sample the gauges only the database
knows (outbox backlog, overdue polls, the latest reconcile run) and prune expired idempotency
keys. Alerts take the maximum across workers; pruning twice is harmless."""

from __future__ import annotations

import asyncio
import time

from service import metrics
from service.entrypoints.schedule import pause
from service.logging import get_logger
from service.ports import Housekeeping

log = get_logger(__name__)

SAMPLE_EVERY_SECONDS = 15.0
PRUNE_EVERY_SECONDS = 3600.0


async def run_housekeeping(
    store: Housekeeping, key_retention_days: float, stop: asyncio.Event
) -> None:
    next_prune = time.monotonic()
    while not stop.is_set():
        try:
            backlog, overdue, discrepancies = await store.health_figures()
            metrics.OUTBOX_BACKLOG.set(backlog)
            metrics.OVERDUE_POLLS.set(overdue)
            metrics.RECONCILE_DISCREPANCIES.set(discrepancies)
            if time.monotonic() >= next_prune:
                pruned = await store.prune_idempotency_keys(key_retention_days)
                next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                if pruned:
                    log.info("idempotency_keys_pruned", count=pruned)
        except Exception as error:
            log.warning("housekeeping_failed", error=repr(error)[:300])
        await pause(stop, SAMPLE_EVERY_SECONDS)
