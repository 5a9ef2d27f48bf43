"""All of the service's SQL: ingress keys, conferences and their poll schedule, the outbox, and
the reconcile runs with the ledger's adjustments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from service import tracing
from service.adapters import postgres_additions as additions
from service.domain.commands import AddParticipantCommand, ConferenceCommand
from service.domain.conference import Conference, ConferenceStatus, DialState, Participant
from service.domain.events import PendingEvent, envelope, money
from service.domain.ledger import Adjustment
from service.ports import (
    AdditionRecord,
    CommandIdReused,
    CommandRefusedByStore,
    ConferenceFilter,
    Finding,
    IngressRecord,
    OutboxMessage,
    PrunableHistory,
)

_REUSED = "the command id or conference id belongs to another command"


class _KeyTakenMeanwhile(Exception):
    """Rolls back a reservation whose key another request stored first."""


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    if tracing.enabled():
        connection.add_query_logger(tracing.record_query)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset on release: the service uses no session state (advisory locks, LISTEN, cursors,
    SET), and asyncpg's four-statement reset cost a round trip per request (make bench).
    asyncpg still rolls back a transaction left open."""


async def open_pool(url: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
    )


_CONFERENCE_COLUMNS = """
    c.id, c.command_id, c.caller, c.idempotency_key, c.status, c.reference, c.metadata,
    c.max_duration_seconds, c.accepted_at, c.provider_conference_id, c.poll_count, c.claim_token,
    c.provider_ended_at, c.cancel_requested_at, c.finalized_at, c.failure_reason,
    c.participant_count, c.trace_parent
"""

# An upsert: reconciliation adds the billed calls the provider reported and we did not know.
_PARTICIPANT_WRITE = """
    INSERT INTO participant AS p (
        conference_id, position, number, caller_id, record, source, dial_state, dial_started_at,
        provider_call_id, provider_status, started_at, duration_seconds, billed_seconds,
        talk_seconds, price, recording_url, settled_at, rejection_reason, reconciled_at,
        status_changes)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
            $20)
    ON CONFLICT (conference_id, position) DO UPDATE
       SET dial_state = $7, dial_started_at = $8, provider_call_id = $9, provider_status = $10,
           started_at = $11, duration_seconds = $12, billed_seconds = $13, talk_seconds = $14,
           price = $15, recording_url = $16, settled_at = $17, rejection_reason = $18,
           reconciled_at = $19, status_changes = $20
"""


# One bounded batch each, oldest first, found by an index on its timestamp (migration 0006).
# The outbox loses published rows only: an unpublished one is an event not yet delivered.
_PRUNE: dict[PrunableHistory, str] = {
    "published_events": """
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox
             WHERE published_at IS NOT NULL AND published_at < now() - $1::interval
             ORDER BY published_at LIMIT $2)
    """,
    "webhooks": """
        DELETE FROM provider_webhook WHERE id IN (
            SELECT id FROM provider_webhook WHERE received_at < now() - $1::interval
             ORDER BY received_at LIMIT $2)
    """,
    "reconcile_findings": """
        DELETE FROM reconcile_finding WHERE id IN (
            SELECT f.id FROM reconcile_finding f JOIN reconcile_run r ON r.id = f.run_id
             WHERE r.started_at < now() - $1::interval
             ORDER BY f.id LIMIT $2)
    """,
}

# Runs whose findings are all gone; one a day, so a few hundred at most. The latest run stays:
# the discrepancies gauge reads it.
_PRUNE_EMPTY_RECONCILE_RUNS = """
    DELETE FROM reconcile_run r
     WHERE r.started_at < now() - $1::interval
       AND r.id < (SELECT max(id) FROM reconcile_run)
       AND NOT EXISTS (SELECT 1 FROM reconcile_finding f WHERE f.run_id = r.id)
       AND NOT EXISTS (SELECT 1 FROM ledger_adjustment a WHERE a.run_id = r.id)
"""

# The ledger's corrections: appended, never updated or deleted (migration 0010). The same
# adjustment computed again (a retried save) has the same event id and is not added twice.
_ADJUSTMENT_COLUMNS = """
    conference_id, position, provider_call_id, field, ordinal, before, after, source, run_id,
    created_at
"""
_ADJUSTMENT_INSERT = f"""
    INSERT INTO ledger_adjustment (event_id, {_ADJUSTMENT_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (event_id) DO NOTHING
"""  # noqa: S608 (a constant column list, no input)


def _adjustment(row: asyncpg.Record) -> Adjustment:
    return Adjustment(**{name: row[name] for name in _ADJUSTMENT_FIELDS})


def _adjustment_row(a: Adjustment) -> tuple[Any, ...]:
    return (a.event_id, *(getattr(a, name) for name in _ADJUSTMENT_FIELDS))


_ADJUSTMENT_FIELDS = [name.strip() for name in _ADJUSTMENT_COLUMNS.split(",")]


