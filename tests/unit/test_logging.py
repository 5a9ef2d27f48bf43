"""The libraries' records as our logging prints them: a fresh broker's coordinator election is
not an error, anything else aiokafka calls an error still is."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from aiokafka import errors
from aiokafka.consumer.group_coordinator import GroupCoordinator

from service.logging import configure_logging

# Where aiokafka 0.14 logs it: GroupCoordinator.ensure_coordinator_known, while a fresh broker
# answers FindCoordinator with COORDINATOR_NOT_AVAILABLE (no __consumer_offsets topic yet).
COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
COORDINATOR_MESSAGE = "Group Coordinator Request failed: %s"


@pytest.fixture
def worker_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Logging configured as the worker configures it, put back as it was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    names = ("aiokafka", "kafka", "alembic", "aiohttp", "httpx", "uvicorn", "uvicorn.error")
    levels = {name: logging.getLogger(name).level for name in names}
    coordinator = logging.getLogger(COORDINATOR_LOGGER)
    filters = coordinator.filters[:]
    try:
        yield capsys
    finally:
        root.handlers[:], root.level = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger("uvicorn.access").disabled = False
        coordinator.filters[:] = filters
        structlog.reset_defaults()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_aiokafka_still_logs_the_coordinator_lookup_where_we_expect() -> None:
    """The record the filter downgrades: if aiokafka moves it, this says so."""
    source = inspect.getsource(GroupCoordinator.ensure_coordinator_known)
    assert f'log.error("{COORDINATOR_MESSAGE}", err)' in source
    assert GroupCoordinator.__module__ == COORDINATOR_LOGGER


def test_coordinator_not_available_at_start_is_not_an_error(
    worker_logging: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    logging.getLogger(COORDINATOR_LOGGER).error(
        COORDINATOR_MESSAGE, errors.GroupCoordinatorNotAvailableError()
    )
    [line] = _lines(worker_logging)
    assert line["level"] == "warning"
    assert line["logger"] == COORDINATOR_LOGGER
    assert line["event"] == (
        "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    )


def test_other_aiokafka_errors_are_still_errors(
    worker_logging: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    coordinator = logging.getLogger(COORDINATOR_LOGGER)
    coordinator.error(COORDINATOR_MESSAGE, errors.GroupAuthorizationFailedError("conference"))
    coordinator.error(
        "Heartbeat send request failed: %s. Will retry.", errors.RequestTimedOutError()
    )
    logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, OSError("x"))
    assert [line["level"] for line in _lines(worker_logging)] == ["error", "error", "error"]


def test_the_downgraded_record_respects_the_configured_level(
    worker_logging: pytest.CaptureFixture[str],
) -> None:
    """At LOG_LEVEL=ERROR a warning is not shown, downgraded or not."""
    configure_logging("ERROR", "json")
    logging.getLogger(COORDINATOR_LOGGER).error(
        COORDINATOR_MESSAGE, errors.GroupCoordinatorNotAvailableError()
    )
    assert _lines(worker_logging) == []


def test_console_format_downgrades_it_too(worker_logging: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "console")
    logging.getLogger(COORDINATOR_LOGGER).error(
        COORDINATOR_MESSAGE, errors.GroupCoordinatorNotAvailableError()
    )
    out = worker_logging.readouterr().out
    assert "[warning" in out and "[error" not in out, out
