"""Phone numbers and report dates, parsed the lenient-but-strict way the provider does."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.simulator.clock import HORIZON_SECONDS, SAO_PAULO, SimulatedClock
from service.simulator.phone_numbers import line_type, to_e164
from service.simulator.report_query import parse_instant


@given(st.from_regex(r"[1-9][0-9](9[0-9]{8}|[0-9]{8})", fullmatch=True))
def test_every_ddd_number_has_one_e164_form(national: str) -> None:
    e164 = to_e164(national)

    assert e164 == f"+55{national}"
    assert to_e164(e164) == e164


@pytest.mark.parametrize(
    ("number", "kind"),
    [("+5548999990001", "movel"), ("+554832830151", "fixo"), ("+14155550123", "fixo")],
)
def test_line_type_is_mobile_for_nine_digits_starting_with_9(number: str, kind: str) -> None:
    assert line_type(number) == kind


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2018-03-14", datetime(2018, 3, 14, tzinfo=SAO_PAULO)),
        ("2018-03-14T10:00:00Z", datetime(2018, 3, 14, 10, tzinfo=UTC)),
        ("2017-12-08T11:00:32-02:00", datetime(2017, 12, 8, 13, 0, 32, tzinfo=UTC)),
        ("2017-12-08T11:00:32 02:00", datetime(2017, 12, 8, 9, 0, 32, tzinfo=UTC)),
        ("2018-03-14 00:00:00 UTC", datetime(2018, 3, 14, tzinfo=UTC)),
        ("2018-03-14+00:00:00+UTC", datetime(2018, 3, 14, tzinfo=UTC)),
        ("2018-03-14T09:30:00", datetime(2018, 3, 14, 9, 30, tzinfo=SAO_PAULO)),
        ("2019-05-22T09:18:44.000-03:00", datetime(2019, 5, 22, 9, 18, 44, tzinfo=SAO_PAULO)),
    ],
)
def test_report_dates_in_every_sdk_format(raw: str, expected: datetime) -> None:
    assert parse_instant(raw, end_of_day=False) == expected


def test_a_date_alone_ends_at_the_end_of_that_day() -> None:
    end = parse_instant("2018-03-15", end_of_day=True)

    assert end is not None
    assert end.date().isoformat() == "2018-03-15"
    assert end + timedelta(microseconds=1) == datetime(2018, 3, 16, tzinfo=SAO_PAULO)


@pytest.mark.parametrize("raw", ["", "ontem", "14/03/2018", "2018-02-30", "2018-03-14T25:00:00"])
def test_unreadable_report_dates_are_none(raw: str) -> None:
    assert parse_instant(raw, end_of_day=False) is None


def test_real_clock_runs_time_scale_times_faster_on_a_real_sao_paulo_wall() -> None:
    ticks = iter([1000.0, 1002.0, 1002.0])
    wall = datetime(2024, 5, 1, 12, tzinfo=UTC)
    clock = SimulatedClock(60.0, rule="real", monotonic=lambda: next(ticks), wall_now=lambda: wall)

    assert clock.now() == 120.0
    assert clock.wall_at(120.0) == wall + timedelta(seconds=2)
    assert clock.wall_at(0.0).utcoffset() == timedelta(hours=-3)
    assert clock.real_seconds_until(180.0) == 1.0


def test_scaled_walls_advance_with_durations_and_stay_behind_real_time() -> None:
    real = [1000.0]
    wall = datetime(2024, 5, 1, 12, tzinfo=UTC)
    clock = SimulatedClock(60.0, monotonic=lambda: real[0], wall_now=lambda: wall)

    # 79 simulated seconds are 79 seconds of wall, whatever the scale.
    assert clock.wall_at(100.0) - clock.wall_at(21.0) == timedelta(seconds=79)
    assert clock.wall_at(0.0) == wall - timedelta(seconds=59 * HORIZON_SECONDS)
    for elapsed in (0.0, 1.0, 60.0, HORIZON_SECONDS):
        real[0] = 1000.0 + elapsed
        assert clock.wall_at(clock.now()) <= wall + timedelta(seconds=elapsed)


def test_scaled_walls_are_real_walls_at_time_scale_one() -> None:
    wall = datetime(2024, 5, 1, 12, tzinfo=UTC)
    clock = SimulatedClock(1.0, monotonic=lambda: 5.0, wall_now=lambda: wall)

    assert clock.wall_at(30.0) == wall + timedelta(seconds=30)
