"""One simulated provider: its clock, scenario, ledger, journal and webhooks, and what it does."""

import random
from dataclasses import dataclass
from typing import Any

from service.simulator.call_watch import CallWatch
from service.simulator.calls import BillingCorrection, Call, CallEvent, CallPlan, progress
from service.simulator.clock import SimulatedClock
from service.simulator.config import SimulatorConfig
from service.simulator.journal import RequestJournal
from service.simulator.ledger import Conference, Ledger
from service.simulator.payloads import Rendering
from service.simulator.phone_numbers import line_type
from service.simulator.rate import RequestRate
from service.simulator.scenario import CallRule, FinalStatus, LineType, Scenario
from service.simulator.webhooks import WebhookPoster, WebhookRegistry

CALL_END_WEBHOOK = "chamada_fim"
# The provider documents real-time conference events but not their webhook's name: our guess.
CONFERENCE_WEBHOOK = "conferencia"
# Finished calls end this long before "now", so float rounding can never leave them in progress.
_ALREADY_OVER_SECONDS = 0.001


@dataclass(frozen=True)
class FinishedCall:
    """A call the provider bills without anyone having dialed it through the API."""

    number: str
    status: FinalStatus
    ring_seconds: int
    talk_seconds: int
    tipo: LineType | None
    record: bool
    caller_id: str | None
    correction: BillingCorrection


class Simulation:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
        )
        # One stream per source of randomness, so webhook timing cannot shift the faults drawn.
        self.draw = random.Random(f"{self.seed}:requests")
        self.scenario = config.scenario.with_overrides(config.overrides)
        self.clock = SimulatedClock(config.time_scale, rule=self.scenario.dialect.clock)
        self.rate = RequestRate()
        self.ledger = Ledger(config.recording_base_url, config.id_offset)
        self.journal = RequestJournal()
        self.webhooks = WebhookRegistry()
        self.poster = WebhookPoster(random.Random(f"{self.seed}:webhooks"), config.webhook_send)
        self.watch = CallWatch(self.clock, self._announce)

    def use_scenario(self, scenario: Scenario) -> Scenario:
        """Play `scenario` from now on, under the command line's settings; the one in force."""
        self.scenario = scenario.with_overrides(self.config.overrides)
        self.clock.rule = self.scenario.dialect.clock
        return self.scenario

    @property
    def rendering(self) -> Rendering:
        return Rendering(
            self.clock, self.seed, self.scenario.messy, self.config.client_id, self.scenario.dialect
        )

    def conference(self, conference_id: int) -> Conference | None:
        conference = self.ledger.conferences.get(conference_id)
        if conference is not None:
            self.settle(conference)
        return conference

    def settle(self, conference: Conference) -> None:
        if self.scenario.dialect.room_end == "auto":
            self.ledger.close_if_finished(conference, self.clock.now())

    def open_conference(self) -> Conference:
        return self.ledger.open_conference(self.clock.now())

    def dial(
        self, conference: Conference, number: str, caller_id: str | None, record: bool
    ) -> Call:
        call = self.ledger.place_call(
            conference,
            number=number,
            caller_id=caller_id,
            record=record,
            plan=self._plan(number, self.scenario.rule_for(number)),
            dialed_at=self.clock.now(),
        )
        self.watch.watch(call)
        return call

    def end(self, conference: Conference) -> None:
        self.ledger.end_conference(conference, self.clock.now())
        self.watch.notice_change()

    def describe(self, conference: Conference) -> dict[str, Any]:
        self.settle(conference)
        now = self.clock.now()
        calls = [(call, progress(call, now)) for call in conference.calls]
        return self.rendering.conference(conference, calls)

    def describe_call(self, call: Call) -> dict[str, Any]:
        return self.rendering.call(call, progress(call, self.clock.now()))

    def add_finished_conference(self, calls: list[FinishedCall]) -> Conference:
        """A conference that already ended, created by nobody through the API."""
        now = self.clock.now()
        longest = max((_seconds_taken(call) for call in calls), default=0)
        conference = self.ledger.open_conference(
            now - longest - _ALREADY_OVER_SECONDS, by_control=True
        )
        for call in calls:
            self.add_finished_call(conference, call)
        conference.ended_at = now
        return conference

    def add_finished_call(self, conference: Conference, finished: FinishedCall) -> Call:
        """A call that has just ended, so that it is billed but was never dialed by anyone."""
        rule = CallRule(
            status=finished.status,
            ring_seconds=finished.ring_seconds,
            talk_seconds=finished.talk_seconds,
            tipo=finished.tipo,
        )
        call = self.ledger.place_call(
            conference,
            number=finished.number,
            caller_id=finished.caller_id,
            record=finished.record,
            plan=self._plan(finished.number, rule),
            dialed_at=self.clock.now() - _seconds_taken(finished) - _ALREADY_OVER_SECONDS,
            by_control=True,
        )
        call.correction = finished.correction
        call.announced.update(("joined", "left", "ended"))
        return call

    def reset(self) -> None:
        self.ledger.clear()
        self.journal.clear()
        self.webhooks.clear()
        self.watch.forget_all()
        self.poster.deliveries.clear()

    async def aclose(self) -> None:
        await self.watch.aclose()
        await self.poster.aclose()

    def _plan(self, number: str, rule: CallRule) -> CallPlan:
        line = rule.tipo or line_type(number)
        return CallPlan(
            outcome=rule.status,
            prepare_seconds=rule.prepare_seconds,
            ring_seconds=rule.ring_seconds,
            talk_seconds=rule.talk_seconds,
            line_type=line,
            price_per_minute=self.scenario.effective_tariffs.per_minute(line),
        )

    def _announce(self, call: Call, event: CallEvent) -> None:
        if event.kind == "ended":
            webhook = CALL_END_WEBHOOK
            payload = self.rendering.call_end(call, progress(call, self.clock.now()))
        else:
            webhook = CONFERENCE_WEBHOOK
            payload = self.rendering.conference_event(call, event.kind, event.at)
        behaviour = self.scenario.webhooks
        url = self.webhooks.url_for(webhook)
        if not behaviour.enabled:
            self.poster.skip(webhook, payload, "skipped: webhooks disabled")
        elif url is None:
            self.poster.skip(webhook, payload, "skipped: no url registered")
        else:
            self.poster.post(webhook, url, payload, behaviour)


def _seconds_taken(call: FinishedCall) -> int:
    return call.ring_seconds + (call.talk_seconds if call.status == "atendida" else 0)
