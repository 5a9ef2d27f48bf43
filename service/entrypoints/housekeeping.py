"""What every worker does now and then besides its real work: announce itself so that the
workers can share the provider's request budget, sample the gauges only the database knows
(outbox backlog, overdue polls, the latest reconcile run), and prune what is past its
retention: idempotency keys, published outbox rows, provider webhooks, reconcile findings.
Alerts take the maximum across workers; pruning twice is harmless."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from service import metrics
from service.entrypoints.schedule import pause
from service.logging import get_logger
from service.ports import Housekeeping, PrunableHistory

log = get_logger(__name__)

EVERY_SECONDS = 2.0
# A worker not heard from for this long is presumed dead and its share is given back.
PRESENCE_STALE_SECONDS = 15.0
PRUNE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class Retention:
    """Days each kind of history is kept (WorkerSettings), and rows removed per DELETE."""

    idempotency_key_days: float
    published_event_days: float
    webhook_days: float
    reconcile_finding_days: float
    batch: int

    def histories(self) -> list[tuple[PrunableHistory, float]]:
        return [
            ("published_events", self.published_event_days),
            ("webhooks", self.webhook_days),
            ("reconcile_findings", self.reconcile_finding_days),
        ]


async def prune(store: Housekeeping, retention: Retention, stop: asyncio.Event) -> dict[str, int]:
    """Everything past its retention, a bounded batch at a time: each DELETE is a short
    transaction, and the loop yields between batches so the worker's other loops run."""
    pruned = {
        "idempotency_keys": await store.prune_idempotency_keys(retention.idempotency_key_days)
    }
    for history, days in retention.histories():
        pruned[history] = 0
        while not stop.is_set():
            removed = await store.prune_history(history, days, retention.batch)
            pruned[history] += removed
            if removed < retention.batch:
                break
            await asyncio.sleep(0)
    return pruned


async def run_housekeeping(
    store: Housekeeping,
    worker_id: str,
    share_budget: Callable[[int], None] | None,
    retention: Retention,
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
                    pruned = await prune(store, retention, stop)
                    next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                    if any(pruned.values()):
                        log.info("history_pruned", **pruned)
            except Exception as error:
                log.warning("housekeeping_failed", error=repr(error)[:300])
            await pause(stop, EVERY_SECONDS)
    finally:
        if share_budget is not None:
            try:
                await store.withdraw(worker_id)
            except Exception as error:
                log.warning("presence_withdraw_failed", error=repr(error)[:300])
