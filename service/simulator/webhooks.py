"""Webhooks: the URLs an account registered, and deliveries late, lost, doubled or reordered."""

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson

from service.simulator.clock import SAO_PAULO
from service.simulator.scenario import WebhookBehaviour

logger = logging.getLogger(__name__)

_POST_TIMEOUT_SECONDS = 5.0


class WebhookRegistry:
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}

    def url_for(self, name: str) -> str | None:
        return self.urls.get(name)

    def clear(self) -> None:
        self.urls.clear()


@dataclass(frozen=True)
class Delivery:
    webhook: str
    url: str | None
    payload: dict[str, Any]
    at: datetime
    outcome: str
    response_status: int | None = None


@dataclass(frozen=True)
class _Pending:
    webhook: str
    url: str
    payload: dict[str, Any]
    due: float


class WebhookPoster:
    """Posts payloads in the background; a failed delivery is logged and recorded, never raised."""

    def __init__(
        self,
        draw: random.Random,
        transport: httpx.AsyncBaseTransport | None = None,
        keep_latest: int = 10_000,
    ) -> None:
        self._draw = draw
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._in_order: asyncio.Queue[_Pending] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.deliveries: deque[Delivery] = deque(maxlen=keep_latest)

    def post(
        self, webhook: str, url: str, payload: dict[str, Any], behaviour: WebhookBehaviour
    ) -> None:
        if self._draw.random() < behaviour.loss_rate:
            self.deliveries.append(Delivery(webhook, url, payload, datetime.now(SAO_PAULO), "lost"))
            return
        copies = 2 if self._draw.random() < behaviour.duplicate_rate else 1
        for _ in range(copies):
            if behaviour.reorder:
                delay = self._draw.uniform(0.0, 2.0 * behaviour.delay_ms) / 1000.0
                self._spawn(self._send_later(webhook, url, payload, delay))
            else:
                due = time.monotonic() + behaviour.delay_ms / 1000.0
                self._queue().put_nowait(_Pending(webhook, url, payload, due))

    def skip(self, webhook: str, payload: dict[str, Any], reason: str) -> None:
        self.deliveries.append(Delivery(webhook, None, payload, datetime.now(SAO_PAULO), reason))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._in_order = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _queue(self) -> asyncio.Queue[_Pending]:
        if self._in_order is None:
            self._in_order = asyncio.Queue()
            self._spawn(self._send_in_order(self._in_order))
        return self._in_order

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_in_order(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            pending = await queue.get()
            await asyncio.sleep(max(0.0, pending.due - time.monotonic()))
            await self._send(pending.webhook, pending.url, pending.payload)

    async def _send_later(
        self, webhook: str, url: str, payload: dict[str, Any], delay: float
    ) -> None:
        await asyncio.sleep(delay)
        await self._send(webhook, url, payload)

    async def _send(self, webhook: str, url: str, payload: dict[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport, timeout=_POST_TIMEOUT_SECONDS
            )
        try:
            response = await self._client.post(
                url, content=orjson.dumps(payload), headers={"Content-Type": "application/json"}
            )
        except Exception as error:  # a receiver must never stop us
            logger.warning(
                "webhook_delivery_failed webhook=%s url=%s error=%r", webhook, url, error
            )
            outcome, status = f"failed: {error!r}", None
        else:
            outcome, status = "delivered", response.status_code
        self.deliveries.append(
            Delivery(webhook, url, payload, datetime.now(SAO_PAULO), outcome, status)
        )
