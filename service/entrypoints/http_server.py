"""What the HTTP server admits before the app sees a request: bounded connections, header size,
header count and header read time, and problem+json for the server's own refusals.

uvicorn runs httptools (chosen for ingress throughput), which has no header limits of its own:
it buffers a header value for as long as the client keeps sending it. This protocol counts the
bytes of each request head as they arrive and refuses the request once the bound is passed, so
a head costs at most `max_header_bytes` of memory, whatever the client sends, and for at most
`header_timeout_seconds`. Body deadlines are the app's (service/entrypoints/http.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.settings import ApiSettings

_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class HttpBounds:
    """The defaults are ApiSettings' defaults; README ("Limits at the edge") sizes them."""

    max_connections: int = 1000
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> HttpBounds:
        return cls(
            max_connections=settings.api_max_connections,
            max_header_bytes=settings.api_max_header_bytes,
            max_headers=settings.api_max_headers,
            header_timeout_seconds=settings.api_header_timeout_seconds,
        )


def problem_bytes(status: int, title: str, detail: str, kind: str) -> bytes:
    """A whole HTTP/1.1 response with a problem+json body that closes the connection."""
    body = orjson.dumps(
        {
            "type": f"https://conference-service/problems/{kind}",
            "title": title,
            "status": status,
            "detail": detail,
        }
    )
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing; httptools wraps it."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    bounds = HttpBounds()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.bounds.max_connections:
            # Refused before anything is read: the count of connections bounds the memory.
            self._refuse(
                503, "Service unavailable", "too many connections; retry shortly", "overloaded"
            )
            return
        # A connection that never sends a head is cut too, not only one that sends it slowly.
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._refusal is not None:
            return
        if self._reading_head:
            if self._head_timer is None:
                self._start_head_timer()
            # Only the bytes up to the blank line belong to the head; what follows is body.
            end = data.find(_HEAD_END)
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self.bounds.max_header_bytes:
                self._refuse_large_head()
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._refusal is None:
                self._refuse(400, "Bad request", "the request is not valid HTTP/1.1", "bad-request")
            else:
                self._send_refusal()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad request", "the request is not valid HTTP/1.1", "bad-request")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.bounds.max_headers:
            self._refusal = problem_bytes(
                431,
                "Request header fields too large",
                f"at most {self.bounds.max_headers} header fields",
                "headers-too-large",
            )
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on this connection has a head of its own to bound.
        self._reading_head = True
        self._head_bytes = 0

    def _refuse_large_head(self) -> None:
        self._refuse(
            431,
            "Request header fields too large",
            f"the request line and headers must be at most {self.bounds.max_header_bytes} bytes",
            "headers-too-large",
        )

    def _refuse(self, status: int, title: str, detail: str, kind: str) -> None:
        self._refusal = problem_bytes(status, title, detail, kind)
        self._send_refusal()

    def _send_refusal(self) -> None:
        self._stop_head_timer()
        if self._refusal is not None and not self.transport.is_closing():
            self.transport.write(self._refusal)
            self.transport.close()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.bounds.header_timeout_seconds, self._head_timed_out
        )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head:
            return
        if self._head_bytes == 0 and self.cycle is not None:
            # Idle between requests: uvicorn's keep-alive timeout is the rule there.
            return
        self._refuse(
            408,
            "Request timeout",
            f"the request headers must arrive within {self.bounds.header_timeout_seconds:g} s",
            "header-timeout",
        )


def bounded_protocol(bounds: HttpBounds) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, carrying this process' bounds."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"bounds": bounds})
