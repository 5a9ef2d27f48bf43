"""The TotalVoice (Zenvia Voice) conference API client: requests, the response envelope, typed
errors, retries of what is safe to repeat, and tolerant parsing of every documented shape.

The provider's documentation contradicts itself (see shared/provider/totalvoice-api.md), so
every field is optional, ids may be numbers or strings, times may lack an offset, durations come
as `HH:MM:SS` (even `00:00:60`) or as seconds, and prices are parsed from their JSON text into
`Decimal` so that no float ever touches money.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx

from service.domain.conference import CallReport, ConferenceReport
from service.domain.numbers import InvalidNumber, to_e164
from service.logging import get_logger
from service.ports import (
    DialOutcomeUnknown,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)

log = get_logger(__name__)

# Brazil has kept UTC-3 all year since 2019; a provider time without an offset is Brasília time.
BRASILIA = timezone(timedelta(hours=-3))
REPORT_PAGE_LIMIT = 200
_SAFE_ATTEMPTS = 3

T = TypeVar("T")


class RateLimiter:
    """A token bucket: at most `rate` requests a second, with bursts of up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


class TotalVoiceClient:
    def __init__(self, http: httpx.AsyncClient, limiter: RateLimiter) -> None:
        self._http = http
        self._limiter = limiter

    @classmethod
    def create(
        cls,
        base_url: str,
        access_token: str,
        max_rps: float,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
    ) -> TotalVoiceClient:
        http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Access-Token": access_token,
                "Accept": "application/json",
                "User-Agent": "conference-service/0.1",
            },
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )
        return cls(http, RateLimiter(max_rps))

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- endpoints -----------------------------------------------------------------------

    async def create_conference(self) -> str:
        # `{}` and never `numero_destino`: the seed documents a create body that would dial at
        # once, outside the dial protocol. An empty conference is harmless to create twice.
        data = await self._safely(lambda: self._request("POST", "/conferencia", json={}))
        conference_id = parse_id(data.get("id") if isinstance(data, dict) else None)
        if conference_id is None:
            raise ProviderError("create answered without a conference id")
        return conference_id

    async def add_participant(
        self, conference_id: str, number: str, caller_id: str | None, record: bool
    ) -> str:
        body = {"numero": number, "bina": caller_id, "gravar_audio": record}
        try:
            data = await self._request("POST", f"/conferencia/{conference_id}", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise ProviderUnavailable(f"dial not sent: {type(error).__name__}") from error
        except httpx.TransportError as error:
            raise DialOutcomeUnknown(f"dial sent, no answer: {type(error).__name__}") from error
        except ProviderUnavailable as error:
            if error.status == 429:
                raise  # refused before it was processed: nothing was dialed
            raise DialOutcomeUnknown(f"dial answered {error.status}") from error
        call_id = parse_id(data.get("id") if isinstance(data, dict) else None)
        if call_id is None:
            raise DialOutcomeUnknown("dial answered without a call id")
        return call_id

    async def get_conference(self, conference_id: str) -> ConferenceReport:
        data = await self._safely(lambda: self._request("GET", f"/conferencia/{conference_id}"))
        if not isinstance(data, dict):
            raise ProviderError("conference answered without an object")
        return parse_conference(data, fallback_id=conference_id)

    async def end_conference(self, conference_id: str) -> None:
        try:
            await self._safely(lambda: self._request("DELETE", f"/conferencia/{conference_id}"))
        except ProviderNotFound as error:
            if error.reason != 80:  # 80: no longer active, which is what we wanted
                raise

    async def conference_report(self, start: datetime, end: datetime) -> list[ConferenceReport]:
        reports: list[ConferenceReport] = []
        position = 0
        while True:
            params = {
                "data_inicio": start.astimezone(UTC).isoformat(),
                "data_fim": end.astimezone(UTC).isoformat(),
                "posicao": position,
                "limite": REPORT_PAGE_LIMIT,
            }
            data = await self._safely(
                lambda p=params: self._request("GET", "/conferencia/relatorio", params=p)  # type: ignore[misc]
            )
            page = data.get("relatorio") if isinstance(data, dict) else None
            items = [i for i in page if isinstance(i, dict)] if isinstance(page, list) else []
            reports.extend(parse_conference(item) for item in items)
            if len(items) < REPORT_PAGE_LIMIT:
                return reports
            position += len(items)

    # --- transport -----------------------------------------------------------------------

    async def _safely(self, call: Callable[[], Awaitable[T]]) -> T:
        """Repeat a request that is safe to repeat, with jittered backoff, on 429, 5xx and
        connection failures."""
        for attempt in range(1, _SAFE_ATTEMPTS + 1):
            try:
                return await call()
            except (ProviderUnavailable, httpx.TransportError) as error:
                if attempt == _SAFE_ATTEMPTS:
                    if isinstance(error, httpx.TransportError):
                        raise ProviderUnavailable(type(error).__name__) from error
                    raise
                delay = 0.2 * 2 ** (attempt - 1) * (0.5 + random.random())
                log.info("provider_request_retried", attempt=attempt, error=str(error))
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        await self._limiter.acquire()
        response = await self._http.request(method, path, **kwargs)
        return unwrap(response.status_code, response.content)


def unwrap(status: int, content: bytes) -> Any:
    """The envelope's `dados` on success; a typed error otherwise, even for bodies that are not
    JSON (gateways answer HTML)."""
    try:
        body = json.loads(content, parse_float=Decimal) if content else None
    except ValueError:
        body = None
    envelope = body if isinstance(body, dict) else {}
    reason = envelope.get("motivo") if isinstance(envelope.get("motivo"), int) else None
    message = str(envelope.get("mensagem") or f"HTTP {status}")[:300]
    if 200 <= status < 300:
        if body is None or envelope.get("sucesso") is False:
            raise ProviderError(f"unexpected answer: {message}", status=status, reason=reason)
        return envelope.get("dados")
    if status == 429 or (status >= 500 and status != 501):
        raise ProviderUnavailable(message, status=status, reason=reason)
    if status == 404 and reason in (60, 80, None):
        raise ProviderNotFound(message, status=status, reason=reason)
    raise ProviderRejected(message, status=status, reason=reason)


# --- parsing -------------------------------------------------------------------------------


def parse_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value.strip()))
    return None


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
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    try:
        return to_e164(value)
    except InvalidNumber:
        return (
            value.strip() or None
        )  # an extension or a foreign number: kept as the provider wrote it


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
    )


def parse_conference(data: dict[str, Any], fallback_id: str | None = None) -> ConferenceReport:
    """Shape (a), the "Objeto Conferência" with `chamadas`, or the audio-like flat shape (b)
    that the docs' examples show, read as a conference of one call."""
    conference_id = parse_id(data.get("id")) or fallback_id or ""
    raw_calls = data.get("chamadas")
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
    )
