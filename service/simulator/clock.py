"""Simulated time: seconds running `time_scale` times faster than real ones, and their walls."""

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

# Brazil has had no daylight saving time since 2019, so the provider's offset is fixed.
SAO_PAULO = timezone(timedelta(hours=-3), "America/Sao_Paulo")


class SimulatedClock:
    """Instants are simulated seconds since the clock started; walls are real Sao Paulo times."""

    def __init__(
        self,
        time_scale: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_now: Callable[[], datetime] = lambda: datetime.now(SAO_PAULO),
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._origin = monotonic()
        self._origin_wall = wall_now().astimezone(SAO_PAULO)

    def now(self) -> float:
        return (self._monotonic() - self._origin) * self.time_scale

    def wall_at(self, instant: float) -> datetime:
        return self._origin_wall + timedelta(seconds=instant / self.time_scale)

    def real_seconds_until(self, instant: float) -> float:
        return max(0.0, (instant - self.now()) / self.time_scale)
