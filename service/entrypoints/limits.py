"""What the HTTP API admits: per-caller token buckets for requests and for participants dialed,
and a concurrency limit for the provider's webhooks.

All of it is in process: each api pod counts on its own, so with N pods a caller may get up to N
times the configured rates. That bounds a runaway client or a leaked token without putting a
shared store on the request path; an exact global quota would need one (Postgres or Redis).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.settings import ApiSettings


@dataclass(frozen=True)
class ApiLimits:
    """The limits of one api process; the defaults are ApiSettings' defaults."""

    requests_per_second: float = 50.0
    request_burst: int = 100
    participants_per_minute: int = 600
    webhook_max_body_bytes: int = 16 * 1024
    webhook_max_concurrency: int = 4
    body_timeout_seconds: float = 10.0
    webhook_body_timeout_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> ApiLimits:
        return cls(
            requests_per_second=settings.caller_rate_limit_per_second,
            request_burst=settings.caller_rate_limit_burst,
            participants_per_minute=settings.caller_participants_per_minute,
            webhook_max_body_bytes=settings.webhook_max_body_bytes,
            webhook_max_concurrency=settings.webhook_max_concurrency,
            body_timeout_seconds=settings.api_body_timeout_seconds,
            webhook_body_timeout_seconds=settings.webhook_body_timeout_seconds,
        )


class TokenBucket:
    """`rate` tokens a second, held up to `capacity`; starts full."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, amount: float, now: float) -> float:
        """Take `amount` tokens, or none and answer how many seconds until there are enough."""
        self._refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate

    def give_back(self, amount: float, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + amount)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now


class CallerAdmission:
    """Per-caller budgets. Callers are the configured ones, so the buckets are bounded too."""

    def __init__(self, limits: ApiLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._participants: dict[str, TokenBucket] = {}

    def admit_request(self, caller: str) -> int:
        """0 when the request may go on, else the seconds to wait (for Retry-After)."""
        bucket = self._bucket(
            self._requests, caller, self.limits.requests_per_second, self.limits.request_burst
        )
        return _seconds(bucket.take(1, self.clock()))

    def reserve_participants(self, caller: str, count: int) -> int:
        """Charge `count` dials to the caller's minute budget: 0 when charged, else seconds."""
        return _seconds(self._participant_bucket(caller).take(count, self.clock()))

    def release_participants(self, caller: str, count: int) -> None:
        """Refund a reservation that dialed nobody (a replay, a refused or failed request)."""
        if count:
            self._participant_bucket(caller).give_back(count, self.clock())

    def _participant_bucket(self, caller: str) -> TokenBucket:
        per_minute = self.limits.participants_per_minute
        return self._bucket(self._participants, caller, per_minute / 60, per_minute)

    def _bucket(
        self, buckets: dict[str, TokenBucket], caller: str, rate: float, capacity: float
    ) -> TokenBucket:
        bucket = buckets.get(caller)
        if bucket is None:
            bucket = buckets[caller] = TokenBucket(rate, capacity, self.clock())
        return bucket


def _seconds(wait: float) -> int:
    return 0 if wait <= 0 else max(1, math.ceil(wait))


class ConcurrencyLimit:
    """At most `limit` holders at once; one more is turned away at once, never queued, so a flood
    answers fast and cannot take the database connections the conference routes need."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    @contextmanager
    def hold(self) -> Iterator[bool]:
        """Yields whether a place was free (and is held until the block exits)."""
        if self.in_use >= self.limit:
            yield False
            return
        self.in_use += 1
        try:
            yield True
        finally:
            self.in_use -= 1
