"""The SQL of adding a participant to a running conference: the api's reservation of a
position for a number, and the consumer's acceptance of the add. `PostgresStore` opens the
connection and the transaction; these run inside it.

Both take the conference row's lock first and count positions on it (`participant_count`),
as the worker's final save checks it: an add either lands before the conference finishes, or
finds it finished and is refused, never promised and then lost."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from service.domain.commands import MAX_PARTICIPANTS, AddParticipantCommand
from service.domain.conference import (
    AdditionRefused,
    Conference,
    ConferenceStatus,
    addition_refused,
)
from service.ports import AdditionRecord, ParticipantRefused

_RECORD_COLUMNS = "conference_id, position, body_sha256, command, created_at"


def _record(row: asyncpg.Record) -> AdditionRecord:
    return AdditionRecord(
        conference_id=row["conference_id"],
        position=row["position"],
        body_sha256=row["body_sha256"],
        command=row["command"],
        created_at=row["created_at"],
    )


async def recall(
    connection: asyncpg.Connection, caller: str, idempotency_key: str
) -> AdditionRecord | None:
    row = await connection.fetchrow(
        f"SELECT {_RECORD_COLUMNS} FROM participant_request"  # noqa: S608 (constant columns)
        " WHERE caller = $1 AND idempotency_key = $2",
        caller,
        idempotency_key,
    )
    return None if row is None else _record(row)


async def reserve(
    connection: asyncpg.Connection,
    body_sha256: str,
    command: AddParticipantCommand,
    default_max_duration: int,
) -> AdditionRecord | None:
    """The add stored with its position; None when its key was stored first by another request
    (the caller then rolls back and answers what that one stored)."""
    position = await take_position(connection, command, default_max_duration)
    row = await connection.fetchrow(
        f"""
        INSERT INTO participant_request (
            caller, idempotency_key, body_sha256, command_id, conference_id, position, number,
            command, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (caller, idempotency_key) DO NOTHING
        RETURNING {_RECORD_COLUMNS}
        """,  # noqa: S608 (constant columns)
        command.caller,
        command.idempotency_key,
        body_sha256,
        command.command_id,
        command.conference_id,
        position,
        command.payload.number,
        command.wire,
        command.requested_at,
    )
    return None if row is None else _record(row)


async def take_position(
    connection: asyncpg.Connection, command: AddParticipantCommand, default_max_duration: int
) -> int:
    """The next free position in the caller's conference, taken (the conference row locked
    until the transaction ends), or `ParticipantRefused`."""
    row = await connection.fetchrow(
        """
        SELECT id, caller, status, accepted_at, max_duration_seconds, provider_ended_at,
               cancel_requested_at, finalized_at, participant_count, now() AS now
          FROM conference WHERE id = $1 AND caller = $2
           FOR UPDATE
        """,
        command.conference_id,
        command.caller,
    )
    if row is None:
        waiting = await connection.fetchval(
            "SELECT true FROM ingress_request WHERE conference_id = $1 AND caller = $2",
            command.conference_id,
            command.caller,
        )
        if waiting:
            raise ParticipantRefused(
                AdditionRefused.NOT_READY, "the conference is still being accepted"
            )
        raise ParticipantRefused(AdditionRefused.UNKNOWN_CONFERENCE, "no such conference")
    taken = await connection.fetchrow(
        """
        SELECT coalesce(array_agg(number), '{}') AS numbers,
               coalesce(max(position) + 1, 0) AS next_position
          FROM (SELECT number, position FROM participant WHERE conference_id = $1
                UNION ALL
                SELECT number, position FROM participant_request WHERE conference_id = $1) t
        """,
        command.conference_id,
    )
    refusal = addition_refused(
        _conference(row),
        command.payload.number,
        set(taken["numbers"]),
        row["now"],
        default_max_duration,
        MAX_PARTICIPANTS,
    )
    if refusal is not None:
        raise ParticipantRefused(refusal, _DETAIL[refusal])
    position = max(int(row["participant_count"]), int(taken["next_position"]))
    await connection.execute(
        "UPDATE conference SET participant_count = $2 WHERE id = $1",
        command.conference_id,
        position + 1,
    )
    return position


async def accept(
    connection: asyncpg.Connection, command: AddParticipantCommand, default_max_duration: int
) -> int | None:
    """The participant inserted, pending, and the conference made due; its position, or None
    when this add was accepted before (a redelivery, a retry)."""
    accepted = await connection.fetchval(
        "SELECT true FROM participant WHERE command_id = $1", command.command_id
    )
    if accepted:
        return None
    position = await connection.fetchval(
        "SELECT position FROM participant_request WHERE command_id = $1", command.command_id
    )
    if position is None:
        # Produced straight to Kafka: its key is the worker's record, as for a create.
        fresh_key = await connection.fetchval(
            """
            INSERT INTO command_key (caller, idempotency_key, command_id) VALUES ($1, $2, $3)
            ON CONFLICT (caller, idempotency_key) DO NOTHING
            RETURNING true
            """,
            command.caller,
            command.idempotency_key,
            command.command_id,
        )
        if not fresh_key:
            return None
        position = await take_position(connection, command, default_max_duration)
    else:
        # Reserved by the api: the conference row is locked here too, so the add and the
        # worker's saves take their turns.
        await connection.execute(
            "SELECT 1 FROM conference WHERE id = $1 FOR UPDATE", command.conference_id
        )
    payload = command.payload
    await connection.execute(
        """
        INSERT INTO participant (conference_id, position, number, caller_id, record, command_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        command.conference_id,
        position,
        payload.number,
        payload.caller_id,
        bool(payload.record),
        command.command_id,
    )
    return int(position)


def _conference(row: asyncpg.Record) -> Conference:
    return Conference(
        id=row["id"],
        command_id=UUID(int=0),
        caller=row["caller"],
        idempotency_key="",
        status=ConferenceStatus(row["status"]),
        reference=None,
        metadata={},
        max_duration_seconds=row["max_duration_seconds"],
        accepted_at=row["accepted_at"],
        provider_ended_at=row["provider_ended_at"],
        cancel_requested_at=row["cancel_requested_at"],
        finalized_at=row["finalized_at"],
        participant_count=row["participant_count"],
    )


_DETAIL: dict[AdditionRefused, str] = {
    AdditionRefused.UNKNOWN_CONFERENCE: "no such conference",
    AdditionRefused.NOT_READY: "the conference is still being accepted",
    AdditionRefused.FINAL: "the conference has ended",
    AdditionRefused.CANCELED: "the conference is being canceled",
    AdditionRefused.PAST_MAX_DURATION: "the conference is past its maximum duration",
    AdditionRefused.ROOM_ENDED: "the provider's room has ended",
    AdditionRefused.DUPLICATE_NUMBER: "the number is already in the conference",
    AdditionRefused.FULL: f"a conference has at most {MAX_PARTICIPANTS} participants",
}


def view_of_reserved(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Adds answered 202 that no worker has accepted yet, as GET shows them: pending."""
    return [
        {"position": r["position"], "number": r["number"], "dial_state": "pending"} for r in rows
    ]