def _conference(row: asyncpg.Record, participants: list[Participant]) -> Conference:
    return Conference(
        id=row["id"],
        command_id=row["command_id"],
        caller=row["caller"],
        idempotency_key=row["idempotency_key"],
        status=ConferenceStatus(row["status"]),
        reference=row["reference"],
        metadata=row["metadata"],
        max_duration_seconds=row["max_duration_seconds"],
        accepted_at=row["accepted_at"],
        provider_conference_id=row["provider_conference_id"],
        poll_count=row["poll_count"],
        claim_token=row["claim_token"],
        provider_ended_at=row["provider_ended_at"],
        cancel_requested_at=row["cancel_requested_at"],
        finalized_at=row["finalized_at"],
        failure_reason=row["failure_reason"],
        participants=participants,
        due_at=row.get("due_at"),
        participant_count=row["participant_count"],
        trace_parent=row["trace_parent"],
    )


def _participant(row: asyncpg.Record) -> Participant:
    return Participant(
        position=row["position"],
        number=row["number"],
        caller_id=row["caller_id"],
        record=row["record"],
        dial_state=DialState(row["dial_state"]),
        dial_started_at=row["dial_started_at"],
        provider_call_id=row["provider_call_id"],
        provider_status=row["provider_status"],
        started_at=row["started_at"],
        duration_seconds=row["duration_seconds"],
        billed_seconds=row["billed_seconds"],
        talk_seconds=row["talk_seconds"],
        price=row["price"],
        recording_url=row["recording_url"],
        settled_at=row["settled_at"],
        rejection_reason=row["rejection_reason"],
        source=row["source"],
        reconciled_at=row["reconciled_at"],
        status_changes=row["status_changes"],
        command_id=row["command_id"],
    )


# Keys stored by one INSERT at most; a burst larger than this takes several.
_INGRESS_BATCH_MAX = 128


def _ingress_record(row: asyncpg.Record) -> IngressRecord:
    return IngressRecord(
        conference_id=row["conference_id"],
        body_sha256=row["body_sha256"],
        command=row["command"],
        created_at=row["created_at"],
    )


