"""The command line: its help documents the scenario and control API; bad input stops it."""

from pathlib import Path

import pytest

from service.simulator.cli import main


def test_help_documents_the_scenario_and_the_control_api(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])

    text = capsys.readouterr().out
    assert exit_.value.code == 0
    assert text.startswith("usage: python -m service simulator")
    for documented in (
        "--time-scale",
        "--scenario FILE",
        '"rules"',
        '"dial_timeout_rate"',
        "GET    /_simulator/ledger",
        "PATCH  /_simulator/calls/{id}",
        "POST   /_simulator/conferences/{id}/calls",
        '"dialect"',
        "--max-rps",
    ):
        assert documented in text


DIALECT_VALUES = {
    "--numbers": ("e164", "national", "digits55"),
    "--get-shape": ("object", "flat", "mixed"),
    "--dial-id": ("same", "different", "absent"),
    "--room-end": ("auto", "on_delete"),
    "--webhook-conference-id": ("included", "omitted"),
    "--ids": ("mixed", "number", "string"),
    "--prices": ("number", "string"),
    "--price-decimals": ("2", "6"),
    "--billed-minute": ("mixed", "00:01:00", "00:00:60"),
    "--timestamps": ("offset", "naive"),
    "--clock": ("scaled", "real"),
}


def test_help_lists_every_dialect_setting_with_every_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    text = capsys.readouterr().out
    for flag, values in DIALECT_VALUES.items():
        assert f"{flag} {{{','.join(values)}}}" in text
        assert f"  {flag} " in text.split("Dialects (")[1], f"{flag} is not explained"


@pytest.mark.parametrize(("flag", "value"), [("--numbers", "flat"), ("--price-decimals", "4")])
def test_a_dialect_value_that_does_not_exist_stops_with_exit_code_2(flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([flag, value])

    assert exit_.value.code == 2


def test_dialect_flags_become_overrides_of_the_scenario() -> None:
    from service.simulator.cli import _overrides, _parser

    args = _parser().parse_args(
        ["--numbers", "national", "--price-decimals", "6", "--max-rps", "5"]
    )

    assert _overrides(args) == {
        "dialect": {"numbers": "national", "price_decimals": 6},
        "max_rps": 5.0,
    }


def test_invalid_scenario_file_stops_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"rules": [{"status": "talvez"}]}')

    assert main(["--scenario", str(scenario)]) == 2
    assert "cannot use scenario" in capsys.readouterr().err


def test_missing_scenario_file_stops_with_exit_code_2(tmp_path: Path) -> None:
    assert main(["--scenario", str(tmp_path / "absent.json")]) == 2


@pytest.mark.parametrize("scale", ["0", "-1", "fast"])
def test_time_scale_must_be_a_positive_number(scale: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--time-scale", scale])

    assert exit_.value.code == 2
