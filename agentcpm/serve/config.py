"""Settings of one ``agentcpm serve`` and the error every route answers with (OpenAI's error JSON)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

#: The environment variable holding the key clients must send (``Authorization: Bearer <key>``).
API_KEY_ENV = "AGENTCPM_SERVE_API_KEY"


@dataclass
class ServeConfig:
    """Limits and access rules. ``max_concurrency``: requests generating at once (1 for the in-process model:
    it generates one request at a time); ``max_queue``: requests waiting for a slot, beyond which new ones get
    503 with ``Retry-After``. ``api_key``: when set, every ``/v1`` route requires it as a Bearer token."""

    model_names: list[str] = field(default_factory=list)  # names accepted in "model"; empty: any
    api_key: str | None = None
    max_concurrency: int = 1
    max_queue: int = 32
    retry_after: int = 1  # seconds, in the 503's Retry-After header
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_messages: int = 512
    max_images: int = 32
    image_timeout: float = 20.0  # seconds to download one http(s) image URL in full
    owned_by: str = "agentcpm"

    @property
    def model_name(self) -> str:
        return self.model_names[0] if self.model_names else "default"

    @classmethod
    def key_from_env(cls) -> str | None:
        return os.environ.get(API_KEY_ENV) or None


_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    502: "upstream_error",
    503: "server_overloaded",
    504: "upstream_error",
}


class APIError(Exception):
    """An answer with an HTTP error status and OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)
