"""What the simulated provider has done: its conferences, their calls, and every number dialed."""

from collections import Counter
from dataclasses import dataclass, field

from service.simulator.calls import Call, CallPlan, is_final, timeline

# The first ids are the ones in the provider's documentation examples.
_FIRST_CONFERENCE_ID = 4921
_FIRST_CALL_ID = 46132


@dataclass
class Conference:
    id: int
    created_at: float
    created_by_control: bool = False
    ended_at: float | None = None
    calls: list[Call] = field(default_factory=list)


class Ledger:
    """Ids keep growing across resets so a long-running client never sees one reused."""

    def __init__(self, recording_base_url: str, id_offset: int = 0) -> None:
        self._recording_base_url = recording_base_url
        self._next_conference_id = _FIRST_CONFERENCE_ID + id_offset
        self._next_call_id = _FIRST_CALL_ID + id_offset
        self.conferences: dict[int, Conference] = {}
        self.calls: dict[int, Call] = {}
        self.dials: Counter[tuple[int, str]] = Counter()

    def open_conference(self, now: float, *, by_control: bool = False) -> Conference:
        conference = Conference(self._next_conference_id, now, created_by_control=by_control)
        self._next_conference_id += 1
        self.conferences[conference.id] = conference
        return conference

    def place_call(
        self,
        conference: Conference,
        *,
        number: str,
        caller_id: str | None,
        record: bool,
        plan: CallPlan,
        dialed_at: float,
        by_control: bool = False,
    ) -> Call:
        call_id = self._next_call_id
        self._next_call_id += 1
        call = Call(
            id=call_id,
            conference_id=conference.id,
            number=number,
            caller_id=caller_id,
            record=record,
            plan=plan,
            dialed_at=dialed_at,
            recording_url=f"{self._recording_base_url}{call_id}.mp3" if record else None,
            created_by_control=by_control,
        )
        conference.calls.append(call)
        self.calls[call_id] = call
        if not by_control:
            self.dials[(conference.id, number)] += 1
        return call

    def close_if_finished(self, conference: Conference, now: float) -> None:
        """The provider closes a room once every call in it has ended, at the last hang-up."""
        if conference.ended_at is not None or not conference.calls:
            return
        if all(is_final(call, now) for call in conference.calls):
            conference.ended_at = max(
                call.dialed_at + timeline(call).ended_after for call in conference.calls
            )

    def end_conference(self, conference: Conference, now: float) -> None:
        conference.ended_at = now
        for call in conference.calls:
            if not is_final(call, now):
                call.hangup_at = now

    def clear(self) -> None:
        self.conferences.clear()
        self.calls.clear()
        self.dials.clear()
