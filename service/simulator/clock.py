"""Simulated time: seconds running `time_scale` times faster than real ones, and their walls.

With the "scaled" rule the walls run on the simulated clock too, so a call's `data_inicio` plus its
duration is its end, as on the real provider. A wall running faster than real time would soon be in
the service's future (a call ending after the service saw it end), so the scaled walls start
`(time_scale - 1) * HORIZON_SECONDS` in the past: they stay behind real time for the first
HORIZON_SECONDS of the run. The "real" rule keeps real walls and scaled durations (the old one).
"""

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from service.simulator.dialect import ClockRule

# Brazil has had no daylight saving time since 2019, so the provider's offset is fixed.
SAO_PAULO = timezone(timedelta(hours=-3), "America/Sao_Paulo")
# Ten real minutes: longer than any test lane; at a time scale of 60 the walls start 9.8 h back.
HORIZON_SECONDS = 600.0


class SimulatedClock:
    """Instants are simulated seconds since the clock started; walls are Sao Paulo times."""

    def __init__(
        self,
        time_scale: float,
        *,
        rule: ClockRule = "scaled",
        monotonic: Callable[[], float] = time.monotonic,
        wall_now: Callable[[], datetime] = lambda: datetime.now(SAO_PAULO),
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.rule = rule
        self._monotonic = monotonic
        self._origin = monotonic()
        self._origin_wall = wall_now().astimezone(SAO_PAULO)

    @property
    def lag_seconds(self) -> float:
        """How far the scaled walls start behind real time."""
        if self.rule == "real":
            return 0.0
        return max(0.0, (self.time_scale - 1.0) * HORIZON_SECONDS)

    def now(self) -> float:
        return (self._monotonic() - self._origin) * self.time_scale

    def wall_at(self, instant: float) -> datetime:
        if self.rule == "real":
            return self._origin_wall + timedelta(seconds=instant / self.time_scale)
        return self._origin_wall + timedelta(seconds=instant - self.lag_seconds)

    def real_seconds_until(self, instant: float) -> float:
        return max(0.0, (instant - self.now()) / self.time_scale)