class PostgresStore:
    """One class for every table: the service is small enough that splitting it would only
    scatter the transactions that must stay together."""

    def __init__(self, pool: asyncpg.Pool, events_topic: str, acquire_timeout: float = 5.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._events_topic = events_topic
        self._ingress_queue: list[
            tuple[tuple[str, str, str, ConferenceCommand], asyncio.Future[IngressRecord]]
        ] = []
        self._ingress_writer: asyncio.Task[None] | None = None

    def _acquire(self) -> Any:
        """A connection, or TimeoutError: a step waiting on an exhausted pool would outlive its
        lease, and a request would hang; failing lets the caller retry or answer 503."""
        return self._pool.acquire(timeout=self._acquire_timeout)

    async def ping(self) -> None:
        async with self._pool.acquire(timeout=2) as connection:
            await connection.fetchval("SELECT 1")

    # --- ingress -------------------------------------------------------------------------

    async def remember(
        self, caller: str, idempotency_key: str, body_sha256: str, command: ConferenceCommand
    ) -> IngressRecord:
        """Store the key (first writer wins) and answer what is stored under it. Requests that
        arrive together share one INSERT and one commit (group commit): under load, a round
        trip and a commit of its own were most of an api request's database cost. Each caller
        still gets its answer only once its row is committed."""
        waiter: asyncio.Future[IngressRecord] = asyncio.get_running_loop().create_future()
        self._ingress_queue.append(((caller, idempotency_key, body_sha256, command), waiter))
        if self._ingress_writer is None or self._ingress_writer.done():
            self._ingress_writer = asyncio.create_task(self._write_ingress())
        return await waiter

    async def _write_ingress(self) -> None:
        """One batch at a time; what arrives meanwhile waits for the next batch."""
        while self._ingress_queue:
            batch = self._ingress_queue[:_INGRESS_BATCH_MAX]
            del self._ingress_queue[:_INGRESS_BATCH_MAX]
            try:
                records = await self._remember_many([item for item, _ in batch])
            except BaseException as error:
                failure = error if isinstance(error, Exception) else RuntimeError("stopping")
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(failure)
                if failure is not error:
                    raise  # cancelled: the process is stopping
                continue
            for (_, waiter), record in zip(batch, records, strict=True):
                if not waiter.done():
                    waiter.set_result(record)

    async def _remember_many(
        self, items: list[tuple[str, str, str, ConferenceCommand]]
    ) -> list[IngressRecord]:
        async with self._acquire() as connection:
            rows = await connection.fetch(
                """
                INSERT INTO ingress_request
                       (caller, idempotency_key, body_sha256, conference_id, command, created_at)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[],
                                     $5::jsonb[], $6::timestamptz[])
                ON CONFLICT (caller, idempotency_key) DO NOTHING
                RETURNING caller, idempotency_key, conference_id, body_sha256, command, created_at
                """,
                [caller for caller, _, _, _ in items],
                [key for _, key, _, _ in items],
                [sha for _, _, sha, _ in items],
                [command.conference_id for _, _, _, command in items],
                [command.wire for _, _, _, command in items],
                [command.requested_at for _, _, _, command in items],
            )
            stored = {(r["caller"], r["idempotency_key"]): r for r in rows}
            # Keys stored before (a replay), or twice in this batch: answer what is stored.
            missing = {(c, k) for c, k, _, _ in items if (c, k) not in stored}
            if missing:
                earlier = await connection.fetch(
                    """
                    SELECT caller, idempotency_key, conference_id, body_sha256, command,
                           created_at
                      FROM ingress_request
                     WHERE (caller, idempotency_key) IN
                           (SELECT * FROM unnest($1::text[], $2::text[]))
                    """,
                    [c for c, _ in missing],
                    [k for _, k in missing],
                )
                stored.update({(r["caller"], r["idempotency_key"]): r for r in earlier})
        return [_ingress_record(stored[(c, k)]) for c, k, _, _ in items]

    async def recall(self, caller: str, idempotency_key: str) -> IngressRecord | None:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                """
                SELECT conference_id, body_sha256, command, created_at FROM ingress_request
                 WHERE caller = $1 AND idempotency_key = $2
                """,
                caller,
                idempotency_key,
            )
        return None if row is None else _ingress_record(row)

    # --- adding participants (service/adapters/postgres_additions.py) --------------------

    async def reserve_participant(
        self,
        caller: str,
        idempotency_key: str,
        body_sha256: str,
        command: AddParticipantCommand,
        default_max_duration: int,
    ) -> AdditionRecord:
        async with self._acquire() as connection:
            try:
                async with connection.transaction():
                    earlier = await additions.recall(connection, caller, idempotency_key)
                    if earlier is not None:
                        return earlier
                    record = await additions.reserve(
                        connection, body_sha256, command, default_max_duration
                    )
                    if record is None:
                        # The key was stored meanwhile by another request: rolling back
                        # gives its position back, and that request's answer is ours.
                        raise _KeyTakenMeanwhile
                    return record
            except _KeyTakenMeanwhile:
                stored = await additions.recall(connection, caller, idempotency_key)
                assert stored is not None
                return stored

    async def recall_addition(self, caller: str, idempotency_key: str) -> AdditionRecord | None:
        async with self._acquire() as connection:
            return await additions.recall(connection, caller, idempotency_key)

    async def accept_participant(
        self,
        command: AddParticipantCommand,
        event_for: Callable[[int], PendingEvent],
        default_max_duration: int,
    ) -> bool:
        try:
            async with self._acquire() as connection, connection.transaction():
                position = await additions.accept(connection, command, default_max_duration)
                if position is None:
                    return False
                row = await connection.fetchrow(
                    f"""
                    UPDATE conference c
                       SET last_sequence = last_sequence + 1, nudged_at = now(),
                           next_action_at = CASE
                               WHEN leased_until IS NULL OR leased_until < now() THEN now()
                               ELSE next_action_at END
                     WHERE id = $1
                    RETURNING {_CONFERENCE_COLUMNS}, c.last_sequence
                    """,  # noqa: S608 (a constant column list, no input)
                    command.conference_id,
                )
                await self._insert_events(
                    connection,
                    _conference(row, []),
                    [event_for(position)],
                    first_sequence=row["last_sequence"],
                )
            return True
        except asyncpg.DataError as error:
            raise CommandRefusedByStore(f"{type(error).__name__}: {error}"[:500]) from error

    # --- reads for the API ---------------------------------------------------------------

    async def get(self, caller: str, conference_id: UUID) -> dict[str, Any] | None:
        async with self._acquire() as connection:
            row = await connection.fetchrow(
                "SELECT * FROM conference WHERE id = $1 AND caller = $2", conference_id, caller
            )
            if row is None:
                ingress = await connection.fetchrow(
                    "SELECT * FROM ingress_request WHERE conference_id = $1 AND caller = $2",
                    conference_id,
                    caller,
                )
                return None if ingress is None else _accepted_view(ingress)
            participants = await connection.fetch(
                "SELECT * FROM participant WHERE conference_id = $1 ORDER BY position",
                conference_id,
            )
            reserved = []
            if row["participant_count"] > len(participants):
                reserved = await connection.fetch(
                    """
                    SELECT r.position, r.number FROM participant_request r
                     WHERE r.conference_id = $1 AND NOT EXISTS (
                           SELECT 1 FROM participant p WHERE p.command_id = r.command_id)
                     ORDER BY r.position
                    """,
                    conference_id,
                )
        view = _conference_view(row, participants)
        view["participants"] += additions.view_of_reserved(reserved)
        return view

    async def find(
        self, caller: str, filters: ConferenceFilter, limit: int
    ) -> tuple[list[dict[str, Any]], tuple[datetime, UUID] | None]:
        """Newest first; the second value is the position after the last row, when there is more."""
        async with self._acquire() as connection:
            rows = await connection.fetch(
                """
                SELECT * FROM conference
                 WHERE caller = $1
                   AND ($2::text IS NULL OR status = $2)
                   AND ($3::text IS NULL OR reference = $3)
                   AND ($4::timestamptz IS NULL OR requested_at >= $4)
                   AND ($5::timestamptz IS NULL OR requested_at < $5)
                   AND ($6::timestamptz IS NULL OR (requested_at, id) < ($6, $7::uuid))
                 ORDER BY requested_at DESC, id DESC
                 LIMIT $8
                """,
                caller,
                filters.status,
                filters.reference,
                filters.created_from,
                filters.created_to,
                filters.after[0] if filters.after else None,
                filters.after[1] if filters.after else None,
                limit + 1,
            )
            page = rows[:limit]
            participants = await connection.fetch(
                "SELECT * FROM participant WHERE conference_id = ANY($1) ORDER BY position",
                [r["id"] for r in page],
            )
        by_conference: dict[UUID, list[asyncpg.Record]] = {r["id"]: [] for r in page}
        for p in participants:
            by_conference[p["conference_id"]].append(p)
        views = [_conference_view(r, by_conference[r["id"]]) for r in page]
        after = (page[-1]["requested_at"], page[-1]["id"]) if len(rows) > limit else None
        return views, after

    async def request_cancel(self, caller: str, conference_id: UUID) -> str | None:
        """Record the caller's wish to end the conference and make it due now; its status, or
        None when the caller has no such conference.

        The ingress row first, then the conference: `accept` locks the ingress row before it
        inserts the conference, so a cancel racing an accept either commits first (and accept
        reads it) or waits for accept's commit (and then finds the conference to mark)."""
        async with self._acquire() as connection, connection.transaction():
            pending = await connection.fetchval(
                """
                UPDATE ingress_request
                   SET cancel_requested_at = coalesce(cancel_requested_at, now())
                 WHERE conference_id = $1 AND caller = $2
                RETURNING conference_id
                """,
                conference_id,
                caller,
            )
            status = await connection.fetchval(
                """
                UPDATE conference
                   SET cancel_requested_at = coalesce(cancel_requested_at, now()),
                       nudged_at = now(),
                       next_action_at = CASE
                           WHEN next_action_at IS NOT NULL
                                AND (leased_until IS NULL OR leased_until < now())
                           THEN now() ELSE next_action_at END
                 WHERE id = $1 AND caller = $2
                RETURNING status
                """,
                conference_id,
                caller,
            )
        if status is not None:
            return str(status)
        return None if pending is None else ConferenceStatus.ACCEPTED.value

    # --- the worker's conferences --------------------------------------------------------

    async def accept(self, command: ConferenceCommand, event: PendingEvent) -> bool:
        try:
            return await self._accept(command, event)
        except asyncpg.DataError as error:
            # SQLSTATE class 22 (and asyncpg's own check of the arguments): the values, not the
            # database, are at fault; the transaction was rolled back, nothing is stored.
            raise CommandRefusedByStore(f"{type(error).__name__}: {error}"[:500]) from error

    async def _accept(self, command: ConferenceCommand, event: PendingEvent) -> bool:
        payload = command.payload
        async with self._acquire() as connection, connection.transaction():
            # Locked first, as `request_cancel` updates it first: a cancel is either seen here
            # or waits for this commit and then finds the conference.
            cancel_requested_at = await connection.fetchval(
                "SELECT cancel_requested_at FROM ingress_request WHERE conference_id = $1"
                " FOR UPDATE",
                command.conference_id,
            )
            # A redelivery, or a retry, has the caller and key of the conference holding its id.
            # One that shares only an id is another command: it must not leave its key behind.
            taken = await connection.fetchrow(
                """
                SELECT id, command_id, caller, idempotency_key FROM conference
                 WHERE command_id = $1 OR id = $2 LIMIT 1
                """,
                command.command_id,
                command.conference_id,
            )
            if taken is not None:
                if (taken["caller"], taken["idempotency_key"]) != (
                    command.caller,
                    command.idempotency_key,
                ):
                    raise CommandIdReused(_REUSED)
                return False
            fresh_key = await connection.fetchval(
                """
                INSERT INTO command_key (caller, idempotency_key, command_id)
                VALUES ($1, $2, $3)
                ON CONFLICT (caller, idempotency_key) DO NOTHING
                RETURNING true
                """,
                command.caller,
                command.idempotency_key,
                command.command_id,
            )
            if not fresh_key:
                return False
            row = await connection.fetchrow(
                f"""
                INSERT INTO conference AS c (
                    id, command_id, caller, idempotency_key, status, reference, metadata,
                    max_duration_seconds, requested_at, next_action_at, last_sequence,
                    cancel_requested_at, participant_count, trace_parent)
                VALUES ($1, $2, $3, $4, 'accepted', $5, $6, $7, $8, now(), 1, $9, $10, $11)
                ON CONFLICT DO NOTHING
                RETURNING {_CONFERENCE_COLUMNS}
                """,  # noqa: S608 (a constant column list, no input)
                command.conference_id,
                command.command_id,
                command.caller,
                command.idempotency_key,
                payload.reference,
                payload.metadata,
                payload.max_duration_seconds,
                command.requested_at,
                cancel_requested_at,
                len(payload.participants),
                # The consumer's span around this accept: later steps link to its trace.
                tracing.current_traceparent(),
            )
            if row is None:
                # Another command took an id between the check and the insert; raising rolls
                # back the key this one stored.
                raise CommandIdReused(_REUSED)
            await connection.executemany(
                """
                INSERT INTO participant (conference_id, position, number, caller_id, record)
                VALUES ($1, $2, $3, $4, $5)
                """,
                [
                    (
                        command.conference_id,
                        position,
                        p.number,
                        p.caller_id or payload.caller_id,
                        p.record if p.record is not None else payload.record,
                    )
                    for position, p in enumerate(payload.participants)
                ],
            )
            await self._insert_events(connection, _conference(row, []), [event], first_sequence=1)
        return True

    async def claim_due(
        self,
        statuses: Sequence[ConferenceStatus],
        limit: int,
        lease_seconds: float,
        overdue_by: float = 0.0,
    ) -> list[Conference]:
        async with self._acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                f"""
                WITH due AS (
                    SELECT id, next_action_at AS due_at FROM conference
                     WHERE next_action_at <= now() - make_interval(secs => $4)
                       AND status = ANY($1::text[])
                     ORDER BY next_action_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED
                )
                UPDATE conference c
                   SET claim_token = gen_random_uuid(), claimed_at = now(),
                       leased_until = now() + make_interval(secs => $3),
                       next_action_at = now() + make_interval(secs => $3)
                  FROM due
                 WHERE c.id = due.id
                RETURNING {_CONFERENCE_COLUMNS}, due.due_at
                """,  # noqa: S608 (a constant column list, no input)
                [s.value for s in statuses],
                limit,
                lease_seconds,
                overdue_by,
            )
            if not rows:
                return []
            participant_rows = await connection.fetch(
                "SELECT * FROM participant WHERE conference_id = ANY($1) ORDER BY position",
                [r["id"] for r in rows],
            )
        by_conference: dict[UUID, list[Participant]] = {r["id"]: [] for r in rows}
        for p in participant_rows:
            by_conference[p["conference_id"]].append(_participant(p))
        return [_conference(r, by_conference[r["id"]]) for r in rows]

    async def save(
        self,
        conference: Conference,
        events: Sequence[PendingEvent],
        next_action_in: float | None,
        *,
        hold: bool = False,
    ) -> bool:
        async with self._acquire() as connection, connection.transaction():
            return await self._save(connection, conference, events, next_action_in, hold)

    async def _save(
        self,
        connection: asyncpg.Connection,
        conference: Conference,
        events: Sequence[PendingEvent],
        next_action_in: float | None,
        hold: bool,
    ) -> bool:
        new_events: list[PendingEvent] = []
        if events:
            known = await connection.fetch(
                "SELECT event_id FROM outbox WHERE event_id = ANY($1)",
                [e.event_id for e in events],
            )
            seen = {r["event_id"] for r in known}
            new_events = [e for e in events if e.event_id not in seen]
        row = await connection.fetchrow(
            """
            UPDATE conference
               SET status = $3, provider_conference_id = $4, poll_count = $5,
                   provider_ended_at = $6, finalized_at = $7, failure_reason = $8,
                   dialed_at = CASE WHEN $3 = 'in_progress' THEN coalesce(dialed_at, now())
                                    ELSE dialed_at END,
                   -- A webhook that arrived while we held the lease means "look again now".
                   next_action_at = CASE
                       WHEN $11 THEN now() + make_interval(secs => $9::float8)
                       WHEN $9::float8 IS NULL THEN NULL
                       WHEN nudged_at > claimed_at THEN now()
                       ELSE now() + make_interval(secs => $9::float8) END,
                   leased_until = CASE WHEN $11 THEN now() + make_interval(secs => $9::float8)
                                       ELSE NULL END,
                   last_sequence = last_sequence + $10
             WHERE id = $1 AND claim_token = $2
               -- Not final while a participant is on its way that this save does not know
               -- (an add accepted or reserved since the claim): the next claim dials it.
               AND (finalized_at IS NOT NULL OR $7::timestamptz IS NULL
                    OR participant_count <= $12)
            RETURNING last_sequence
            """,
            conference.id,
            conference.claim_token,
            conference.status.value,
            conference.provider_conference_id,
            conference.poll_count,
            conference.provider_ended_at,
            conference.finalized_at,
            conference.failure_reason,
            next_action_in,
            len(new_events),
            hold,
            len(conference.participants),
        )
        if row is None:
            return False
        await connection.executemany(
            _PARTICIPANT_WRITE,
            [
                (
                    conference.id,
                    p.position,
                    p.number,
                    p.caller_id,
                    p.record,
                    p.source,
                    p.dial_state.value,
                    p.dial_started_at,
                    p.provider_call_id,
                    p.provider_status,
                    p.started_at,
                    p.duration_seconds,
                    p.billed_seconds,
                    p.talk_seconds,
                    p.price,
                    p.recording_url,
                    p.settled_at,
                    p.rejection_reason,
                    p.reconciled_at,
                    p.status_changes,
                )
                for p in conference.participants
            ],
        )
        await self._insert_events(
            connection,
            conference,
            new_events,
            first_sequence=row["last_sequence"] - len(new_events) + 1,
        )
        return True

    async def _insert_events(
        self,
        connection: asyncpg.Connection,
        conference: Conference,
        events: Sequence[PendingEvent],
        first_sequence: int,
    ) -> None:
        await connection.executemany(
            """
            INSERT INTO outbox (event_id, conference_id, sequence, topic, key, value, trace_parent)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            """,
            [
                (
                    e.event_id,
                    conference.id,
                    first_sequence + i,
                    self._events_topic,
                    str(conference.id),
                    envelope(conference, e, first_sequence + i),
                    conference.trace_parent,
                )
                for i, e in enumerate(events)
            ],
        )

    # --- reconciliation ------------------------------------------------------------------

    async def claim_for_reconcile(
        self, provider_conference_id: str, lease_seconds: float
    ) -> tuple[Conference | None, bool]:
        """Take a conference by the provider's id for a correction, unless a worker holds it.
        Returns the conference (None when busy or unknown) and whether it is ours at all.
        The lease is the poller's: a scheduled conference's next step moves past it, so
        `claim_due` leaves it alone until reconcile has saved (or the lease has ended)."""
        async with self._acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"""
                UPDATE conference c
                   SET claim_token = gen_random_uuid(), claimed_at = now(),
                       leased_until = now() + make_interval(secs => $2),
                       next_action_at = CASE WHEN next_action_at IS NULL THEN NULL
                                             ELSE now() + make_interval(secs => $2) END
                 WHERE provider_conference_id = $1
                   AND (leased_until IS NULL OR leased_until < now())
                RETURNING {_CONFERENCE_COLUMNS}
                """,  # noqa: S608 (a constant column list, no input)
                provider_conference_id,
                lease_seconds,
            )
            if row is None:
                known = await connection.fetchval(
                    "SELECT true FROM conference WHERE provider_conference_id = $1",
                    provider_conference_id,
                )
                return None, bool(known)
            participants = await connection.fetch(
                "SELECT * FROM participant WHERE conference_id = $1 ORDER BY position", row["id"]
            )
        return _conference(row, [_participant(p) for p in participants]), True

    async def adjustments(self, conference_id: UUID) -> list[Adjustment]:
        async with self._acquire() as connection:
            rows = await connection.fetch(
                f"SELECT {_ADJUSTMENT_COLUMNS} FROM ledger_adjustment"  # noqa: S608 (constant)
                " WHERE conference_id = $1 ORDER BY id",
                conference_id,
            )
        return [_adjustment(r) for r in rows]

    async def save_reconciliation(
        self,
        conference: Conference,
        adjustments: Sequence[Adjustment],
        events: Sequence[PendingEvent],
        next_action_in: float | None,
    ) -> bool:
        async with self._acquire() as connection, connection.transaction():
            if not await self._save(connection, conference, events, next_action_in, hold=False):
                return False
            await connection.executemany(
                _ADJUSTMENT_INSERT, [_adjustment_row(a) for a in adjustments]
            )
        return True

    async def start_reconcile_run(self, start: datetime, end: datetime) -> int:
        async with self._acquire() as connection:
            run_id = await connection.fetchval(
                "INSERT INTO reconcile_run (period_start, period_end) VALUES ($1, $2) RETURNING id",
                start,
                end,
            )
        return int(run_id)

    async def finish_reconcile_run(
        self,
        run_id: int,
        outcome: str,
        summary: dict[str, Any],
        findings: Sequence[Finding],
        report: str = "",
    ) -> None:
        async with self._acquire() as connection, connection.transaction():
            await connection.executemany(
                """
                INSERT INTO reconcile_finding (run_id, kind, provider_conference_id,
                                               provider_call_id, conference_id, detail)
                VALUES ($1, $2, $3, $4, $5, $6)
                """,
                [
                    (
                        run_id,
                        f.kind,
                        f.provider_conference_id,
                        f.provider_call_id,
                        f.conference_id,
                        f.detail,
                    )
                    for f in findings
                ],
            )
            await connection.execute(
                """
                UPDATE reconcile_run
                   SET finished_at = now(), outcome = $2, summary = $3, report = $4
                 WHERE id = $1
                """,
                run_id,
                outcome,
                summary,
                report or None,
            )

    async def prune_idempotency_keys(self, older_than_days: float) -> int:
        """Forget keys older than the retention; a caller may then use one again."""
        pruned = 0
        async with self._acquire() as connection:
            for table in ("ingress_request", "participant_request", "command_key"):
                status = await connection.execute(
                    f"DELETE FROM {table} WHERE created_at < now() - make_interval(days => $1)",  # noqa: S608 (a constant table name)
                    int(older_than_days),
                )
                pruned += int(status.rsplit(" ", 1)[1])
        return pruned

    async def prune_history(
        self, history: PrunableHistory, older_than_days: float, limit: int
    ) -> int:
        age = timedelta(days=older_than_days)
        async with self._acquire() as connection:
            status = await connection.execute(_PRUNE[history], age, limit)
            pruned = int(status.rsplit(" ", 1)[1])
            if history == "reconcile_findings" and pruned < limit:
                await connection.execute(_PRUNE_EMPTY_RECONCILE_RUNS, age)
        return pruned

    async def announce(self, worker_id: str, stale_after_seconds: float) -> int:
        """Say this worker is alive; how many workers are (itself included)."""
        async with self._acquire() as connection, connection.transaction():
            await connection.execute(
                """
                INSERT INTO worker_presence (worker_id) VALUES ($1)
                ON CONFLICT (worker_id) DO UPDATE SET seen_at = now()
                """,
                worker_id,
            )
            await connection.execute(
                "DELETE FROM worker_presence WHERE seen_at < now() - make_interval(secs => $1)",
                stale_after_seconds,
            )
            return int(await connection.fetchval("SELECT count(*) FROM worker_presence"))

    async def withdraw(self, worker_id: str) -> None:
        async with self._acquire() as connection:
            await connection.execute("DELETE FROM worker_presence WHERE worker_id = $1", worker_id)

    async def health_figures(self) -> tuple[int, int, int]:
        async with self._acquire() as connection:
            row = await connection.fetchrow(
                """
                SELECT
                  (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS backlog,
                  (SELECT count(*) FROM conference
                    WHERE next_action_at < now() - interval '1 minute') AS overdue,
                  (SELECT coalesce((summary->>'discrepancies')::int, 0) FROM reconcile_run
                    WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1) AS discrepancies
                """
            )
        assert row is not None
        return int(row["backlog"]), int(row["overdue"]), int(row["discrepancies"] or 0)

    # --- webhooks ------------------------------------------------------------------------

    async def record_webhook(
        self,
        provider_conference_id: str | None,
        provider_call_id: str | None,
        payload: dict[str, Any],
        look_in: float | None,
        nudge_interval: float = 0.0,
    ) -> bool:
        async with self._acquire() as connection, connection.transaction():
            # One pending nudge per conference, whatever arrives: only a conference in progress
            # (the poller's) is nudged, a final one (next_action_at NULL) never. After a nudge,
            # the next is not due before `nudge_interval` has passed; while a poll holds the
            # lease, nudged_at asks for one poll more (see `save`) unless one was asked lately.
            row = await connection.fetchrow(
                """
                WITH target AS (
                    SELECT coalesce(
                        (SELECT id FROM conference WHERE provider_conference_id = $1),
                        (SELECT conference_id FROM participant WHERE provider_call_id = $2)) AS id
                ), nudge AS (
                    SELECT c.id,
                           c.leased_until IS NOT NULL AND c.leased_until >= now() AS leased,
                           c.nudged_at IS NULL
                               OR c.nudged_at <= now() - make_interval(secs => $4::float8)
                               AS fresh
                      FROM conference c JOIN target ON c.id = target.id
                     WHERE $3::float8 IS NOT NULL AND c.status = 'in_progress'
                       AND c.next_action_at IS NOT NULL
                       FOR UPDATE OF c
                ), nudged AS (
                    UPDATE conference c
                       SET nudged_at = CASE WHEN nudge.leased AND NOT nudge.fresh
                                            THEN c.nudged_at ELSE now() END,
                           next_action_at = CASE
                               WHEN nudge.leased THEN c.next_action_at
                               WHEN nudge.fresh
                               THEN least(c.next_action_at, now() + make_interval(secs => $3))
                               ELSE least(c.next_action_at,
                                          c.nudged_at + make_interval(secs => $4::float8))
                               END
                      FROM nudge
                     WHERE c.id = nudge.id
                )
                SELECT id FROM target
                """,
                provider_conference_id,
                provider_call_id,
                look_in,
                nudge_interval,
            )
            conference_id = None if row is None else row["id"]
            await connection.execute(
                """
                INSERT INTO provider_webhook
                       (provider_conference_id, provider_call_id, conference_id, payload)
                VALUES ($1, $2, $3, $4)
                """,
                provider_conference_id,
                provider_call_id,
                conference_id,
                payload,
            )
        return conference_id is not None

    # --- the outbox ----------------------------------------------------------------------

    @asynccontextmanager
    async def outbox_batch(self, limit: int) -> AsyncIterator[list[OutboxMessage]]:
        """Lease a batch of unpublished events in one short transaction, yield it with no
        transaction open (the send to Kafka takes its time), and mark it published in another
        when the block exits without an error. A relay that dies leaves its rows to another once
        the lease ends: at least once. A row is taken only when no earlier unpublished event of
        its conference is leased by another relay, so each conference's events go in order."""
        async with self._acquire() as connection:
            rows = await connection.fetch(
                """
                WITH batch AS (
                    SELECT o.id FROM outbox o
                     WHERE o.published_at IS NULL
                       AND (o.leased_until IS NULL OR o.leased_until < now())
                       AND NOT EXISTS (
                           SELECT 1 FROM outbox earlier
                            WHERE earlier.conference_id = o.conference_id
                              AND earlier.sequence < o.sequence
                              AND earlier.published_at IS NULL
                              AND earlier.leased_until >= now())
                     ORDER BY o.id
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED
                )
                UPDATE outbox o SET leased_until = now() + make_interval(secs => $2)
                  FROM batch
                 WHERE o.id = batch.id
                RETURNING o.id, o.topic, o.key, o.value::text AS value, o.trace_parent
                """,
                limit,
                _OUTBOX_LEASE_SECONDS,
            )
        messages = sorted(
            (
                OutboxMessage(
                    id=r["id"],
                    topic=r["topic"],
                    key=r["key"],
                    value=r["value"].encode(),
                    trace_parent=r["trace_parent"],
                )
                for r in rows
            ),
            key=lambda m: m.id,
        )
        yield messages
        if messages:
            async with self._acquire() as connection:
                await connection.execute(
                    "UPDATE outbox SET published_at = now(), leased_until = NULL"
                    " WHERE id = ANY($1)",
                    [m.id for m in messages],
                )


