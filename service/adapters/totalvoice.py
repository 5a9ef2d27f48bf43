"""The TotalVoice (Zenvia Voice) conference API client: requests, the response envelope, typed
errors, retries of what is safe to repeat, and tolerant parsing of every documented shape.

The provider's documentation contradicts itself (see shared/provider/totalvoice-api.md), so
every field is optional, ids may be numbers or strings, times may lack an offset, durations come
as `HH:MM:SS` (even `00:00:60`) or as seconds, and prices are parsed from their JSON text into
`Decimal` so that no float ever touches money.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import aiohttp

from service import failpoints, metrics, tracing
from service.adapters.provider_budget import PacedBudget, wait_until
from service.domain.conference import CallReport, ConferenceReport
from service.domain.numbers import from_provider
from service.domain.provider_ids import parse_id
from service.logging import get_logger
from service.ports import (
    DialOutcomeUnknown,
    ProviderAuthFailed,
    ProviderDuplicate,
    ProviderError,
    ProviderInvalidParameter,
    ProviderNoBalance,
    ProviderNotActive,
    ProviderNotFound,
    ProviderNotImplemented,
    ProviderNotPermitted,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)

log = get_logger(__name__)

# Brazil has kept UTC-3 all year since 2019; a provider time without an offset is Brasília time.
BRASILIA = timezone(timedelta(hours=-3))
REPORT_PAGE_LIMIT = 200
_SAFE_ATTEMPTS = 3

T = TypeVar("T")
# How late a dial may still go after its booked time (an event loop busy for a moment).
DIAL_LATE_SECONDS = 1.0
# Marks a dial for the trace hook below (aiohttp hands it to every hook of that request).
_DIAL_TRACE = {"dial": True}


async def _on_chunk_sent(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestChunkSentParams
) -> None:
    if context.trace_request_ctx is _DIAL_TRACE:
        failpoints.reached("dial_sent")


# Failures that mean the request never left: nobody was dialed. (A pool wait that runs out is a
# ConnectionTimeoutError too: the connect timeout covers waiting for a free connection.)
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Any failure of the exchange itself, before or after the request was sent.
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class TotalVoiceClient:
    """The provider over aiohttp: one keep-alive connection pool per process. (It replaced
    httpx, whose pool bookkeeping was 60 % of a worker's CPU in `make bench`.)"""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout: aiohttp.ClientTimeout,
        budget: PacedBudget,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = headers
        self._timeout = timeout
        self._budget = budget
        # A dial is one exchange with a hard end, so that the dial protocol knows when it can no
        # longer be on its way: sent at most DIAL_LATE_SECONDS after its booked time, then
        # answered (or abandoned) within the connect and read timeouts.
        self._dial_timeout = aiohttp.ClientTimeout(
            total=(timeout.connect or 0) + (timeout.sock_read or 0),
            connect=timeout.connect,
            sock_connect=timeout.sock_connect,
            sock_read=timeout.sock_read,
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def budget(self) -> PacedBudget:
        return self._budget

    @property
    def dial_deadline_seconds(self) -> float:
        """From a dial's booked time to the moment it can no longer be in flight."""
        return DIAL_LATE_SECONDS + (self._dial_timeout.total or 0)

    @classmethod
    def create(
        cls,
        base_url: str,
        access_token: str | None,
        max_rps: float,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        by_urgency: bool = True,
    ) -> TotalVoiceClient:
        """`access_token=None` sends no Access-Token at all (only tests want that)."""
        headers = {
            "Accept": "application/json",
            # The pid tells the provider's logs (and our tests) which worker asked.
            "User-Agent": f"conference-service/0.1 (pid {os.getpid()})",
        }
        if access_token is not None:
            headers["Access-Token"] = access_token
        # `connect` bounds the wait for a pooled connection plus the connect itself;
        # `sock_read` bounds each wait for the answer's bytes, as httpx's read timeout did.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        return cls(base_url, headers, timeout, PacedBudget(max_rps, by_urgency))

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            # The chaos suite kills a worker between writing a dial and reading its answer.
            tracing = aiohttp.TraceConfig()
            tracing.on_request_chunk_sent.append(_on_chunk_sent)
            self._session = aiohttp.ClientSession(
                trace_configs=[tracing],
                headers=self._headers,
                timeout=self._timeout,
                # An idle connection is dropped after 4 s, before the usual 5 s of servers:
                # reusing one the server is closing would make a dial's outcome unknown.
                connector=aiohttp.TCPConnector(limit=100, limit_per_host=100, keepalive_timeout=4),
                raise_for_status=False,
                # No trust_env: it reads ~/.netrc and the proxy variables on every request, in
                # a thread (measured: twice the worker's CPU per conference).
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    # --- endpoints -----------------------------------------------------------------------

    async def create_conference(self, *, at: datetime | None = None) -> str:
        # `{}` and never `numero_destino`: the seed documents a create body that would dial at
        # once, outside the dial protocol. An empty conference is harmless to create twice.
        data = await self._safely(
            lambda slot: self._request("POST /conferencia", "/conferencia", slot, json={}), at
        )
        conference_id = parse_id(data.get("id") if isinstance(data, dict) else None)
        if conference_id is None:
            raise ProviderError("create answered without a conference id")
        return conference_id

    async def add_participant(
        self,
        conference_id: str,
        number: str,
        caller_id: str | None,
        record: bool,
        *,
        at: datetime | None = None,
    ) -> str | None:
        body = {"numero": number, "bina": caller_id, "gravar_audio": record}
        if at is None:
            [at] = self._budget.book(1)
        await wait_until(at)
        late = (datetime.now(UTC) - at).total_seconds()
        if late > DIAL_LATE_SECONDS:
            # The protocol counts on a dial going at its booked time; sent now, it could still
            # be on its way when another worker resolves it. Not sent: nobody was dialed.
            raise ProviderUnavailable(f"dial not sent: {late:.1f}s past its booked time")
        try:
            data = await self._request(
                "POST /conferencia/{id}",
                f"/conferencia/{conference_id}",
                at,
                json=body,
                timeout=self._dial_timeout,
                trace_request_ctx=_DIAL_TRACE,
            )
        except NOT_SENT as error:
            raise ProviderUnavailable(f"dial not sent: {type(error).__name__}") from error
        except TRANSPORT_ERRORS as error:
            raise DialOutcomeUnknown(f"dial sent, no answer: {type(error).__name__}") from error
        except (ProviderRateLimited, ProviderRejected):
            raise  # refused before it was processed, or refused for good: nobody was dialed
        except ProviderError as error:
            # A 5xx, or a 2xx that is not a success, may come after the call was placed.
            raise DialOutcomeUnknown(
                f"dial answered {error.status}: {error}", status=error.status, reason=error.reason
            ) from error
        # A success without an id: placed, and matched later by its number.
        return parse_id(data.get("id") if isinstance(data, dict) else None)

    async def get_conference(
        self, conference_id: str, *, at: datetime | None = None
    ) -> ConferenceReport:
        data = await self._safely(
            lambda slot: self._request(
                "GET /conferencia/{id}", f"/conferencia/{conference_id}", slot
            ),
            at,
        )
        if not isinstance(data, dict):
            raise ProviderError("conference answered without an object")
        return parse_conference(data, fallback_id=conference_id)

    async def end_conference(self, conference_id: str, *, at: datetime | None = None) -> None:
        try:
            await self._safely(
                lambda slot: self._request(
                    "DELETE /conferencia/{id}", f"/conferencia/{conference_id}", slot
                ),
                at,
            )
        except ProviderNotActive:
            return  # it had ended already, which is what was asked

    async def conference_report(self, start: datetime, end: datetime) -> list[ConferenceReport]:
        items = await self._report("/conferencia/relatorio", start, end)
        return [parse_conference(item) for item in items]

    async def calls_report(self, start: datetime, end: datetime) -> list[CallReport]:
        items = await self._report("/conferencia/chamadas/relatorio", start, end)
        return [parse_call(item) for item in items]

    # --- transport -----------------------------------------------------------------------

    async def _report(self, path: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every entry of a paged report. The end of the data is a page shorter than the limit:
        the provider does not promise a `total`."""
        bounds = {"data_inicio": query_time(start), "data_fim": query_time(end, round_up=True)}
        items: list[dict[str, Any]] = []
        while True:
            params = {**bounds, "posicao": len(items), "limite": REPORT_PAGE_LIMIT}
            request = functools.partial(self._request, f"GET {path}", path, params=params)
            data = await self._safely(request)
            page = data.get("relatorio") if isinstance(data, dict) else None
            entries = page if isinstance(page, list) else []
            items.extend(entry for entry in entries if isinstance(entry, dict))
            if len(entries) < REPORT_PAGE_LIMIT:
                return items

    async def _safely(
        self, call: Callable[[datetime | None], Awaitable[T]], at: datetime | None = None
    ) -> T:
        """Repeat a request that is safe to repeat, with jittered backoff, on 429, 5xx and
        connection failures. The first try goes at `at`; a repeat books a time of its own."""
        for attempt in range(1, _SAFE_ATTEMPTS + 1):
            try:
                return await call(at if attempt == 1 else None)
            except (ProviderUnavailable, *TRANSPORT_ERRORS) as error:
                if attempt == _SAFE_ATTEMPTS:
                    if not isinstance(error, ProviderUnavailable):
                        raise ProviderUnavailable(type(error).__name__) from error
                    raise
                delay = 0.2 * 2 ** (attempt - 1) * (0.5 + random.random())
                log.info("provider_request_retried", attempt=attempt, error=str(error))
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request(self, endpoint: str, path: str, at: datetime | None, **kwargs: Any) -> Any:
        """One request, sent at `at`, a booked time (None: book one and wait for it);
        `endpoint` ("GET /conferencia/{id}") gives its method and names it in the metrics."""
        method = endpoint.split(" ", 1)[0]
        if at is None:
            await self._budget.acquire()
        else:
            await wait_until(at)
        started = time.monotonic()
        outcome = "transport_error"
        template = endpoint.split(" ", 1)[1]
        try:
            with tracing.provider_request(method, template, self._base_url) as span:
                async with self._http().request(method, self._base_url + path, **kwargs) as answer:
                    status, content = answer.status, await answer.read()
                tracing.answered(span, status, error_from=400)
            try:
                data = unwrap(status, content)
            except ProviderError as error:
                outcome = type(error).__name__
                raise
            outcome = "ok"
            return data
        finally:
            metrics.PROVIDER_REQUESTS.labels(endpoint, outcome).observe(time.monotonic() - started)


def query_time(moment: datetime, *, round_up: bool = False) -> str:
    """A report bound as the Java SDK sends it, `2018-03-14T03:00:00Z`: whole seconds in UTC;
    an end bound is rounded up so that its last fraction of a second is still covered."""
    if moment.tzinfo is None:
        raise ValueError("report bounds must be timezone-aware")
    moment = moment.astimezone(UTC)
    if round_up and moment.microsecond:
        moment += timedelta(seconds=1)
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def unwrap(status: int, content: bytes) -> Any:
    """The envelope's `dados` on success; a typed error otherwise, even for bodies that are not
    JSON (gateways answer HTML)."""
    try:
        body = json.loads(content, parse_float=Decimal) if content else None
    except ValueError:
        body = None
    envelope = body if isinstance(body, dict) else {}
    motivo = envelope.get("motivo")
    reason = motivo if isinstance(motivo, int) and not isinstance(motivo, bool) else None
    message = str(envelope.get("mensagem") or f"HTTP {status}")[:300]
    if 200 <= status < 300:
        if body is None or envelope.get("sucesso") is False:
            raise ProviderError(f"unexpected answer: {message}", status=status, reason=reason)
        return envelope.get("dados")
    raise error_for(status, reason)(message, status=status, reason=reason)


def error_for(status: int, reason: int | None) -> type[ProviderError]:
    """The error class for a refusal: by HTTP status first, because gateways answer without the
    envelope; then by `motivo` where one status has several meanings."""
    if status == 429:
        return ProviderRateLimited
    if status == 501:
        return ProviderNotImplemented
    if status >= 500:
        return ProviderUnavailable
    if reason == 8 and status in (403, 409):
        return ProviderNotPermitted
    if status == 404:
        if reason == 80:
            return ProviderNotActive
        if reason == 10:  # the path lacks its id
            return ProviderInvalidParameter
        return ProviderNotFound if reason in (60, None) else ProviderRejected
    return _REFUSALS.get(status, ProviderRejected)


_REFUSALS: dict[int, type[ProviderError]] = {
    400: ProviderInvalidParameter,  # the JSON sent is malformed (motivo 100)
    402: ProviderNoBalance,
    403: ProviderAuthFailed,
    405: ProviderInvalidParameter,  # the provider's "invalid parameter", not "method not allowed"
    409: ProviderDuplicate,
}


# --- parsing -------------------------------------------------------------------------------


_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text[:10]), datetime.min.time())
        except ValueError:
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=BRASILIA)


_HMS = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})")


def parse_seconds(seconds: object, hms: object) -> int | None:
    """`*_segundos` when present, else `HH:MM:SS`, whose seconds may be 60 or more."""
    if isinstance(seconds, bool):
        seconds = None
    if isinstance(seconds, int) and seconds >= 0:
        return seconds
    if isinstance(seconds, Decimal) and seconds >= 0 and seconds == seconds.to_integral_value():
        return int(seconds)
    if isinstance(seconds, str) and seconds.strip().isdigit():
        return int(seconds.strip())
    if isinstance(hms, str) and (match := _HMS.fullmatch(hms.strip())):
        hours, minutes, secs = (int(g) for g in match.groups())
        return hours * 3600 + minutes * 60 + secs
    return None


def parse_price(value: object) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        price = Decimal(value)
    elif isinstance(value, str):
        try:
            price = Decimal(value.strip().replace(",", "."))
        except InvalidOperation:
            return None
    else:
        return None
    return price if price.is_finite() and price >= 0 else None


def parse_number(value: object) -> str | None:
    """E.164 for a Brazilian number in any echo form; anything else (an extension, a foreign
    number) as the provider wrote it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return from_provider(value) or value.strip() or None


def parse_status(value: object) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def parse_call(item: dict[str, Any]) -> CallReport:
    return CallReport(
        call_id=parse_id(item.get("id")),
        number=parse_number(item.get("numero", item.get("numero_destino"))),
        status=parse_status(item.get("status")),
        started_at=parse_time(item.get("data_inicio")),
        duration_seconds=parse_seconds(item.get("duracao_segundos"), item.get("duracao")),
        billed_seconds=parse_seconds(
            item.get("duracao_cobrada_segundos"), item.get("duracao_cobrada")
        ),
        talk_seconds=parse_seconds(item.get("duracao_falada_segundos"), item.get("duracao_falada")),
        price=parse_price(item.get("preco")),
        recording_url=item.get("url_gravacao")
        if isinstance(item.get("url_gravacao"), str)
        else None,
        conference_id=parse_id(item.get("conferencia_id")),
    )


def parse_conference(data: dict[str, Any], fallback_id: str | None = None) -> ConferenceReport:
    """Shape (a), the "Objeto Conferência" with `chamadas`, or the audio-like flat shape (b)
    that the docs' examples show, read as a conference of one call."""
    conference_id = parse_id(data.get("id")) or fallback_id or ""
    raw_calls = data.get("chamadas")
    listed = isinstance(raw_calls, list)
    if isinstance(raw_calls, list):
        calls = tuple(parse_call(c) for c in raw_calls if isinstance(c, dict))
    elif "numero_destino" in data:
        calls = (parse_call({**data, "id": None}),)
    else:
        calls = ()
    return ConferenceReport(
        provider_conference_id=conference_id,
        created_at=parse_time(data.get("data_criacao")),
        ended_at=parse_time(data.get("data_termino")),
        calls=calls,
        lists_every_call=listed,
    )
