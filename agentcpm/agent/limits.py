"""Budgets: :class:`UsageLimits` a run cannot pass, checked before each request and after each answer.

>>> limits = UsageLimits(requests=10, total_tokens=50_000, seconds=300)
>>> agent.run("Tidy the downloads folder", limits=limits)          # doctest: +SKIP

Reaching one ends the run with :class:`~agentcpm.errors.UsageLimitExceeded` (carrying the messages so far),
or, with ``final_answer=True``, with one last request without tools whose answer is the output
(``result.limit`` names the limit). The time limit covers the whole run, tools included: a request or a tool
still running when it ends is stopped, and it always raises (a final request would pass it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

from ..errors import ConfigurationError, UsageLimitExceeded
from ..types import ImagePart, Message
from .events import RunUsage

FINAL_PROMPT = (
    "The run has reached its {what} limit. Do not call any more tools: answer now, as well as you can, with what "
    "you have found so far."
)

_WHAT = {
    "requests": "model requests",
    "tool_calls": "tool calls",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "total_tokens": "total tokens",
    "seconds": "time",
    "images": "images sent",
}


@dataclass(frozen=True)
class UsageLimits:
    """Limits for one run; None means no limit. ``requests``: model requests. ``tool_calls``: calls run.
    ``input_tokens`` / ``output_tokens`` / ``total_tokens``: summed over the run's requests. ``seconds``:
    wall-clock time for the whole run, tools included. ``images``: images sent, counted once per request that
    carries them. ``final_answer``: when a limit (other than ``seconds``) is reached, ask once more without
    tools for a final answer instead of raising."""

    requests: int | None = None
    tool_calls: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    seconds: float | None = None
    images: int | None = None
    final_answer: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "final_answer" and value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ConfigurationError(f"UsageLimits.{f.name} must be a number of 0 or more (or None), got {value!r}")


def used(usage: RunUsage, limit: str) -> float:
    """How much of ``limit`` the run has used."""
    return {
        "requests": usage.requests,
        "tool_calls": usage.tool_calls,
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "images": usage.images,
    }[limit]


def count_images(messages: list[Message]) -> int:
    return sum(isinstance(part, ImagePart) for message in messages for part in message.content)


class Budget:
    """One run's limits against its usage; ``started`` is the run's start (``time.monotonic()``)."""

    def __init__(self, limits: UsageLimits | None, started: float) -> None:
        self.limits = limits or UsageLimits()
        self.deadline = started + self.limits.seconds if self.limits.seconds is not None else None

    @property
    def final_answer(self) -> bool:
        return self.limits.final_answer

    def left(self) -> float | None:
        """Seconds left before the time limit (None: no time limit)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def before_request(self, usage: RunUsage, images: int) -> str | None:
        """The limit the next request (carrying ``images``) would pass, or None."""
        if self.expired():
            return "seconds"
        limits = self.limits
        if limits.requests is not None and usage.requests >= limits.requests:
            return "requests"
        for name in ("input_tokens", "output_tokens", "total_tokens"):
            value = getattr(limits, name)
            if value is not None and used(usage, name) >= value:
                return name
        if limits.images is not None and usage.images + images > limits.images:
            return "images"
        return None

    def after_answer(self, usage: RunUsage) -> str | None:
        """The limit the answer just received passed (tokens, the calls it makes, time), or None."""
        if self.expired():
            return "seconds"
        for name in ("tool_calls", "input_tokens", "output_tokens", "total_tokens"):
            value = getattr(self.limits, name)
            if value is not None and used(usage, name) > value:
                return name
        return None

    def images_left(self, usage: RunUsage) -> int | None:
        return None if self.limits.images is None else max(self.limits.images - usage.images, 0)

    def exceeded(self, limit: str, usage: RunUsage, messages: list[Message]) -> UsageLimitExceeded:
        value = self.limits.seconds if limit == "seconds" else getattr(self.limits, limit)
        if limit == "seconds":
            detail = f"the run's time limit of {value:g} s ran out"
        else:
            detail = f"the run reached its {_WHAT[limit]} limit ({limit}={value}; used {used(usage, limit)})"
        advice = "raise the limit" + ("" if limit == "seconds" else ", or set final_answer=True for an answer anyway")
        return UsageLimitExceeded(
            f"{detail}; the conversation so far is in .messages: {advice}",
            messages,
            limit=limit,
            value=value,
            usage=usage,
        )

    def final_prompt(self, limit: str) -> Message:
        return Message("user", FINAL_PROMPT.format(what=_WHAT[limit]))

    def request_timeout(self, timeout: float | None) -> float | None:
        """A request's timeout within what is left of the time limit."""
        left = self.left()
        if left is None:
            return timeout
        return min(timeout if timeout is not None else math.inf, max(left, 0.001))


def not_run(limit: str) -> str:
    return f"Not run: the run reached its {_WHAT[limit]} limit."
