"""The provider account's health as the worker sees it: paused, with backoff, while the provider
refuses us for the account's sake (a wrong or rotated token, a disabled account, no balance)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class AccountPause:
    """While paused, nothing new is sent to the provider: conferences wait (until their settle
    deadline) instead of failing. The pause doubles at each refusal, from `first` to `cap`;
    the first request after it is the probe, and a success ends it."""

    first: float = 5.0
    cap: float = 300.0
    until: datetime | None = None
    reason: str | None = None
    _next: float = 5.0

    def remaining(self, now: datetime) -> float:
        if self.until is None:
            return 0.0
        return max((self.until - now).total_seconds(), 0.0)

    def trip(self, now: datetime, reason: str) -> float:
        """The provider refused for the account's sake: pause; how long for. Refusals of
        requests that were already on their way when the pause began do not lengthen it: only
        a refused probe (the first request after a pause) doubles the next one."""
        if self.until is not None and now < self.until:
            return self.remaining(now)
        seconds = self._next if self.until is not None else self.first
        self._next = min(seconds * 2, self.cap)
        self.until = now + timedelta(seconds=seconds)
        self.reason = reason
        return seconds

    def clear(self) -> bool:
        """The provider accepted a request: the account works. True if it was paused."""
        was_paused = self.until is not None
        self.until, self.reason, self._next = None, None, self.first
        return was_paused