# Longer than a batch takes to send (the producer's send deadline is 5 s a message batch).
_OUTBOX_LEASE_SECONDS = 30.0


def _accepted_view(ingress: asyncpg.Record) -> dict[str, Any]:
    """A conference whose command is on Kafka but not yet taken by a worker."""
    command = ingress["command"]
    return {
        "id": str(ingress["conference_id"]),
        "status": ConferenceStatus.ACCEPTED.value,
        "idempotency_key": ingress["idempotency_key"],
        "reference": command["payload"].get("reference"),
        "metadata": command["payload"].get("metadata", {}),
        "created_at": ingress["created_at"].isoformat(),
        "provider_conference_id": None,
        "finalized_at": None,
        "failure_reason": None,
        "participants": [
            {"position": i, "number": p["number"], "dial_state": DialState.PENDING.value}
            for i, p in enumerate(command["payload"]["participants"])
        ],
        "totals": {"billed_seconds": 0, "price": "0.0000", "currency": "BRL"},
    }


def _conference_view(row: asyncpg.Record, participants: list[asyncpg.Record]) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    prices = [p["price"] for p in participants if p["price"] is not None]
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "idempotency_key": row["idempotency_key"],
        "reference": row["reference"],
        "metadata": row["metadata"],
        "created_at": iso(row["requested_at"]),
        "provider_conference_id": row["provider_conference_id"],
        "finalized_at": iso(row["finalized_at"]),
        "failure_reason": row["failure_reason"],
        "participants": [
            {
                "position": p["position"],
                "number": p["number"],
                "dial_state": p["dial_state"],
                "provider_call_id": p["provider_call_id"],
                "status": p["provider_status"],
                "started_at": iso(p["started_at"]),
                "settled_at": iso(p["settled_at"]),
                "duration_seconds": p["duration_seconds"],
                "billed_seconds": p["billed_seconds"],
                "talk_seconds": p["talk_seconds"],
                "price": money(p["price"]),
                "currency": p["currency"],
                "recording_url": p["recording_url"],
                "rejection_reason": p["rejection_reason"],
            }
            for p in participants
        ],
        "totals": {
            "billed_seconds": sum(p["billed_seconds"] or 0 for p in participants),
            "price": money(sum(prices, Decimal(0))),
            "currency": "BRL",
        },
    }
