"""What every worker does now and then besides its real work: announce itself so that the
workers can share the provider's request budget, sample the gauges only the database knows
(outbox backlog, overdue polls, the latest reconcile run), and prune expired idempotency keys.
Alerts take the maximum across workers; pruning twice is harmless."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service import metrics
from service.entrypoints.schedule import pause
from service.logging import get_logger
from service.ports import Housekeeping

log = get_logger(__name__)

EVERY_SECONDS = 2.0
# A worker not heard from for this long is presumed dead and its share is given back.
PRESENCE_STALE_SECONDS = 15.0
PRUNE_EVERY_SECONDS = 3600.0


async def run_housekeeping(
    store: Housekeeping,
    worker_id: str,
    share_budget: Callable[[int], None] | None,
    key_retention_days: float,
    stop: asyncio.Event,
) -> None:
    """`share_budget(n)` is told how many workers call the provider, itself included."""
    next_prune = time.monotonic()
    try:
        while not stop.is_set():
            try:
                if share_budget is not None:
                    share_budget(await store.announce(worker_id, PRESENCE_STALE_SECONDS))
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
            await pause(stop, EVERY_SECONDS)
    finally:
        if share_budget is not None:
            try:
                await store.withdraw(worker_id)
            except Exception as error:
                log.warning("presence_withdraw_failed", error=repr(error)[:300])
