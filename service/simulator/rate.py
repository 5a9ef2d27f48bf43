"""The provider's per-account request rate: a token bucket per Access-Token, in real seconds."""

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    refilled_at: float


class RequestRate:
    """Admits `max_rps` requests per real second per token, with a burst of one second's
    worth (at least one request)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, token: str, max_rps: float | None) -> bool:
        if max_rps is None:
            return True
        now = self._monotonic()
        burst = max(1.0, max_rps)
        bucket = self._buckets.setdefault(token, _Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.refilled_at) * max_rps)
        bucket.refilled_at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
