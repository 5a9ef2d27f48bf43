"""The seams between the use cases and the outside world. Handlers see only these; the adapters
implement them for Postgres, Kafka and TotalVoice; the tests' fakes, in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal, Protocol
from uuid import UUID

from service.domain.commands import AddParticipantCommand, ConferenceCommand
from service.domain.conference import (
    AdditionRefused,
    CallReport,
    Conference,
    ConferenceReport,
    ConferenceStatus,
)
from service.domain.events import PendingEvent
from service.domain.ledger import Adjustment


class ProviderError(Exception):
    """The provider did not do what was asked (`status`: HTTP status, `reason`: its `motivo`)."""

    def __init__(self, message: str, *, status: int | None = None, reason: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class ProviderUnavailable(ProviderError):
    """Rate limited, a 5xx, or no connection: nothing was done; the same request may be repeated."""


class ProviderRateLimited(ProviderUnavailable):
    """429: over the provider's requests-per-second limit; the request was not processed."""


class ProviderRejected(ProviderError):
    """The provider refused for good (bad token, no balance, invalid parameter): do not repeat."""


class ProviderAccountRefused(ProviderRejected):
    """Refused for our account's or configuration's sake, not the request's: every request
    would be refused the same way until someone fixes the account (see its subclasses)."""


class ProviderAuthFailed(ProviderAccountRefused):
    """403, motivo 40 (or a 403 without an envelope): the access token is missing or wrong."""


class ProviderNotPermitted(ProviderAccountRefused):
    """Motivo 8: the account may not do this (disabled, or a trial account dialing a number it
    has not registered)."""


class ProviderNoBalance(ProviderAccountRefused):
    """402, motivo 9: the account's balance cannot pay for the call."""


class ProviderInvalidParameter(ProviderRejected):
    """405 with motivo 10 (a required parameter is missing) or 11 (a parameter is invalid), or
    400 (the JSON sent is malformed): the same request will always be refused."""


class ProviderDuplicate(ProviderRejected):
    """409, motivo 20: the record would be duplicated."""


class ProviderNotImplemented(ProviderRejected):
    """501, motivo 30: the provider does not offer this (yet) for this account."""


class ProviderNotFound(ProviderRejected):
    """The provider knows no such conference (motivo 60), or it is no longer active (motivo 80)."""


class ProviderNotActive(ProviderNotFound):
    """404, motivo 80: the conference exists but has ended, so it takes no new participant."""


class DialOutcomeUnknown(ProviderError):
    """The dial request may have reached the provider but no answer came back: the participant
    may be ringing. Resolved later from the provider's call list, never by dialing again."""


class Urgency(IntEnum):
    """What a provider request is for, most urgent first. The budget keeps its near future for
    what a person is waiting on: a dial into a room already made goes first, then creates,
    ends, and last the polls (a poll that has waited its backoff cap counts as `DIAL`)."""

    DIAL = 0
    CREATE = 1
    END = 2
    POLL = 3


class ProviderBudget(Protocol):
    """This process's share of the provider's requests-per-second budget. Requests are booked
    before they are made, so a step knows when each of its requests will go."""

    def book(
        self, requests: int, not_after: datetime | None = None, urgency: Urgency = Urgency.DIAL
    ) -> list[datetime]:
        """Send times for up to `requests` requests, none later than `not_after` nor past
        what the budget leaves to requests of this `urgency`; fewer (even none) when it cannot
        serve them all by then. A booked time is kept: the request may go at it without
        waiting again."""

    async def book_when_free(self, urgency: Urgency, not_after: datetime) -> datetime | None:
        """One send time, taken once the budget's near future has room for this urgency: the
        request waits unbooked, so that more urgent ones booked meanwhile go first. None when
        that moment is past `not_after`."""

    def spare(self, within: float, urgency: Urgency = Urgency.DIAL) -> int:
        """How many more requests of this urgency could be booked to go within `within`
        seconds from now."""

    def seconds_until_free(self) -> float:
        """How long until the next request could go."""

    def refused_within(self, seconds: float) -> bool:
        """Whether a booking was refused in the last `seconds`: steps were put off, and come
        due again as soon as the budget frees."""

    def share(self, holders: int) -> None:
        """`holders` processes share the budget, this one included."""


