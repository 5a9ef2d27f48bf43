"""What a consumer reads off Kafka: CloudEvents 1.0 attributes in binary mode (`ce_*` headers) on
both topics, and values that are exactly the documented JSON."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import jsonschema
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.e2e.conftest import ROOT, Lane
from tests.waiting import eventually

FINAL = "conference.completed"


async def records_of(
    lane: Lane, topic: str, conference_id: str, done: Any, timeout: float = 60
) -> list[ConsumerRecord]:
    """Every record of one conference on `topic`, headers included, read from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=lane.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: list[ConsumerRecord] = []

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(r for r in records if r.key == conference_id.encode())
            return bool(done(seen))

        await eventually(enough, timeout, f"the conference's messages on {topic}")
        return seen
    finally:
        await consumer.stop()


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def values(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def test_events_and_commands_carry_cloudevents_headers_and_documented_values(
    lane: Lane, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/v1/conferences",
        headers={"Idempotency-Key": f"cloudevents-{uuid.uuid4()}"},
        json={"participants": [{"number": "4832830151"}, {"number": "+5548999990000"}]},
    )
    assert response.status_code == 202, response.text
    conference_id = response.json()["id"]

    events = await records_of(
        lane,
        lane.events_topic,
        conference_id,
        lambda seen: any(v["type"] == FINAL for v in values(seen)),
    )
    schema = json.loads((ROOT / "schemas/conference.events.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for record in events:
        value = orjson.loads(record.value)
        validator.validate(value)
        assert headers(record) == {
            "ce_specversion": "1.0",
            "ce_id": value["event_id"],
            "ce_source": "/conference-service",
            "ce_type": f"{value['type']}.v1",
            "ce_time": value["occurred_at"],
            "ce_subject": conference_id,
            "ce_dataschema": "https://conference-service/schemas/conference.events.v1.json",
            "content-type": "application/json",
        }
    assert [v["sequence"] for v in values(events)] == list(range(1, len(events) + 1))

    [command] = await records_of(lane, lane.commands_topic, conference_id, bool)
    accepted = values(events)[0]
    assert accepted["type"] == "conference.accepted"
    command_headers = headers(command)
    assert command_headers["ce_type"] == "conference.create.v1"
    assert command_headers["ce_id"] == accepted["data"]["command_id"]
    assert command_headers["ce_subject"] == conference_id
    assert command_headers["ce_time"] == orjson.loads(command.value)["requested_at"]
    assert command_headers["ce_dataschema"].endswith("/schemas/conference.commands.v1.json")
