"""Every exception agentcpm raises on purpose, each with a message that says what to do.

Catch :class:`AgentCPMError` to handle them all. Subclasses also derive from the built-in exception a
caller would naturally expect (``ValueError`` for bad input, ``ConnectionError`` for an unreachable
server, ``ImportError`` for a missing extra), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

from typing import Any


class AgentCPMError(Exception):
    """Base class of every error agentcpm raises on purpose."""


# ---------------------------------------------------------------------------- configuration and input


class ConfigurationError(AgentCPMError, ValueError):
    """An argument or environment setting is missing or contradictory."""


class MissingDependencyError(AgentCPMError, ImportError):
    """An optional dependency is not installed; the message names the pip command that installs it."""

    #: The torch to install before the ``local`` extra (an unpinned torch may pull gigabytes of CUDA wheels).
    TORCH = "torch==2.13.0"

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        install = f'`pip install "agentcpm[{extra}]"`' if extra else f"`pip install {package}`"
        if extra == "local" and "torch" in package.replace(",", " ").split():
            install = f"`pip install {self.TORCH}` (or the torch build for your platform) first, then {install}"
        verb = "are" if " and " in package else "is"
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"{package} {verb} needed{what} but not installed: run {install}")
        self.package = package
        self.extra = extra


class ImageError(AgentCPMError, ValueError):
    """An image could not be read: missing file, corrupt or unsupported data, or an unreachable URL."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class ImageTooLargeError(ImageError):
    """An image has more pixels than the configured limit (a decompression bomb guard)."""


# ---------------------------------------------------------------------------- talking to a model


class BackendError(AgentCPMError):
    """A model backend (server or in-process model) failed."""


class EndpointUnavailable(BackendError, ConnectionError):
    """Nothing answers at the configured base URL."""


class AuthenticationError(BackendError):
    """The server refused the API key (HTTP 401/403)."""


class BadRequestError(BackendError, ValueError):
    """The server rejected the request (HTTP 4xx); the message is the server's own."""

    def __init__(self, message: str, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ContextTooLong(BadRequestError):
    """The prompt and requested output do not fit in the model's context window."""

    def __init__(
        self,
        message: str,
        *,
        max_tokens: int | None = None,
        requested_tokens: int | None = None,
        status_code: int | None = 400,
        body: Any = None,
    ) -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.max_tokens = max_tokens
        self.requested_tokens = requested_tokens


class TooManyImages(BadRequestError):
    """The server accepts fewer images per request than were sent."""


class ServerError(BackendError):
    """The server failed (HTTP 5xx, 429, a timeout) even after retries."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RequestTimeout(ServerError, TimeoutError):
    """No complete answer within ``timeout=`` (a whole-request deadline), or a server silent for too long."""


class ResponseError(BackendError):
    """The server's reply could not be understood (not JSON, no choices, a stream cut off)."""


class IncompleteAnswerError(ResponseError):
    """An agent's answer broke off before the model finished (finish_reason ``"incomplete"``), so it was not
    taken as the final answer; ``messages`` holds the conversation so far (pass it as ``history=``)."""

    def __init__(self, message: str, messages: list[Any] | None = None) -> None:
        super().__init__(message)
        self.messages: list[Any] = list(messages or [])


class ModelNotFoundError(BackendError, FileNotFoundError):
    """The model is neither a local folder nor available from the hub (offline or not cached)."""


# ---------------------------------------------------------------------------- tools and agents


class ToolDefinitionError(AgentCPMError, TypeError):
    """A Python function cannot be turned into a tool (its schema cannot be built)."""


class AgentError(AgentCPMError):
    """An agent run could not finish; ``messages`` holds the conversation so far."""

    def __init__(self, message: str, messages: list[Any] | None = None) -> None:
        super().__init__(message)
        self.messages: list[Any] = list(messages or [])


class AgentCancelled(AgentError):
    """Ctrl-C or task cancellation stopped the run; ``messages`` holds the conversation so far."""


class ToolRetriesExceeded(AgentError):
    """The model kept sending invalid arguments to a tool after its retry budget was spent."""


class RepeatedToolCallError(AgentError):
    """The model insisted on the same call with the same arguments after being told it already ran."""


class MaxStepsExceeded(AgentError):
    """The run used ``max_steps`` without a final answer (and no final answer was asked for)."""


class OutputValidationError(AgentError):
    """The final answer did not fit ``output_type`` even after re-asking."""


class UsageLimitExceeded(AgentError):
    """The run reached one of its :class:`~agentcpm.agent.UsageLimits`: ``limit`` names it (``"requests"``,
    ``"tool_calls"``, ``"input_tokens"``, ``"output_tokens"``, ``"total_tokens"``, ``"seconds"``, ``"images"``),
    ``value`` is the limit, ``usage`` what the run had used; ``messages`` holds the conversation so far."""

    def __init__(
        self,
        message: str,
        messages: list[Any] | None = None,
        *,
        limit: str = "",
        value: float | None = None,
        usage: Any = None,
    ) -> None:
        super().__init__(message, messages)
        self.limit = limit
        self.value = value
        self.usage = usage


class ApprovalError(AgentError, TypeError):
    """An approval callback answered with neither a bool nor a string (the call was not run)."""


class TranscriptError(AgentCPMError, ValueError):
    """A transcript file cannot be read (not JSONL, or not written by agentcpm)."""


class DisplayError(AgentCPMError, RuntimeError):
    """No display could be captured (no X server, no permission, no such monitor)."""
