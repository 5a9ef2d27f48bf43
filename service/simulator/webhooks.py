"""Webhooks: the URLs an account registered, and deliveries late, lost, doubled or reordered."""

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from service.simulator.clock import SAO_PAULO
from service.simulator.scenario import WebhookBehaviour

logger = logging.getLogger(__name__)

_POST_TIMEOUT_SECONDS = 5.0

# How a delivery leaves: POST the JSON body to the url, answer the reply's HTTP status, raise if
# no reply came. Tests pass an async function to receive webhooks in-process.
WebhookSend = Callable[[str, bytes], Awaitable[int]]


class AiohttpSend:
    """The WebhookSend used outside tests: one aiohttp session, kept alive across deliveries."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, body: bytes) -> int:
        # Made on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_POST_TIMEOUT_SECONDS),
                headers={"Content-Type": "application/json"},
                # No trust_env: webhooks go straight to the url registered, and it would read
                # ~/.netrc and the proxy variables on every post (as the provider client notes).
            )
        async with self._session.post(url, data=body) as response:
            # Read to the end so the connection goes back to the pool rather than being closed.
            await response.read()
            return response.status

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
        send: WebhookSend | None = None,
        keep_latest: int = 10_000,
    ) -> None:
        self._draw = draw
        # Closed in aclose only when made here: a send passed in belongs to whoever passed it.
        self._own_send: AiohttpSend | None = None
        if send is None:
            send = self._own_send = AiohttpSend()
        self._http_post = send
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
        if self._own_send is not None:
            await self._own_send.aclose()

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
        status: int | None = None
        try:
            status = await self._http_post(url, orjson.dumps(payload))
        except Exception as error:  # a receiver must never stop us
            logger.warning(
                "webhook_delivery_failed webhook=%s url=%s error=%r", webhook, url, error
            )
            outcome = f"failed: {error!r}"
        else:
            outcome = "delivered"
        self.deliveries.append(
            Delivery(webhook, url, payload, datetime.now(SAO_PAULO), outcome, status)
        )
