"""The lifecycle run once per provider dialect: a matrix of simulator settings that covers every
value of every setting at least once (clock "real" aside: it is the old, inconsistent rule, kept
for tests that compare provider times with real time).

Each lane prints, even without -s: conferences, dials per participant (max), the billing total
against the simulator's ledger, and the participants whose bill does not match (0 when right).
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Base, open_lane
from tests.e2e.lifecycle import check_lifecycle, outcome_rules, run_lifecycle

DIALECTS = {
    # What the simulator serves by default (and `make run`): the provider notes' reading.
    "documented": (
        "--numbers", "e164", "--get-shape", "object", "--dial-id", "same", "--room-end", "auto",
        "--webhook-conference-id", "included", "--ids", "mixed", "--prices", "number",
        "--price-decimals", "2", "--billed-minute", "mixed", "--timestamps", "offset",
    ),
    # The seed's own examples: national numbers, the flat GET, strings everywhere.
    "seed": (
        "--numbers", "national", "--get-shape", "flat", "--dial-id", "absent",
        "--room-end", "on_delete", "--webhook-conference-id", "omitted", "--ids", "string",
        "--prices", "string", "--price-decimals", "6", "--billed-minute", "00:00:60",
        "--timestamps", "naive",
    ),
    # A provider whose dial answer is another id, mixing GET shapes, in 55-prefixed digits.
    "digits55": (
        "--numbers", "digits55", "--get-shape", "mixed", "--dial-id", "different",
        "--room-end", "auto", "--webhook-conference-id", "omitted", "--ids", "number",
        "--prices", "number", "--price-decimals", "6", "--billed-minute", "00:01:00",
    ),
    # The documented shapes with one change each that the first lanes mix with others.
    "different-ids": (
        "--dial-id", "different", "--room-end", "on_delete", "--ids", "string",
        "--billed-minute", "00:00:60", "--timestamps", "naive",
    ),
}  # fmt: skip
TIME_SCALE = 30
CONFERENCES = 8  # and the refused one and the deleted one


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_lifecycle_in_every_dialect(
    base: Base, dialect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lane = await open_lane(
        base,
        time_scale=TIME_SCALE,
        simulator_args=DIALECTS[dialect],
        WEBHOOKS_ENABLED="true",
        WEBHOOK_DEBOUNCE_SECONDS="0.3",
    )
    try:
        await lane.register_webhooks()
        # A failed line rings 30 s (1 s here): with rooms that close at the last hang-up, the
        # second participant is dialed before the first one can close the room.
        async with lane.simulator() as sim:
            scenario = {"rules": outcome_rules(ring_seconds=30)}
            assert (await sim.put("/_simulator/scenario", json=scenario)).status_code == 200
        db = await lane.connect()
        try:
            run = await run_lifecycle(lane, db, conferences=CONFERENCES)
        finally:
            await db.close()
        with capsys.disabled():
            print(f"\n{run.summary(f'dialect {dialect}')}")
            for mismatch in run.mismatched[:3]:
                print(f"  mismatched {mismatch}")
        check_lifecycle(run)
    finally:
        assert not await lane.close()
