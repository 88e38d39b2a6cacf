"""The server's limits and its errors, in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.

Every refusal is an ApiError raised where the limit is checked and turned into JSON by the app, so a limit
is one line here plus its check, and its status is part of the documented contract (docs/serving.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's own cap on an upload
    max_audio_seconds: float = 1800.0
    max_queue: int = 64  # requests accepted and not yet answered; past it, 503 with Retry-After
    decode_seconds: float = 30.0  # wall time to demux and decode one upload
    retry_after_seconds: int = 2

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_audio_seconds", "max_queue", "decode_seconds", "retry_after_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive value")


class ApiError(Exception):
    """A request the server refuses: the HTTP status, a message that says what to do, and the field at fault."""

    TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
             413: "invalid_request_error", 503: "server_error", 500: "server_error"}

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}
