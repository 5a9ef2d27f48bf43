"""RFC 9457 problem+json answers: every error the API gives has this shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


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
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or _TITLES.get(status, "error").lower().replace(" ", "-")
        self.errors = errors
        self.retry_after = retry_after

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": f"https://conference-service/problems/{self.kind}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        return Response(
            orjson.dumps(body),
            status_code=self.status,
            media_type="application/problem+json",
            headers=headers,
        )
