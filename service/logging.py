"""structlog for our code and for the libraries under it (uvicorn, aiokafka, asyncpg)."""

from __future__ import annotations

import functools
import logging
import sys
from decimal import Decimal
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import FilteringBoundLogger


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Our own events are rendered straight to stdout (orjson, no stdlib logging on the way: it
    was a tenth of the api's CPU per request); the libraries' stdlib records get the same shape
    through a formatter on the root logger. `stream` moves both elsewhere (`events` prints its
    lines on stdout and logs on stderr)."""
    out = stream or sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    json_lines = fmt == "json"
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps, default=_fallback)
            if json_lines
            else structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=functools.partial(_NamedLogger, json_lines, out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer()
                if json_lines
                else structlog.dev.ConsoleRenderer(colors=False),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log duplicates our own one-line-per-request summary.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("aiokafka", "kafka", "alembic", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # addFilter keeps one copy of it, however often this runs.
    logging.getLogger(_COORDINATOR_LOGGER).addFilter(_COORDINATOR_ELECTION)


_COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
_COORDINATOR_ERROR = "GroupCoordinatorNotAvailableError"


class _CoordinatorElection(logging.Filter):
    """A worker started against a fresh broker finds no group coordinator until the broker has
    created `__consumer_offsets` and elected one: aiokafka's `ensure_coordinator_known` logs
    each FindCoordinator answer COORDINATOR_NOT_AVAILABLE as an error ("Group Coordinator
    Request failed: ...") and retries every 100 ms. That is the broker starting, not a fault:
    a warning, so a clean start prints no error (and a coordinator that never comes still
    shows). Only records carrying that error class are downgraded (the same class in the
    heartbeat's "will retry" is as harmless); every other aiokafka error stays an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        # By the class's name: logging is imported by the domain-facing layers, which must not
        # import aiokafka (import-linter), and only aiokafka logs on this logger.
        if record.levelno < logging.ERROR or not isinstance(record.args, tuple):
            return True
        if not any(type(a).__name__ == _COORDINATOR_ERROR for a in record.args):
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        # The logger let it through as an error; at LOG_LEVEL=ERROR a warning is not shown.
        return logging.getLogger(record.name).isEnabledFor(logging.WARNING)


_COORDINATOR_ELECTION = _CoordinatorElection()


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


class _NamedLogger:
    """stdout, in bytes for JSON lines or in text for the console, with the name that
    `add_logger_name` reads, as a stdlib logger would have."""

    def __init__(self, json_lines: bool, out: TextIO, name: str = "") -> None:
        self.name = name
        self._out: Any = (
            structlog.BytesLogger(out.buffer) if json_lines else structlog.PrintLogger(out)
        )

    def __getattr__(self, method: str) -> Any:
        return getattr(self._out, method)


def _fallback(value: object) -> str:
    """What orjson cannot write: Decimals as their exact text, anything else as its repr."""
    return str(value) if isinstance(value, Decimal) else repr(value)
