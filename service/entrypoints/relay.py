"""The outbox relay: events committed in Postgres -> `conference.events.v1`, at least once.

Rows are leased in id order (one short transaction), sent with no transaction open, and marked
sent (another) only after Kafka has acknowledged them all; a relay that dies leaves them for the
next once the lease ends. Consumers dedupe on `event_id` and order by `sequence`.
"""

from __future__ import annotations

import asyncio

from service import failpoints
from service.entrypoints.schedule import pause
from service.logging import get_logger
from service.ports import MessagePublisher, Outbox

log = get_logger(__name__)

_BATCH = 500


async def run_relay(outbox: Outbox, publisher: MessagePublisher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with outbox.outbox_batch(_BATCH) as messages:
                if messages:
                    await publisher.publish_many(messages)
                    failpoints.reached("after_publish")
            sent = len(messages)
        except Exception as error:
            log.warning("relay_batch_failed", error=type(error).__name__)
            await pause(stop, 1.0)
            continue
        if sent:
            log.debug("relay_published", events=sent)
        if sent < _BATCH:
            await pause(stop, 0.1)
