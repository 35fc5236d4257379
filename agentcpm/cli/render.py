"""Terminal rendering of a model's or an agent's event stream, with rich.

One :class:`TurnView` shows one turn: the answer streams as Markdown, reasoning dimmed, tool calls as
they start (with their arguments), tool results with their durations, and a spinner while nothing is
arriving. Finished pieces are printed for good; only the piece being written lives in the live region,
so the scrollback is what a person would have seen, and output to a file or pipe stays clean.

>>> from io import StringIO
>>> from rich.console import Console
>>> from agentcpm.types import ContentDelta
>>> out = StringIO()
>>> with TurnView(Console(file=out, width=60)) as view:
...     view.show(ContentDelta("**Hello**"))
>>> out.getvalue().strip()
'Hello'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text

from ..types import ToolCall, Usage

PREVIEW_CHARS = 300


def format_arguments(arguments: dict[str, Any], limit: int = 200) -> str:
    """``{"x": 1, "text": "hi"}`` -> ``x=1, text='hi'`` (shortened to ``limit`` characters).

    >>> format_arguments({"x": 1, "text": "hi"})
    "x=1, text='hi'"
    """
    from ..tools import display_arguments  # hidden characters escaped (approval shows this); ints of any size

    text = display_arguments(arguments)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_call(call: ToolCall) -> str:
    """``click(x=500, y=120)``."""
    return f"{call.name}({format_arguments(call.arguments)})"


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first ``limit`` characters of ``text`` on at most four lines."""
    lines = text.strip().splitlines()
    short = "\n".join(lines[:4])
    if len(short) > limit:
        short = short[: limit - 1]
    if short != text.strip():
        short += "…"
    return short


def format_usage(usage: Any, label: str = "") -> str:
    """One line from a :class:`~agentcpm.types.Usage` (one request) or an agent run's usage: tokens in and
    out, requests and tool calls when counted, time, speed."""
    parts = [f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"]
    for name, word in (("requests", "request"), ("tool_calls", "tool call")):
        count = getattr(usage, name, None)
        if count:
            parts.append(f"{count} {word}{'s' * (count != 1)}")
    if usage.duration:
        parts.append(f"{usage.duration:.2f} s")
    first = getattr(usage, "time_to_first_token", None)
    if first is not None:
        parts.append(f"first token {first:.2f} s")
    speed = getattr(usage, "tokens_per_second", None)
    if speed:
        parts.append(f"{speed:.1f} tok/s")
    return (f"{label}: " if label else "") + ", ".join(parts)


class _Tail:
    """Renders its child but keeps only the last lines that fit on screen, so a long answer scrolls
    inside the live region instead of breaking it."""

    def __init__(self, child: RenderableType) -> None:
        self.child = child

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.child, options.update(height=None), pad=False)
        keep = max(1, console.size.height - 3)
        for line in lines[-keep:]:
            yield from line
            yield Segment.line()


