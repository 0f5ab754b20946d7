"""The API's errors: an HTTP status and ``{"error": {"code": ..., "message": ...}}``.

Handlers raise :class:`ApiError` (or let a store or admin error through); the middleware
of :mod:`.app` turns every failure under ``/api/`` into that JSON body, never a traceback.
"""

from __future__ import annotations

from typing import Final

CODES: Final = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "bad_request", 409: "conflict", 413: "bad_request", 503: "unavailable",
}
"""HTTP status → the error code the API documents (docs/api.md)."""

MAX_MESSAGE: Final = 300
"""The longest error message: a bad value of thousands of characters (a parameter, a job
name, an occurrence id) is cut, not echoed back whole."""


class ApiError(Exception):
    """A request the API answers with an error status and a one-line message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 1] + "…"
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "bad_request")
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)
