"""The seams between the use cases and the outside world. Handlers see only these; the adapters
implement them for Postgres, Kafka and TotalVoice; the tests' fakes, in memory."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from service.domain.commands import ConferenceCommand
from service.domain.conference import Conference, ConferenceReport, ConferenceStatus
from service.domain.events import PendingEvent


class ProviderError(Exception):
    """The provider did not do what was asked (`status`: HTTP status, `reason`: its `motivo`)."""

    def __init__(self, message: str, *, status: int | None = None, reason: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class ProviderUnavailable(ProviderError):
    """Rate limited, a 5xx, or no connection: nothing was done; the same request may be repeated."""


class ProviderRejected(ProviderError):
    """The provider refused for good (bad token, no balance, invalid parameter): do not repeat."""


class ProviderNotFound(ProviderRejected):
    """The provider knows no such conference (motivo 60), or it is no longer active (motivo 80)."""


class DialOutcomeUnknown(ProviderError):
    """The dial request may have reached the provider but no answer came back: the participant
    may be ringing. Resolved later from the provider's call list, never by dialing again."""


class ProviderClient(Protocol):
    """TotalVoice's conference API, in the service's words."""

    async def create_conference(self) -> str:
        """Create an empty conference (dials nobody) and return the provider's id."""

    async def add_participant(
        self, conference_id: str, number: str, caller_id: str | None, record: bool
    ) -> str:
        """Dial `number` into the conference; return the provider's call id. Never retried
        inside: a lost answer raises `DialOutcomeUnknown`."""

    async def get_conference(self, conference_id: str) -> ConferenceReport: ...

    async def end_conference(self, conference_id: str) -> None:
        """End it; ending one that is already over is not an error."""

    async def conference_report(self, start: datetime, end: datetime) -> list[ConferenceReport]: ...


@dataclass(frozen=True)
class IngressRecord:
    """The first answer given for a caller's idempotency key, kept to replay it."""

    conference_id: UUID
    body_sha256: str
    command: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    key: str
    value: bytes


class IngressStore(Protocol):
    async def remember(
        self, caller: str, idempotency_key: str, body_sha256: str, command: ConferenceCommand
    ) -> IngressRecord:
        """Store the key's first command, or return what was stored for it before."""

    async def ping(self) -> None: ...


class ConferenceReader(Protocol):
    async def get(self, caller: str, conference_id: UUID) -> dict[str, Any] | None: ...


class WebhookInbox(Protocol):
    async def record_webhook(
        self,
        provider_conference_id: str | None,
        provider_call_id: str | None,
        payload: dict[str, Any],
    ) -> bool:
        """Keep a provider callback and make its conference due now; True when it is ours.
        Unknown ids are kept for later correlation."""


class ConferenceStore(Protocol):
    async def accept(self, command: ConferenceCommand, event: PendingEvent) -> bool:
        """Insert the conference, its participants and its first event in one transaction;
        False when the command (by id, or by caller + idempotency key) is known already."""

    async def claim_due(
        self, statuses: Sequence[ConferenceStatus], limit: int, lease_seconds: float
    ) -> list[Conference]:
        """Take conferences whose next action is due, leasing them so no other worker takes them
        until the lease ends or they are saved."""

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
        """Unpublished events, oldest first, held until the block exits; marked published
        only if it exits without an error."""


class CommandPublisher(Protocol):
    async def publish_command(self, command: ConferenceCommand) -> None:
        """Return only once the broker has the command durably (acks=all)."""

    async def ping(self) -> None: ...


class MessagePublisher(Protocol):
    async def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Send all, in order, and return once every one is acknowledged."""
