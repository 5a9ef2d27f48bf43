"""structlog for our code and for the libraries under it (uvicorn, aiokafka, asyncpg)."""

from __future__ import annotations

import functools
import logging
import sys
from decimal import Decimal
from typing import Any

import orjson
import structlog
from structlog.typing import FilteringBoundLogger


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Our own events are rendered straight to stdout (orjson, no stdlib logging on the way: it
    was a tenth of the api's CPU per request); the libraries' stdlib records get the same shape
    through a formatter on the root logger."""
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
        logger_factory=functools.partial(_NamedLogger, json_lines),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
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
    for noisy in ("aiokafka", "kafka", "alembic", "aiohttp", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


class _NamedLogger:
    """stdout, in bytes for JSON lines or in text for the console, with the name that
    `add_logger_name` reads, as a stdlib logger would have."""

    def __init__(self, json_lines: bool, name: str = "") -> None:
        self.name = name
        self._out: Any = (
            structlog.BytesLogger(sys.stdout.buffer) if json_lines else structlog.PrintLogger()
        )

    def __getattr__(self, method: str) -> Any:
        return getattr(self._out, method)


def _fallback(value: object) -> str:
    """What orjson cannot write: Decimals as their exact text, anything else as its repr."""
    return str(value) if isinstance(value, Decimal) else repr(value)