class ProviderClient(Protocol):
    """TotalVoice's conference API, in the service's words. Each request goes at `at`, a time
    booked from the `ProviderBudget`; without one, the client books and waits for its own."""

    async def create_conference(self, *, at: datetime | None = None) -> str:
        """Create an empty conference (dials nobody) and return the provider's id."""

    async def add_participant(
        self,
        conference_id: str,
        number: str,
        caller_id: str | None,
        record: bool,
        *,
        at: datetime | None = None,
    ) -> str | None:
        """Dial `number` into the conference; return the provider's call id, or None when the
        provider placed the call without giving one. Never retried inside, never sent later
        than shortly after `at` (`ProviderUnavailable` then: nobody was dialed), and never in
        flight for longer than the client's dial deadline; a lost answer raises
        `DialOutcomeUnknown`."""

    async def get_conference(
        self, conference_id: str, *, at: datetime | None = None
    ) -> ConferenceReport:
        """The conference and every call placed into it; `ProviderNotFound` for an unknown id."""

    async def end_conference(self, conference_id: str, *, at: datetime | None = None) -> None:
        """End it; ending one that is already over is not an error."""

    async def conference_report(self, start: datetime, end: datetime) -> list[ConferenceReport]:
        """Every conference created between `start` and `end` (timezone-aware), all pages."""

    async def calls_report(self, start: datetime, end: datetime) -> list[CallReport]:
        """Every conference call placed between `start` and `end` (timezone-aware), all pages,
        whichever conference it belongs to."""


@dataclass(frozen=True)
class IngressRecord:
    """The first answer given for a caller's idempotency key, kept to replay it."""

    conference_id: UUID
    body_sha256: str
    command: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AdditionRecord:
    """The first answer given for a caller's add-participant key: the position reserved for the
    number, and the command published for it."""

    conference_id: UUID
    position: int
    body_sha256: str
    command: dict[str, Any]
    created_at: datetime


