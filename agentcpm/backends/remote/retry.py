"""Retries, in one place: connection errors and 408/409/429/5xx, with
exponential backoff and jitter or the server's ``Retry-After``, never past the request's deadline, and never
once data has arrived (an attempt ends with the first data)."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import httpx
import tenacity

from .errors import RETRY_STATUSES, StatusError
from .http import within

log = logging.getLogger("agentcpm.remote")

T = TypeVar("T")
MAX_RETRY_AFTER = 60.0  # seconds; a longer Retry-After is capped


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, ``Retry-After`` as seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def wait_time(state: tenacity.RetryCallState, backoff: float) -> float:
    """Seconds before the next attempt: the server's Retry-After (capped), else exponential with jitter."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, StatusError):
        after = retry_after(exc.response.headers)
        if after is not None:
            return min(max(after, 0.0), MAX_RETRY_AFTER)
    return min(backoff * 2 ** (state.attempt_number - 1), 30.0) * random.uniform(0.5, 1.0)


def retryable(exc: BaseException, statuses: bool) -> bool:
    """Whether asking again may help (``statuses``: HTTP errors count, else only connection errors)."""
    if isinstance(exc, StatusError):
        return statuses and (exc.status_code in RETRY_STATUSES or exc.status_code >= 500)
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
        return False  # silent for the whole timeout: asking again would only wait as long again
    return isinstance(exc, httpx.TransportError)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    backoff: float,
    deadline: float | None,
    timed_out: Callable[[], Exception],
    label: Callable[[BaseException | None], str],
    statuses: bool = True,
) -> T:
    """``await attempt()``, each attempt under what is left of ``deadline``, retried as the module says.
    The last failure is raised as it is; ``label`` says what a failure was, for the retry's log line."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s; retry %d of %d", label(exc), state.attempt_number, max_retries)

    def past_deadline(state: tenacity.RetryCallState) -> bool:  # no retry that could not start in time
        return deadline is not None and time.monotonic() + (state.upcoming_sleep or 0.0) >= deadline

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max_retries + 1) | tenacity.stop_any(cast(Any, past_deadline)),
        wait=lambda state: wait_time(state, backoff),
        retry=tenacity.retry_if_exception(lambda exc: retryable(exc, statuses)),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for retry in retrying:
        with retry:
            return await within(attempt(), deadline, timed_out)
    raise AssertionError("unreachable")  # pragma: no cover
