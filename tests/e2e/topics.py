"""Reading a lane's topics from the beginning, as a downstream consumer would."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.e2e.conftest import Lane
from tests.waiting import eventually

Events = dict[str, list[dict[str, Any]]]


async def read_topic(
    lane: Lane,
    topic: str,
    done: Callable[[list[tuple[bytes | None, dict[str, Any]]]], bool],
    timeout: float = 60,
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Every (key, JSON value) on `topic`, read from the start until `done` says enough."""
    consumer = AIOKafkaConsumer(bootstrap_servers=lane.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: list[tuple[bytes | None, dict[str, Any]]] = []

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend((r.key, orjson.loads(r.value)) for r in records)
            return done(seen)

        await eventually(enough, timeout, f"the expected messages on {topic}")
        return seen
    finally:
        await consumer.stop()


async def events_by_conference(lane: Lane, final_for: set[str], timeout: float = 60) -> Events:
    """The lane's events grouped by conference, once each of `final_for` has a final event."""
    finals = {
        "conference.completed",
        "conference.failed",
        "conference.canceled",
        "conference.unresolved",
    }

    def done(seen: list[tuple[bytes | None, dict[str, Any]]]) -> bool:
        finished = {e["conference_id"] for _, e in seen if e["type"] in finals}
        return final_for <= finished

    grouped: Events = defaultdict(list)
    for key, event in await read_topic(lane, lane.events_topic, done, timeout):
        assert key == event["conference_id"].encode(), "events are keyed by conference id"
        grouped[event["conference_id"]].append(event)
    return grouped