class ParticipantRefused(Exception):
    """The conference takes no such participant now; nothing was stored."""

    def __init__(self, reason: AdditionRefused, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    key: str
    value: bytes
    # The W3C traceparent of the conference's command: its publish is linked to that trace.
    trace_parent: str | None = None


class CommandRefusedByStore(Exception):
    """The store refused a command's values as data (a character Postgres cannot hold, a value
    out of its column's range): the same command will always be refused, so it is not retried."""


class CommandIdReused(CommandRefusedByStore):
    """The command id (or conference id) is taken by a conference of another caller + key: not
    a redelivery nor a retry, so nothing of it is stored."""


class IngressStore(Protocol):
    async def remember(
        self, caller: str, idempotency_key: str, body_sha256: str, command: ConferenceCommand
    ) -> IngressRecord:
        """Store the key's first command, or return what was stored for it before."""

    async def recall(self, caller: str, idempotency_key: str) -> IngressRecord | None:
        """What was stored for the key, if anything."""

    async def reserve_participant(
        self,
        caller: str,
        idempotency_key: str,
        body_sha256: str,
        command: AddParticipantCommand,
        default_max_duration: int,
    ) -> AdditionRecord:
        """Store the key's add with the next free position for its number, or return what was
        stored for the key before. `ParticipantRefused` when the caller's conference cannot
        take the number (the domain's `addition_refused`), counting the adds reserved before."""

    async def recall_addition(self, caller: str, idempotency_key: str) -> AdditionRecord | None:
        """What was stored for the add's key, if anything."""

    async def ping(self) -> None: ...


@dataclass(frozen=True)
class ConferenceFilter:
    status: str | None = None
    reference: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    after: tuple[datetime, UUID] | None = None


class CallerConferences(Protocol):
    """Conferences as their caller sees them; another caller's are simply not there."""

    async def get(self, caller: str, conference_id: UUID) -> dict[str, Any] | None: ...

    async def find(
        self, caller: str, filters: ConferenceFilter, limit: int
    ) -> tuple[list[dict[str, Any]], tuple[datetime, UUID] | None]:
        """Newest first, and the position after the last one when there are more."""

    async def request_cancel(self, caller: str, conference_id: UUID) -> str | None:
        """Ask for the conference to be ended; its status now, or None if there is none."""


class WebhookInbox(Protocol):
    async def record_webhook(
        self,
        provider_conference_id: str | None,
        provider_call_id: str | None,
        payload: dict[str, Any],
        look_in: float | None,
        nudge_interval: float = 0.0,
    ) -> bool:
        """Keep a provider callback and, unless `look_in` is None, make its conference due that
        many seconds from now (a short debounce lets a burst of callbacks share one poll), if
        it is in progress and no nudge came within `nudge_interval` seconds; else no earlier
        than `nudge_interval` after the last. One pending nudge per conference, whatever
        arrives. True when it is ours; unknown ids are kept for later correlation."""


class ConferenceStore(Protocol):
    async def accept(self, command: ConferenceCommand, event: PendingEvent) -> bool:
        """Insert the conference, its participants and its first event in one transaction;
        False when the command (by id, or by caller + idempotency key) is known already;
        `CommandIdReused` when its command id or conference id belongs to another command, and
        `CommandRefusedByStore` when its values cannot be stored (nothing is written)."""

    async def accept_participant(
        self,
        command: AddParticipantCommand,
        event_for: Callable[[int], PendingEvent],
        default_max_duration: int,
    ) -> bool:
        """Add the participant, pending, at the position the api reserved for the command (or,
        for one produced straight to Kafka, the next free one if the conference may take it),
        with the event `event_for(position)`, and make the conference due now; one
        transaction. False when the command was accepted before. `ParticipantRefused` for a
        command without a reservation that the conference cannot take; `CommandRefusedByStore`
        as for `accept`."""

    async def claim_due(
        self,
        statuses: Sequence[ConferenceStatus],
        limit: int,
        lease_seconds: float,
        overdue_by: float = 0.0,
    ) -> list[Conference]:
        """Take conferences whose next action is due (for at least `overdue_by` seconds),
        oldest first, leasing them so no other worker takes them until the lease ends or they
        are saved."""

    async def save(
        self,
        conference: Conference,
        events: Sequence[PendingEvent],
        next_action_in: float | None,
        *,
        hold: bool = False,
    ) -> bool:
        """Write the conference, its participants and its new events in one transaction, fenced
        by the claim token. `next_action_in` seconds schedules the next step (None takes it off
        the schedule); with `hold` the lease is renewed for that long instead, because the
        caller is still working on it. False when the lease was lost (nothing is written)."""


class Outbox(Protocol):
    def outbox_batch(self, limit: int) -> AbstractAsyncContextManager[list[OutboxMessage]]:
        """Unpublished events, oldest first, leased (no other relay takes them meanwhile, and
        no transaction stays open) until the block exits; marked published only if it exits
        without an error, and left to another relay when the lease ends otherwise."""


@dataclass(frozen=True)
class Finding:
    """One discrepancy (or notable fact) a reconcile run found between the ledger and the
    provider's report."""

    kind: str
    provider_conference_id: str | None
    provider_call_id: str | None = None
    conference_id: UUID | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class ReconcileLedger(Protocol):
    async def claim_for_reconcile(
        self, provider_conference_id: str, lease_seconds: float
    ) -> tuple[Conference | None, bool]:
        """The conference, claimed and leased for a correction like `claim_due` leases it (no
        worker takes it meanwhile), or None when a worker holds it or it is not ours; and
        whether it is ours."""

    async def save(
        self,
        conference: Conference,
        events: Sequence[PendingEvent],
        next_action_in: float | None,
        *,
        hold: bool = False,
    ) -> bool: ...

    async def adjustments(self, conference_id: UUID) -> list[Adjustment]:
        """Every adjustment appended to the conference's calls, oldest first."""

    async def save_reconciliation(
        self,
        conference: Conference,
        adjustments: Sequence[Adjustment],
        events: Sequence[PendingEvent],
        next_action_in: float | None,
    ) -> bool:
        """`save`, fenced the same way, plus the new adjustments, in one transaction. A call's
        billed figures once settled are never rewritten: its corrections are `adjustments`. An
        adjustment already stored (same event id) is not stored again."""

    async def start_reconcile_run(self, start: datetime, end: datetime) -> int: ...

    async def finish_reconcile_run(
        self,
        run_id: int,
        outcome: str,
        summary: dict[str, Any],
        findings: Sequence[Finding],
        report: str = "",
    ) -> None:
        """Store the run's findings, its summary (JSON) and its report (the same, as text)."""


# What housekeeping prunes besides idempotency keys: published outbox rows, provider webhooks,
# and reconcile runs with their findings.
PrunableHistory = Literal["published_events", "webhooks", "reconcile_findings"]


class Housekeeping(Protocol):
    async def health_figures(self) -> tuple[int, int, int]:
        """Events waiting in the outbox, conferences over a minute past their next step, and
        the discrepancies of the latest finished reconcile run."""

    async def prune_idempotency_keys(self, older_than_days: float) -> int:
        """Forget idempotency keys older than the retention; how many were removed."""

    async def prune_history(
        self, history: PrunableHistory, older_than_days: float, limit: int
    ) -> int:
        """Delete at most `limit` rows of `history` older than the retention (for the outbox,
        published rows only); how many were removed. Callers repeat while it returns `limit`."""

    async def announce(self, worker_id: str, stale_after_seconds: float) -> int:
        """Record that this worker is alive; how many are, itself included."""

    async def withdraw(self, worker_id: str) -> None: ...


class CommandPublisher(Protocol):
    async def publish_command(self, conference_id: UUID, command: dict[str, Any]) -> None:
        """Publish a command in its wire form (`ConferenceCommand.wire`, or as stored);
        return only once the broker has it durably (acks=all)."""

    async def ping(self) -> None: ...


class DeadLetters(Protocol):
    async def send(self, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        """Keep a message that can never be accepted, with headers saying why."""


class MessagePublisher(Protocol):
    async def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Send all, in order, and return once every one is acknowledged."""
