"""The consumer on the real broker: a command for a caller nobody configured is dead-lettered,
and the lag metric rises while a partition is stuck and falls once it moves again."""

from __future__ import annotations

import re

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from tests.e2e.conftest import Base, open_lane
from tests.e2e.test_poison_commands import command, dead_lettered
from tests.waiting import eventually


async def _lag(metrics_url: str) -> int | None:
    async with httpx.AsyncClient(timeout=2) as client:
        text = (await client.get(metrics_url)).text
    values = re.findall(r"^conference_consumer_lag\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
    return None if not values else int(sum(float(v) for v in values))


async def test_an_unknown_caller_is_dead_lettered_and_a_stuck_partition_shows_its_lag(
    base: Base,
) -> None:
    lane = await open_lane(base, workers=0)
    db = await lane.connect()
    producer = AIOKafkaProducer(bootstrap_servers=lane.kafka)
    await producer.start()
    try:
        worker = lane.start_worker()
        await lane.ready(worker)
        metrics_url = f"http://127.0.0.1:{worker.metrics_port}/metrics"

        async def exported() -> bool:
            return await _lag(metrics_url) is not None

        await eventually(exported, 30, "the lag to be exported from start")

        stranger = {**command(), "caller": "nobody-configured"}
        await producer.send_and_wait(lane.commands_topic, orjson.dumps(stranger), key=b"k")
        [headers] = await dead_lettered(lane, 1)
        assert headers["dlq.reason"] == b"unknown-caller"
        assert await db.fetchval("SELECT count(*) FROM command_key") == 0

        # Postgres refuses the accepts (an outage as the worker sees it): the partition waits.
        await db.execute("REVOKE INSERT ON command_key FROM CURRENT_USER")
        for _ in range(5):
            await producer.send_and_wait(lane.commands_topic, orjson.dumps(command()), key=b"stuck")

        async def risen() -> bool:
            return (await _lag(metrics_url) or 0) >= 5

        await eventually(risen, 30, "the lag to rise while the partition is stuck")
        stuck_lag = await _lag(metrics_url)
        await db.execute("GRANT INSERT ON command_key TO CURRENT_USER")

        async def caught_up() -> bool:
            return await _lag(metrics_url) == 0

        await eventually(caught_up, 60, "the lag to fall once the partition moves")
        accepted = await db.fetchval("SELECT count(*) FROM conference")
    finally:
        await producer.stop()
        await db.execute("GRANT INSERT ON command_key TO CURRENT_USER")
        await db.close()
        assert not await lane.close()
    print(
        f"\nunknown caller dead-lettered; lag while stuck {stuck_lag}, then 0; accepted {accepted}"
    )
    assert accepted == 5
