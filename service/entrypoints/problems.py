"""RFC 9457 problem+json answers: every error the API gives has this shape, and says what was
wrong with the request, never how the service works inside (no exception text, no trace)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}
_MAX_ERRORS = 50


class Problem(Exception):
    """Raised anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        errors: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or _TITLES.get(status, "error").lower().replace(" ", "-")
        # A body of junk can fail thousands of ways; the first few say enough.
        self.errors = None if errors is None else errors[:_MAX_ERRORS]
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if retry_after:
            self.headers["Retry-After"] = str(retry_after)

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": f"https://conference-service/problems/{self.kind}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return Response(
            orjson.dumps(body),
            status_code=self.status,
            media_type="application/problem+json",
            headers=self.headers,
        )
