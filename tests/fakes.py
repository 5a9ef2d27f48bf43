"""In-memory fakes of the service's ports, for the unit tier. They keep the same promises as the
real adapters (uniqueness, fencing by claim token), so handlers can be tested without I/O."""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from service.adapters.totalvoice import parse_conference
from service.domain.commands import (
    MAX_PARTICIPANTS,
    AddParticipantCommand,
    Command,
    ConferenceCommand,
    parse_command,
)
from service.domain.conference import (
    AdditionRefused,
    CallReport,
    Conference,
    ConferenceReport,
    ConferenceStatus,
    Participant,
    addition_refused,
)
from service.domain.events import PendingEvent
from service.domain.ledger import Adjustment
from service.ports import (
    AdditionRecord,
    CommandIdReused,
    CommandRefusedByStore,
    IngressRecord,
    OutboxMessage,
    ParticipantRefused,
    ProviderNotActive,
    ProviderNotFound,
    Urgency,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class _Row:
    conference: Conference
    next_action_at: datetime | None
    events: list[tuple[int, PendingEvent]] = field(default_factory=list)
    leased_until: datetime | None = None
    # Something happened while a worker held it (an add): its next save makes it due now.
    nudged: bool = False


class FakeConferenceStore:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rows: dict[UUID, _Row] = {}
        self.keys: set[tuple[str, str]] = set()
        self.command_ids: set[UUID] = set()
        self.ingress: dict[tuple[str, str], IngressRecord] = {}
        # The api's adds: by key, and the numbers reserved per conference.
        self.additions: dict[tuple[str, str], AdditionRecord] = {}
        self.reserved: dict[UUID, dict[int, str]] = {}
        self.available = True
        self.runs: list[list[Any]] = []
        self.run_reports: list[str] = []
        self.ledger_adjustments: list[Adjustment] = []

    # IngressStore
    async def remember(
        self, caller: str, idempotency_key: str, body_sha256: str, command: ConferenceCommand
    ) -> IngressRecord:
        if not self.available:
            raise OSError("postgres is down")
        return self.ingress.setdefault(
            (caller, idempotency_key),
            IngressRecord(
                conference_id=command.conference_id,
                body_sha256=body_sha256,
                command=command.model_dump(mode="json"),
                created_at=command.requested_at,
            ),
        )

    async def recall(self, caller: str, idempotency_key: str) -> IngressRecord | None:
        if not self.available:
            raise OSError("postgres is down")
        return self.ingress.get((caller, idempotency_key))

    async def ping(self) -> None:
        if not self.available:
            raise OSError("postgres is down")

    async def reserve_participant(
        self,
        caller: str,
        idempotency_key: str,
        body_sha256: str,
        command: AddParticipantCommand,
        default_max_duration: int,
    ) -> AdditionRecord:
        if not self.available:
            raise OSError("postgres is down")
        earlier = self.additions.get((caller, idempotency_key))
        if earlier is not None:
            return earlier
        position = self._take_position(command, default_max_duration)
        self.reserved.setdefault(command.conference_id, {})[position] = command.payload.number
        record = AdditionRecord(
            conference_id=command.conference_id,
            position=position,
            body_sha256=body_sha256,
            command=command.wire,
            created_at=command.requested_at,
        )
        self.additions[(caller, idempotency_key)] = record
        return record

    async def recall_addition(self, caller: str, idempotency_key: str) -> AdditionRecord | None:
        if not self.available:
            raise OSError("postgres is down")
        return self.additions.get((caller, idempotency_key))

    def _take_position(self, command: AddParticipantCommand, default_max_duration: int) -> int:
        row = self.rows.get(command.conference_id)
        if row is None or row.conference.caller != command.caller:
            raise ParticipantRefused(AdditionRefused.UNKNOWN_CONFERENCE, "no such conference")
        conference = row.conference
        reserved = self.reserved.get(conference.id, {})
        numbers = {p.number for p in conference.participants} | set(reserved.values())
        refusal = addition_refused(
            conference,
            command.payload.number,
            numbers,
            self.clock(),
            default_max_duration,
            MAX_PARTICIPANTS,
        )
        if refusal is not None:
            raise ParticipantRefused(refusal, refusal.value)
        positions = {p.position for p in conference.participants} | set(reserved)
        position = max(conference.participant_count or 0, max(positions, default=-1) + 1)
        conference.participant_count = position + 1
        return position

    async def get(self, caller: str, conference_id: UUID) -> dict[str, Any] | None:
        row = self.rows.get(conference_id)
        if row is None or row.conference.caller != caller:
            return None
        return {"id": str(conference_id), "status": row.conference.status.value}

    async def find(
        self, caller: str, filters: Any, limit: int
    ) -> tuple[list[dict[str, Any]], None]:
        mine = [r for r in self.rows.values() if r.conference.caller == caller]
        return [{"id": str(r.conference.id)} for r in mine][:limit], None

    async def request_cancel(self, caller: str, conference_id: UUID) -> str | None:
        row = self.rows.get(conference_id)
        if row is None or row.conference.caller != caller:
            return None
        row.conference.cancel_requested_at = self.clock()
        row.next_action_at = self.clock()
        return row.conference.status.value

    async def record_webhook(
        self,
        provider_conference_id: str | None,
        provider_call_id: str | None,
        payload: dict[str, Any],
        look_in: float | None,
        nudge_interval: float = 0.0,
    ) -> bool:
        for row in self.rows.values():
            if (
                row.conference.provider_conference_id == provider_conference_id
                and row.next_action_at
            ):
                row.next_action_at = self.clock()
                return True
        return False

    # ConferenceStore
    async def accept_participant(
        self,
        command: AddParticipantCommand,
        event_for: Callable[[int], PendingEvent],
        default_max_duration: int,
    ) -> bool:
        row = self.rows.get(command.conference_id)
        if row is not None and any(
            p.command_id == command.command_id for p in row.conference.participants
        ):
            return False
        reserved = next(
            (
                r
                for r in self.additions.values()
                if r.command["command_id"] == str(command.command_id)
            ),
            None,
        )
        if reserved is not None:
            position = reserved.position
            assert row is not None
        else:
            key = (command.caller, command.idempotency_key)
            if key in self.keys:
                return False
            position = self._take_position(command, default_max_duration)
            self.keys.add(key)
            row = self.rows[command.conference_id]
        row.conference.participants.append(
            Participant(
                position=position,
                number=command.payload.number,
                caller_id=command.payload.caller_id,
                record=bool(command.payload.record),
                command_id=command.command_id,
            )
        )
        row.conference.participants.sort(key=lambda p: p.position)
        row.events.append((len(row.events) + 1, event_for(position)))
        row.nudged = True
        if row.leased_until is None or row.leased_until < self.clock():
            row.next_action_at = self.clock()
        return True

    async def accept(self, command: ConferenceCommand, event: PendingEvent) -> bool:
        _refuse_what_postgres_cannot_store(command)
        key = (command.caller, command.idempotency_key)
        taken = self.rows.get(command.conference_id) or next(
            (r for r in self.rows.values() if r.conference.command_id == command.command_id), None
        )
        if taken is not None:
            if (taken.conference.caller, taken.conference.idempotency_key) != key:
                raise CommandIdReused("the command id or conference id belongs to another command")
            return False
        if command.command_id in self.command_ids or key in self.keys:
            return False
        self.command_ids.add(command.command_id)
        self.keys.add(key)
        payload = command.payload
        conference = Conference(
            id=command.conference_id,
            command_id=command.command_id,
            caller=command.caller,
            idempotency_key=command.idempotency_key,
            status=ConferenceStatus.ACCEPTED,
            reference=payload.reference,
            metadata=dict(payload.metadata),
            max_duration_seconds=payload.max_duration_seconds,
            accepted_at=self.clock(),
            participants=[
                Participant(
                    position=i,
                    number=p.number,
                    caller_id=p.caller_id or payload.caller_id,
                    record=p.record if p.record is not None else payload.record,
                )
                for i, p in enumerate(payload.participants)
            ],
            participant_count=len(payload.participants),
        )
        self.rows[conference.id] = _Row(conference, self.clock(), [(1, event)])
        return True

    async def claim_due(
        self,
        statuses: Sequence[ConferenceStatus],
        limit: int,
        lease_seconds: float,
        overdue_by: float = 0.0,
    ) -> list[Conference]:
        due_by = self.clock() - timedelta(seconds=overdue_by)
        due = sorted(
            (
                row
                for row in self.rows.values()
                if row.next_action_at is not None
                and row.next_action_at <= due_by
                and row.conference.status in statuses
            ),
            key=lambda row: row.next_action_at or due_by,
        )[:limit]
        for row in due:
            row.conference.claim_token = uuid4()
            row.conference.due_at = row.next_action_at
            row.next_action_at = self.clock() + timedelta(seconds=lease_seconds)
            row.leased_until = row.next_action_at
            row.nudged = False
        # Handlers get their own copy, as they would from a database.
        return [copy.deepcopy(row.conference) for row in due]

    async def save(
        self,
        conference: Conference,
        events: Sequence[PendingEvent],
        next_action_in: float | None,
        *,
        hold: bool = False,
    ) -> bool:
        row = self.rows[conference.id]
        if row.conference.claim_token != conference.claim_token:
            return False
        stored = row.conference
        finishing = stored.finalized_at is None and conference.finalized_at is not None
        if finishing and (stored.participant_count or 0) > len(conference.participants):
            # As Postgres: not final while an add this save does not know is on its way.
            return False
        known = {e.event_id for _, e in row.events}
        sequence = len(row.events)
        for event in events:
            if event.event_id not in known:
                sequence += 1
                row.events.append((sequence, event))
        # Participants are upserted by position: one added since the claim stays.
        saved = {p.position for p in conference.participants}
        added = [p for p in stored.participants if p.position not in saved]
        row.conference = copy.deepcopy(conference)
        row.conference.participant_count = stored.participant_count
        row.conference.participants = sorted(
            [*row.conference.participants, *added], key=lambda p: p.position
        )
        if next_action_in is None:
            row.next_action_at = None
        elif row.nudged and not hold:
            row.next_action_at = self.clock()
        else:
            row.next_action_at = self.clock() + timedelta(seconds=next_action_in)
        row.leased_until = row.next_action_at if hold else None
        row.nudged = False
        return True

    # ReconcileLedger
    async def claim_for_reconcile(
        self, provider_conference_id: str, lease_seconds: float
    ) -> tuple[Conference | None, bool]:
        for row in self.rows.values():
            if row.conference.provider_conference_id == provider_conference_id:
                row.conference.claim_token = uuid4()
                if row.next_action_at is not None:
                    row.next_action_at = self.clock() + timedelta(seconds=lease_seconds)
                return copy.deepcopy(row.conference), True
        return None, False

    async def adjustments(self, conference_id: UUID) -> list[Adjustment]:
        return [a for a in self.ledger_adjustments if a.conference_id == conference_id]

    async def save_reconciliation(
        self,
        conference: Conference,
        adjustments: Sequence[Adjustment],
        events: Sequence[PendingEvent],
        next_action_in: float | None,
    ) -> bool:
        # As Postgres: a settled call's billed figures are never rewritten in place.
        stored = {p.position: p for p in self.rows[conference.id].conference.participants}
        for p in conference.participants:
            before = stored.get(p.position)
            if before is not None and before.settled_at is not None:
                assert _billed(before) == _billed(p), "a settled call was rewritten"
        if not await self.save(conference, events, next_action_in):
            return False
        known = {a.event_id for a in self.ledger_adjustments}
        keys = {(a.conference_id, a.position, a.field, a.ordinal) for a in self.ledger_adjustments}
        for adjustment in adjustments:
            if adjustment.event_id in known:
                continue
            key = (
                adjustment.conference_id,
                adjustment.position,
                adjustment.field,
                adjustment.ordinal,
            )
            assert key not in keys, "ledger_adjustment_call_field_ordinal_key"
            assert adjustment.position in {p.position for p in conference.participants}
            self.ledger_adjustments.append(adjustment)
        return True

    async def start_reconcile_run(self, start: datetime, end: datetime) -> int:
        self.runs.append([])
        self.run_reports.append("")
        return len(self.runs)

    async def finish_reconcile_run(
        self,
        run_id: int,
        outcome: str,
        summary: dict[str, Any],
        findings: Sequence[Any],
        report: str = "",
    ) -> None:
        self.runs[run_id - 1] = list(findings)
        self.run_reports[run_id - 1] = report

    def conference(self, conference_id: UUID) -> Conference:
        return self.rows[conference_id].conference

    def event_types(self, conference_id: UUID) -> list[str]:
        return [e.type.value for _, e in self.rows[conference_id].events]

    @asynccontextmanager
    async def outbox_batch(self, limit: int) -> AsyncIterator[list[OutboxMessage]]:
        yield []


def _billed(p: Participant) -> tuple[Any, ...]:
    return (p.price, p.billed_seconds, p.duration_seconds, p.talk_seconds)


def _refuse_what_postgres_cannot_store(command: ConferenceCommand) -> None:
    """As strict as Postgres: text and jsonb hold no NUL character (a command built with
    `model_construct` skips the model's own rule)."""
    payload = command.payload
    texts = [command.caller, command.idempotency_key, payload.reference or ""]
    texts += [*payload.metadata, *payload.metadata.values()]
    texts += [p.number for p in payload.participants]
    if any("\x00" in text for text in texts):
        raise CommandRefusedByStore("CharacterNotInRepertoireError: invalid byte sequence 0x00")


@dataclass
class FakeCall:
    call_id: str
    number: str
    status: str = "chamando"
    billed_seconds: int | None = None
    talk_seconds: int | None = None
    duration_seconds: int | None = None
    price: str | None = None

    def report(self) -> CallReport:
        return CallReport(
            call_id=self.call_id,
            number=self.number,
            status=self.status,
            duration_seconds=self.duration_seconds,
            billed_seconds=self.billed_seconds,
            talk_seconds=self.talk_seconds,
            price=None if self.price is None else Decimal(self.price),
        )


class FakeProvider:
    """A provider whose behaviour tests script: `fail_next_dial_with` makes the next dial raise
    after (or before) placing the call, as a lost answer or a refusal would."""

    def __init__(self) -> None:
        self.conferences: dict[str, list[FakeCall]] = {}
        self.ended: set[str] = set()
        self.dials: list[tuple[str, str]] = []
        self.gets = 0
        self._ids = itertools.count(1000)
        self.fail_next_dial_with: Exception | None = None
        self.place_call_before_failing = True
        self.fail_creates_with: Exception | None = None
        # When set, calls are answered as the provider's JSON, numbers echoed in this form and
        # without call ids, and read back through the client's own parsing.
        self.echo_numbers_as: Callable[[str], str] | None = None

    async def create_conference(self, *, at: datetime | None = None) -> str:
        if self.fail_creates_with is not None:
            raise self.fail_creates_with
        conference_id = str(next(self._ids))
        self.conferences[conference_id] = []
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
        # The dial protocol books every dial's time before marking it: a dial without one
        # would be a dial that could wait for budget after its mark.
        assert at is not None, "a dial must go at a booked time"
        if conference_id in self.ended:
            raise ProviderNotActive("a conferencia não está ativa", status=404, reason=80)
        failure, self.fail_next_dial_with = self.fail_next_dial_with, None
        if failure is not None and not self.place_call_before_failing:
            raise failure
        call = FakeCall(call_id=str(next(self._ids)), number=number)
        self.conferences[conference_id].append(call)
        self.dials.append((conference_id, number))
        if failure is not None:
            raise failure
        return call.call_id

    async def get_conference(
        self, conference_id: str, *, at: datetime | None = None
    ) -> ConferenceReport:
        self.gets += 1
        if conference_id not in self.conferences:
            raise ProviderNotFound("conferencia não encontrada", status=404, reason=60)
        ended_at = datetime(2026, 1, 1, tzinfo=UTC) if conference_id in self.ended else None
        if self.echo_numbers_as is not None:
            echo = self.echo_numbers_as
            return parse_conference(
                {
                    "id": conference_id,
                    "data_termino": None if ended_at is None else ended_at.isoformat(),
                    "chamadas": [
                        {
                            "numero": echo(c.number),
                            "status": c.status,
                            "duracao_cobrada_segundos": c.billed_seconds,
                            "duracao_falada_segundos": c.talk_seconds,
                            "duracao_segundos": c.duration_seconds,
                            "preco": None if c.price is None else Decimal(c.price),
                        }
                        for c in self.conferences[conference_id]
                    ],
                }
            )
        return ConferenceReport(
            provider_conference_id=conference_id,
            created_at=None,
            ended_at=ended_at,
            calls=tuple(c.report() for c in self.conferences[conference_id]),
        )

    async def end_conference(self, conference_id: str, *, at: datetime | None = None) -> None:
        self.ended.add(conference_id)

    async def conference_report(self, start: datetime, end: datetime) -> list[ConferenceReport]:
        return [await self.get_conference(c) for c in self.conferences]

    async def calls_report(self, start: datetime, end: datetime) -> list[CallReport]:
        return [c.report() for calls in self.conferences.values() for c in calls]

    def finish_all(self, status: str = "atendida", talk: int = 30, price: str = "0.12") -> None:
        for calls in self.conferences.values():
            for call in calls:
                call.status = status
                call.talk_seconds = talk if status == "atendida" else None
                call.billed_seconds = 60 if status == "atendida" else None
                call.duration_seconds = talk + 5
                call.price = price if status == "atendida" else "0"


class FakeBudget:
    """The provider budget on the fake clock: requests evenly spaced at `rate` a second, booked
    in advance, refused past their deadline, exactly as `PacedBudget` does."""

    def __init__(self, clock: FakeClock, rate: float = 1000.0) -> None:
        self.clock = clock
        self.total = rate
        self.rate = rate
        self._next_free = clock()
        self.booked: list[datetime] = []
        self.urgencies: list[Urgency] = []
        self.refused_at: datetime | None = None

    def book(
        self, requests: int, not_after: datetime | None = None, urgency: Urgency = Urgency.DIAL
    ) -> list[datetime]:
        self.urgencies.append(urgency)
        slots: list[datetime] = []
        for _ in range(requests):
            slot = max(self.clock(), self._next_free)
            if not_after is not None and slot > not_after:
                break
            slots.append(slot)
            self._next_free = slot + timedelta(seconds=1 / self.rate)
        self.booked.extend(slots)
        if len(slots) < requests:
            self.refused_at = self.clock()
        return slots

    async def book_when_free(self, urgency: Urgency, not_after: datetime) -> datetime | None:
        # Nothing else books while a test step runs: the next free slot is what it would get.
        slots = self.book(1, not_after, urgency)
        return slots[0] if slots else None

    def spare(self, within: float, urgency: Urgency = Urgency.DIAL) -> int:
        start = max(self.clock(), self._next_free)
        room = (self.clock() + timedelta(seconds=within) - start).total_seconds()
        return 0 if room < 0 else int(room * self.rate) + 1

    def seconds_until_free(self) -> float:
        return max((self._next_free - self.clock()).total_seconds(), 0.0)

    def refused_within(self, seconds: float) -> bool:
        return (
            self.refused_at is not None
            and (self.clock() - self.refused_at).total_seconds() <= seconds
        )

    def share(self, holders: int) -> None:
        self.rate = self.total / max(holders, 1)


class FakeCommandPublisher:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.available = True

    @property
    def published(self) -> list[Command]:
        """What was sent, read back as a consumer would."""
        return [parse_command(c) for c in self.sent]

    async def publish_command(self, conference_id: UUID, command: dict[str, Any]) -> None:
        if not self.available:
            raise ConnectionError("kafka is down")
        assert command["conference_id"] == str(conference_id)
        self.sent.append(command)

    async def ping(self) -> None:
        if not self.available:
            raise ConnectionError("kafka is down")
