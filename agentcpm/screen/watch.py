"""Waiting on the screen: :func:`wait_for_change` and :func:`watch`, a generator of answers about it.

>>> for answer in watch("Has the build finished? Answer yes or no.", every=10, until="yes"):  # doctest: +SKIP
...     print(answer.text)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .capture import RectLike, Screenshot, capture
from .geometry import Rect

if TYPE_CHECKING:
    from ..client import Client
    from ..images import DownsampleMode
    from ..types import Completion


@dataclass
class Change:
    """The screen changed: the shots before and after, and the screen rectangle around what differs."""

    before: Screenshot
    after: Screenshot
    rect: Rect

    @property
    def fraction(self) -> float:
        """The changed rectangle's share of the watched area, 0..1."""
        return (self.rect.width * self.rect.height) / (self.after.width * self.after.height)

    def describe(self) -> str:
        r = self.rect
        return (
            f"The screen changed inside left={r.left} top={r.top} width={r.width} height={r.height} "
            f"({self.fraction:.0%} of the watched area) after {self.after.taken_at - self.before.taken_at:.1f} s."
        )


def wait_for_change(
    region: RectLike | None = None,
    timeout: float = 30.0,
    *,
    monitor: int = 1,
    interval: float = 0.25,
    baseline: Screenshot | None = None,
    redact: Sequence[RectLike] = (),
) -> Change | None:
    """Block until the screen (or ``region``, screen coordinates) differs from ``baseline`` (default: how it
    looks now); the :class:`Change`, or None after ``timeout`` seconds without one.

    >>> change = wait_for_change(region=(0, 0, 400, 300), timeout=60)   # doctest: +SKIP
    """
    if interval <= 0 or timeout < 0:
        raise ConfigurationError("interval must be positive and timeout not negative (seconds)")
    if baseline is None:
        baseline = capture(monitor, region, redact=redact)
    elif region is None:
        region = baseline.rect
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        shot = capture(monitor, region, redact=redact)
        changed = shot.changed_rect(baseline)
        if changed is not None:
            return Change(baseline, shot, changed)
        if time.monotonic() >= deadline:
            return None


def wait_until_stable(
    region: RectLike | None = None,
    *,
    monitor: int = 1,
    quiet: float = 0.3,
    timeout: float = 3.0,
    redact: Sequence[RectLike] = (),
) -> Screenshot:
    """Capture once nothing has moved for ``quiet`` seconds (or at ``timeout``): the screen after an action."""
    deadline = time.monotonic() + timeout
    shot = capture(monitor, region, redact=redact)
    while time.monotonic() < deadline:
        change = wait_for_change(region, quiet, monitor=monitor, interval=0.05, baseline=shot, redact=redact)
        if change is None:
            return shot
        shot = change.after
    return shot


@dataclass
class WatchAnswer:
    """One answer from :func:`watch`: the text, when the screenshot was taken, and whether ``until`` holds."""

    text: str
    taken_at: float
    done: bool
    screenshot: Screenshot
    completion: Completion


def _until(until: Callable[[str], bool] | str | None) -> Callable[[str], bool]:
    if until is None:
        return lambda _text: False
    if isinstance(until, str):
        needle = until.casefold()
        return lambda text: needle in text.casefold()
    if callable(until):
        return lambda text: bool(until(text))
    raise ConfigurationError(f"until must be text the answer contains or a predicate on it, not {until!r}")


def watch(
    question: str,
    every: float = 5.0,
    until: Callable[[str], bool] | str | None = None,
    *,
    monitor: int = 1,
    region: RectLike | None = None,
    client: Client | None = None,
    timeout: float | None = None,
    redact: Sequence[RectLike] = (),
    max_slice_nums: int | None = None,
    downsample_mode: DownsampleMode | None = None,
    **options: Any,
) -> Iterator[WatchAnswer]:
    """Ask ``question`` about the screen every ``every`` seconds, yielding each answer.

    The model is asked only when the screen (or ``region``) has changed since the last answer, so a quiet
    screen costs a capture and a comparison per look. The generator ends after the answer for which ``until``
    holds (text the answer contains, case-insensitively, or a predicate on the answer's text), or after
    ``timeout`` seconds. ``client`` defaults to ``Client()`` (configured from the environment); ``options``
    go to each ``client.chat`` call.

    >>> for answer in watch("Is a dialog open? yes or no", every=2, until="yes", timeout=600):  # doctest: +SKIP
    ...     print(time.strftime("%H:%M:%S", time.localtime(answer.taken_at)), answer.text)
    """
    if every <= 0:
        raise ConfigurationError(f"every must be a positive number of seconds, not {every!r}")
    holds = _until(until)
    own_client = client is None
    if client is None:
        from ..client import Client

        client = Client()
    slices = max_slice_nums if max_slice_nums is not None else client.defaults.max_slice_nums
    mode = downsample_mode if downsample_mode is not None else client.defaults.downsample_mode
    deadline = None if timeout is None else time.monotonic() + timeout
    answered: Screenshot | None = None
    try:
        while True:
            started = time.monotonic()
            shot = capture(monitor, region, redact=redact)
            if answered is None or shot.changed_rect(answered) is not None:
                completion = client.chat(
                    question,
                    images=[shot.to_part(max_slice_nums=slices, downsample_mode=mode)],
                    max_slice_nums=slices,
                    downsample_mode=mode,
                    **options,
                )
                answered = shot
                done = holds(completion.content)
                yield WatchAnswer(completion.content, shot.taken_at, done, shot, completion)
                if done:
                    return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            pause = every - (now - started)
            if deadline is not None:
                pause = min(pause, deadline - now)
            if pause > 0:
                time.sleep(pause)
    finally:
        if own_client:
            client.close()
