"""A server's refusals and failures as agentcpm's typed errors, each saying what to do.

httpx exceptions and HTTP error statuses (:class:`StatusError`) come in; :class:`~agentcpm.errors.AgentCPMError`
subclasses go out. Messages never show the API key or the credentials of the base URL (the caller passes its
``redact``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from ...errors import (
    AgentCPMError,
    AuthenticationError,
    BadRequestError,
    ContextTooLong,
    EndpointUnavailable,
    RequestTimeout,
    ServerError,
    TooManyImages,
)

RETRY_STATUSES = frozenset({408, 409, 429})
KEY_VARIABLES = "AGENTCPM_API_KEY (or OPENAI_API_KEY)"
#: Seconds to open a connection, and seconds a server may stay silent (no byte at all) before the request
#: fails, when no ``timeout=`` is given. With ``timeout=`` the whole request has that deadline instead.
CONNECT_TIMEOUT = 10.0
SILENCE_TIMEOUT = 120.0


class StatusError(Exception):
    """The server answered with an HTTP error status (the body is read: its message can be quoted)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.status_code = response.status_code


def short(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, default=str)
    return text[:300]


def message_of(data: Any) -> str:
    """The human message inside an error body of any server family."""
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("msg") or json.dumps(error))
    if isinstance(error, str):
        return error
    if isinstance(data.get("message"), str):  # vLLM and SGLang: {"object": "error", "message": ...}
        return data["message"]
    detail = data.get("detail")  # FastAPI
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail if isinstance(d, dict)
        )
    return ""


def server_message(response: Any) -> str:
    try:
        text = response.text
    except httpx.ResponseNotRead:
        return ""
    try:
        message = message_of(json.loads(text))
    except json.JSONDecodeError:
        message = ""
    return (message or text or response.reason_phrase)[:1000]


def json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        return None


CONTEXT_WORDS = ("context length", "context_length", "context size", "context window", "maximum context")


def special_error(exc: StatusError) -> BadRequestError | None:
    """ContextTooLong or TooManyImages when a 4xx says so, else None."""
    if not 400 <= exc.status_code < 500 or exc.status_code in (401, 403, 429):
        return None
    message = server_message(exc.response)
    low = message.lower()
    body = json_or_none(exc.response)
    if any(w in low for w in CONTEXT_WORDS) or "exceed_context_size" in low or "too many tokens" in low:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        limit = error.get("n_ctx")  # llama.cpp
        requested = error.get("n_prompt_tokens")
        if limit is None:
            found = re.search(r"(?:maximum )?context (?:length|size|window)(?: is| of)?\D{0,20}(\d+)", low)
            limit = found and found.group(1)
        if requested is None:
            found = re.search(r"(?:requested|request has|input \(|total of|you have)\D{0,20}(\d+)", low)
            requested = found and found.group(1)
        numbers = ""
        if limit or requested:
            numbers = f" ({requested or '?'} tokens requested, the context holds {limit or '?'})"
        return ContextTooLong(
            f"the conversation does not fit in the model's context{numbers}: shorten it, send fewer or smaller "
            f"images (downsample_mode='16x', lower max_slice_nums), or lower max_tokens. Server: {message}",
            max_tokens=int(limit) if limit else None,
            requested_tokens=int(requested) if requested else None,
            status_code=exc.status_code,
            body=body,
        )
    if "limit-mm-per-prompt" in low or "limit_mm_per_prompt" in low or re.search(r"at most \d+ image", low):
        return TooManyImages(
            "the server accepts fewer images per request than were sent: start vLLM with a higher "
            "`--limit-mm-per-prompt '{\"image\": N}'`, or send fewer images (older screenshots can be dropped). "
            f"Server: {message}",
            status_code=exc.status_code,
            body=body,
        )
    return None


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, StatusError):
        return f"HTTP {exc.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def timed_out(url: str, deadline: float | None) -> RequestTimeout:
    """The error of a request that ran out of time (the ``timeout=`` deadline, or a silent server)."""
    if deadline is None:
        return RequestTimeout(
            f"no answer from {url} in time (silent for {SILENCE_TIMEOUT:g} s): check the server's load, "
            "or pass timeout= (seconds for the whole request) for answers that take longer"
        )
    return RequestTimeout(
        f"no complete answer from {url} in time (the timeout= deadline passed): "
        "raise timeout= or check the server's load"
    )


def map_error(
    exc: BaseException, url: str, redact: Callable[[str], str], tries: int, deadline: float | None = None
) -> AgentCPMError:
    """An httpx exception or error status -> the typed agentcpm error, with what to do (never the key)."""
    if isinstance(exc, StatusError):
        return _status_error(exc, url, redact, tries)
    if isinstance(exc, httpx.TimeoutException):
        return timed_out(url, deadline)
    if isinstance(exc, httpx.ConnectError):
        return EndpointUnavailable(
            f"nothing answers at {url}: start a server (for example `vllm serve openbmb/MiniCPM-V-4.6`, "
            "see docs/servers.md), fix base_url / AGENTCPM_BASE_URL, or leave base_url out to run the "
            "model in this process"
        )
    return ServerError(f"the connection to {url} failed: {redact(describe(exc))}")


def _status_error(exc: StatusError, url: str, redact: Callable[[str], str], tries: int) -> AgentCPMError:
    status = exc.status_code
    special = special_error(exc)
    if special is not None:
        return special
    message = redact(server_message(exc.response))
    if status in (401, 403):
        return AuthenticationError(
            f"the server at {url} refused the API key (HTTP {status}: {message}): "
            f"set {KEY_VARIABLES} to a key it accepts"
        )
    if status in RETRY_STATUSES or status >= 500:
        return ServerError(f"the server at {url} failed with HTTP {status} ({tries} tries): {message}", status)
    hint = "; check model= and that base_url ends in /v1" if status == 404 else ""
    return BadRequestError(f"the server at {url} refused the request (HTTP {status}): {message}{hint}", status)
