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
    ):
        assert documented in text


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
