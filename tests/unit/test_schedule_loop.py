"""The schedule loop on in-memory fakes: it keeps at most a batch in hand, a slow step does not
hold back the conferences claimed with it, and claimed work is finished when a stop arrives."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest

from service.domain.conference import Conference
from service.entrypoints.schedule import Loop, run_schedule
from service.handlers import WorkerDeps, accept_command
from service.ports import Urgency
from tests.fakes import FakeBudget, FakeClock, FakeConferenceStore, FakeProvider
from tests.unit.test_dial_protocol import DIALING_STATUSES, TIMING, command
from tests.waiting import eventually


class RecordingStep:
    """Finishes each conference at once, except `slow`, which waits for `release`."""

    def __init__(self, store: FakeConferenceStore, slow: UUID) -> None:
        self.store = store
        self.slow = slow
        self.release = asyncio.Event()
        self.stepped: list[UUID] = []
        self.in_hand = 0
        self.most_in_hand = 0

    async def __call__(self, deps: WorkerDeps, conference: Conference) -> None:
        self.in_hand += 1
        self.most_in_hand = max(self.most_in_hand, self.in_hand)
        try:
            if conference.id == self.slow:
                await self.release.wait()
            else:
                await asyncio.sleep(0.001)
            assert await self.store.save(conference, [], None)
            self.stepped.append(conference.id)
        finally:
            self.in_hand -= 1


@pytest.fixture
def store() -> FakeConferenceStore:
    return FakeConferenceStore(FakeClock())


async def test_a_slow_step_holds_back_nothing_and_is_finished_on_stop(
    store: FakeConferenceStore,
) -> None:
    ids = []
    for i in range(12):
        cmd = command("4832830151", key=f"key-{i}")
        assert await accept_command(store, cmd, store.clock())
        ids.append(cmd.conference_id)
    step = RecordingStep(store, slow=ids[0])
    deps = WorkerDeps(
        store, FakeProvider(), FakeBudget(store.clock), TIMING, store.clock, lambda: 0.5
    )
    stop = asyncio.Event()

    loop = asyncio.create_task(
        run_schedule("test", deps, Loop(DIALING_STATUSES, step, 1, True, Urgency.CREATE), 4, stop)
    )

    # The slow conference was claimed in the first batch of 4; the 11 others still get done.
    async def all_but_the_slow_one() -> bool:
        return len(step.stepped) == 11

    await eventually(all_but_the_slow_one, 5, "the other 11 conferences to be stepped", 0.01)
    assert ids[0] not in step.stepped
    assert step.most_in_hand <= 4

    stop.set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(loop), 0.1)  # still finishing what it claimed
    step.release.set()
    await asyncio.wait_for(loop, 5)
    assert sorted(step.stepped) == sorted(ids)