class TurnView:
    """Shows one turn's events on ``console``. Use as a context manager and call :meth:`show` per event.

    ``show_reasoning``: print the model's reasoning (dimmed). ``markdown``: render answers as Markdown.
    """

    def __init__(self, console: Console, *, show_reasoning: bool = True, markdown: bool = True) -> None:
        self.console = console
        self.show_reasoning = show_reasoning
        self.markdown = markdown
        self.usage = Usage()
        self.tool_calls = 0
        self._kind: str | None = None  # "content" | "reasoning" while a piece is being written
        self._text = ""
        self._status = "thinking…"
        self._live: Live | None = None
        self._calls: dict[int, tuple[str, dict[str, str]]] = {}
        self._saved_tty: Any = None

    # live region -------------------------------------------------------------------------------------
    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._text:
            parts.append(_Tail(self._piece()))
        if self._status:
            parts.append(Spinner("dots", Text(self._status, style="dim")))
        return Group(*parts)

    def _piece(self) -> RenderableType:
        if self._kind == "reasoning":
            return Text(self._text.strip("\n"), style="dim italic")
        return Markdown(self._text) if self.markdown else Text(self._text)

    def start(self) -> None:
        if self._live is None:
            self._keys_echo(False)
            self._live = Live(self, console=self.console, refresh_per_second=12, transient=True)
            self._live.start()

    def stop(self) -> None:
        """Print what is being written for good and stop the live region."""
        self._flush()
        if self._live is not None:
            self._status = ""
            self._live.stop()
            self._live = None
            self._keys_echo(True)

    def _keys_echo(self, on: bool) -> None:
        # While the live region is drawn, keys typed ahead (and the "^C" of Ctrl-C) must not be echoed:
        # they would shift the cursor and leave copies of the region behind. They still reach the next prompt.
        if not self.console.is_terminal or not sys.stdin.isatty():
            return
        try:
            import termios
        except ImportError:  # Windows: no echo control, nothing to restore
            return
        try:
            fd = sys.stdin.fileno()
            if not on:
                self._saved_tty = termios.tcgetattr(fd)
                quiet = list(self._saved_tty)
                quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
                termios.tcsetattr(fd, termios.TCSANOW, quiet)
            elif self._saved_tty is not None:
                termios.tcsetattr(fd, termios.TCSANOW, self._saved_tty)
                self._saved_tty = None
        except (OSError, termios.error):  # not a real terminal after all
            pass

    def __enter__(self) -> TurnView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the live region for a prompt (approval questions), then go on."""
        running = self._live is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self._status = "thinking…"
                self.start()

    def _flush(self) -> None:
        # Clear first: printing redraws the live region, which must no longer hold this piece.
        piece = self._piece() if self._text.strip() else None
        self._text, self._kind = "", None
        if piece is not None:
            self.console.print(piece)

    def _write(self, kind: str, text: str) -> None:
        if kind != self._kind:
            self._flush()
            self._kind = kind
        self._text += text
        self._status = ""

    def note(self, text: str, style: str = "dim") -> None:
        """Print a line of its own between pieces."""
        self._flush()
        self.console.print(Text(text, style=style), soft_wrap=True)

    # events ------------------------------------------------------------------------------------------
    def show(self, event: Any) -> None:
        """Display one event from ``Client.stream`` or ``Agent.stream`` (by its ``type``); others are ignored."""
        kind = getattr(event, "type", None)
        if kind == "content.delta":
            if self._kind == "content" or event.text.strip():
                self._write("content", event.text)
        elif kind == "reasoning.delta":
            if self.show_reasoning:
                self._write("reasoning", event.text)
        elif kind == "tool_call.started":
            self._flush()
            self._calls[event.index] = (event.name, {})
            self._status = f"calling {event.name}…"
        elif kind == "tool_call.arguments" and event.index in self._calls:
            # The arguments as they are written, so a long one (text to type) is seen before it runs.
            name, arguments = self._calls[event.index]
            key = event.parameter or ""
            arguments[key] = arguments.get(key, "") + event.text
            written = ", ".join(f"{k}={v!r}" if k else v for k, v in arguments.items())
            self._status = f"calling {name}({' '.join(written.split())[:100]}…"
        elif kind == "tool_call.finished":
            self._show_call(event.call)
        elif kind == "response.completed":
            self._flush()
            self.usage = self.usage + event.completion.usage
            self._status = ""
        elif kind == "tool.started":
            self._status = f"running {event.call.name}…"
        elif kind == "tool.finished":
            self._show_tool_result(event)
            self._status = "thinking…"
        elif kind == "step.finished":
            if isinstance(event.usage, Usage):
                self.usage = self.usage + event.usage
            self._status = "thinking…"
        elif kind == "run.finished":
            self._flush()
            self._status = ""

    def _show_call(self, call: ToolCall) -> None:
        self.tool_calls += 1
        suffix = "" if call.complete else "  (cut off, not run)"
        self.note(f"→ {format_call(call)}{suffix}", style="bold cyan")
        self._status = f"running {call.name}…" if call.complete else "thinking…"

    def _show_tool_result(self, event: Any) -> None:
        call: ToolCall = event.call
        took = getattr(event, "duration", None)
        timing = f" ({took:.2f} s)" if isinstance(took, (int, float)) else ""
        error = getattr(event, "error", None)
        result = getattr(event, "result", None)
        if error or getattr(result, "is_error", False):
            message = error if isinstance(error, str) and error else describe_result(result)
            self.note(f"✗ {call.name} failed{timing}: {preview(message)}", style="red")
            return
        self.note(f"← {call.name}{timing}: {preview(describe_result(result))}", style="green")


def play(view: TurnView, events: Iterable[Any]) -> Any:
    """Show every event of a run on ``view``; returns the run's result (from ``RunFinished``), or None.

    The event stream is closed on the way out, so Ctrl-C also ends the request behind it."""
    result = None
    try:
        with view:
            for event in events:
                view.show(event)
                if getattr(event, "type", None) == "run.finished":
                    result = event.result
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return result


def describe_result(result: Any) -> str:
    """A tool result as a short text: its text, plus ``[image WxH]`` for each image."""
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    images = getattr(result, "images", None)
    if text is None and images is None:
        try:
            return json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(result)
    out = [text] if text else []
    for image in images or []:
        try:
            width, height = image.open().size
            out.append(f"[image {width}x{height}]")
        except Exception:  # a broken image is the tool's problem, not the display's
            out.append("[image]")
    return " ".join(out)
