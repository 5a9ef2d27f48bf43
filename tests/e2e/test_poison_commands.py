"""Commands produced straight to Kafka that Postgres could never store: they go to the DLQ with
their reason, and the partition carries on with the commands behind them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.e2e.conftest import Base, Lane, open_lane
from tests.waiting import eventually


@pytest.fixture
async def poison_lane(base: Base) -> AsyncIterator[Lane]:
    lane = await open_lane(base)
    await lane.ready(lane.processes[-1])
    yield lane
    unclean = await lane.close()
    assert not unclean, unclean


def command(**payload: Any) -> dict[str, Any]:
    return {
        "type": "conference.create",
        "command_id": str(uuid.uuid4()),
        "conference_id": str(uuid.uuid4()),
        "caller": "e2e",
        "idempotency_key": f"poison-{uuid.uuid4().hex[:8]}",
        "requested_at": datetime.now(UTC).isoformat(),
        "payload": {"participants": [{"number": "4832830151"}], **payload},
    }


async def dead_lettered(lane: Lane, count: int) -> list[dict[str, bytes]]:
    """The headers of the first `count` messages on the lane's DLQ."""
    consumer = AIOKafkaConsumer(bootstrap_servers=lane.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(lane.dlq_topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: list[dict[str, bytes]] = []

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(dict(r.headers) for r in records)
            return len(seen) >= count

        await eventually(enough, 30, f"{count} messages on the DLQ")
        return seen
    finally:
        await consumer.stop()


async def test_a_command_postgres_cannot_store_is_dead_lettered_and_the_partition_moves_on(
    poison_lane: Lane,
) -> None:
    lane = poison_lane
    poisons = [command(reference="a\u0000b"), command(metadata={"team": "a\u0000b"})]
    valid = command(reference="behind-the-poison")
    producer = AIOKafkaProducer(bootstrap_servers=lane.kafka)
    await producer.start()
    try:
        # One partition for all three: the valid command waits behind the poison ones.
        for value in [*poisons, valid]:
            await producer.send_and_wait(
                lane.commands_topic, orjson.dumps(value), key=b"same", partition=0
            )
    finally:
        await producer.stop()

    db = await lane.connect()
    try:

        async def accepted() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT true FROM conference WHERE id = $1", uuid.UUID(valid["conference_id"])
                )
            )

        await eventually(accepted, 20, "the valid command behind the poison ones to be accepted")
        assert await db.fetchval("SELECT count(*) FROM conference") == 1
    finally:
        await db.close()
    headers = await dead_lettered(lane, 2)
    assert [h["dlq.reason"] for h in headers] == [b"invalid-command", b"invalid-command"]
    assert b"NUL" in headers[0]["dlq.detail"] and b"NUL" in headers[1]["dlq.detail"]
    assert all(h["dlq.source"].startswith(lane.commands_topic.encode()) for h in headers)
