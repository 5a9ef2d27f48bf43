"""The lifecycle and the bill of one call, computed from its plan and an instant."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from service.simulator.calls import Call, CallPlan, billed_seconds, events, progress
from service.simulator.payloads import hours_minutes_seconds
from service.simulator.scenario import FinalStatus


def _call(
    outcome: FinalStatus = "atendida", ring: int = 3, talk: int = 20, hangup_at: float | None = None
) -> Call:
    plan = CallPlan(outcome, 1, ring, talk, "fixo", Decimal("0.12"))
    return Call(1, 10, "+554832830151", None, True, plan, 100.0, "rec.mp3", hangup_at=hangup_at)


@given(st.integers(min_value=0, max_value=100_000))
def test_billing_rounds_talk_up_to_whole_minutes_of_at_least_one(talk: int) -> None:
    billed = billed_seconds(talk)

    assert billed % 60 == 0
    assert billed >= max(talk, 60)
    assert billed - talk < 60 or talk == 0


@given(st.integers(min_value=0, max_value=5_000), st.integers(min_value=0, max_value=5_000))
def test_answered_call_bills_its_talk_at_the_tariff(ring: int, talk: int) -> None:
    over = progress(_call(ring=ring, talk=talk), 100.0 + ring + talk)

    assert over.final
    assert (over.duration_seconds, over.talk_seconds) == (ring + talk, talk)
    assert over.price == Decimal("0.12") * (billed_seconds(talk) // 60)


@given(st.floats(min_value=0.0, max_value=22.99))
def test_answered_call_carries_no_bill_before_it_ends(elapsed: float) -> None:
    now = progress(_call(), 100.0 + elapsed)

    assert not now.final
    assert (now.duration_seconds, now.billed_seconds, now.price, now.recording_url) == (
        None,
        None,
        None,
        None,
    )


def test_statuses_follow_preparing_ringing_answered() -> None:
    call = _call()

    assert [progress(call, 100.0 + offset).status for offset in (0.5, 2, 10, 30)] == [
        "preparando",
        "chamando",
        "atendida",
        "atendida",
    ]


def test_hang_up_while_ringing_cancels() -> None:
    over = progress(_call(hangup_at=102.5), 200.0)

    assert (over.status, over.duration_seconds, over.price, over.billed_seconds) == (
        "cancelada",
        2,
        Decimal("0.00"),
        None,
    )


def test_hang_up_while_talking_bills_to_that_moment() -> None:
    over = progress(_call(ring=3, talk=600, hangup_at=100.0 + 3 + 61.7), 500.0)

    assert (over.status, over.duration_seconds, over.talk_seconds, over.billed_seconds) == (
        "atendida",
        64,
        61,
        120,
    )
    assert over.price == Decimal("0.24")
    assert over.hangup_cause == "16. normal"


def test_answered_call_announces_join_leave_and_end() -> None:
    assert [(event.kind, event.at) for event in events(_call(ring=3, talk=20))] == [
        ("joined", 103.0),
        ("left", 123.0),
        ("ended", 123.0),
    ]


def test_unanswered_call_announces_only_its_end() -> None:
    assert [event.kind for event in events(_call(outcome="ocupado"))] == ["ended"]


def test_durations_are_written_as_hours_minutes_seconds() -> None:
    assert hours_minutes_seconds(0) == "00:00:00"
    assert hours_minutes_seconds(60) == "00:01:00"
    assert hours_minutes_seconds(60, sixty_as_seconds=True) == "00:00:60"
    assert hours_minutes_seconds(3_725) == "01:02:05"
