"""A backend that replays given model outputs: for tests, examples and docs.

Each reply is raw model text (exactly what MiniCPM-V would write, tool-call markup included), run
through the same parser as every other backend, streamed in small chunks.

>>> from agentcpm import Client
>>> backend = ScriptedBackend(["Hello!"])
>>> Client(backend=backend).chat("hi").content
'Hello!'
>>> backend.requests[0].messages[-1].text
'hi'
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError
from ..parsing import StreamParser
from ..types import Completed, Completion, Message, StreamEvent, Usage
from .base import GenerationOptions, afinal_completion, final_completion


@dataclass
class Reply:
    """One scripted answer: the model's raw text, how generation ended, and how fast it streams."""

    text: str
    finish_reason: str | None = None  # None: "tool_calls" when the text has calls, else "stop"
    chunk_size: int = 4
    chunk_delay: float = 0.0  # seconds between chunks, to imitate a slow model


@dataclass
class ScriptedRequest:
    """What a caller asked for; recorded in :attr:`ScriptedBackend.requests`."""

    messages: list[Message]
    tools: list[dict[str, Any]]
    options: GenerationOptions


ScriptItem = str | Reply | Completion | BaseException | Callable[[ScriptedRequest], Any]


@dataclass
class ScriptedBackend:
    """Replays ``script`` one item per request: a string or :class:`Reply` (raw model text), a ready
    :class:`Completion`, an exception to raise, or a callable that gets the request and returns one of
    those. Raises :class:`BackendError` when the script runs out."""

    script: Sequence[ScriptItem]
    requests: list[ScriptedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _next(self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions) -> Any:
        request = ScriptedRequest(list(messages), list(tools), options)
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        if index >= len(self.script):
            raise BackendError(f"the script has {len(self.script)} replies and request {index + 1} was made")
        item = self.script[index]
        if callable(item) and not isinstance(item, (BaseException, type)):
            item = item(request)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, str):
            item = Reply(item)
        return item

    def _events(
        self, reply: Reply, messages: list[Message], tools: list[dict[str, Any]], thinking: bool, sleep: bool
    ) -> Iterator[StreamEvent]:
        started = time.perf_counter()
        parser = StreamParser(tools, thinking=thinking)
        first: float | None = None
        text = reply.text
        for start in range(0, len(text), max(1, reply.chunk_size)):
            if sleep and reply.chunk_delay and start:
                time.sleep(reply.chunk_delay)
            for event in parser.feed(text[start : start + reply.chunk_size]):
                if first is None:
                    first = time.perf_counter() - started
                yield event
        finish = reply.finish_reason
        yield from parser.close(finish_reason=finish)
        parsed = parser.result()
        if finish is None:
            finish = "tool_calls" if parsed.tool_calls else "stop"
        prompt_chars = sum(len(m.text) for m in messages) + sum(len(str(t)) for t in tools)
        duration = time.perf_counter() - started
        usage = Usage(
            prompt_tokens=prompt_chars // 4 + 1,
            completion_tokens=len(text) // 4 + 1,
            time_to_first_token=first,
            duration=duration,
        )
        yield Completed(
            Completion(
                content=parsed.content,
                reasoning=parsed.reasoning,
                tool_calls=parsed.tool_calls,
                finish_reason=finish,
                usage=usage,
                raw=text,
            )
        )

    # Backend protocol --------------------------------------------------------------------------------
    def stream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Iterator[StreamEvent]:
        item = self._next(messages, tools, options)
        if isinstance(item, Completion):
            yield Completed(item)
            return
        yield from self._events(item, messages, tools, bool(options.thinking), sleep=True)

    def complete(self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions) -> Completion:
        return final_completion(self.stream(messages, tools, options))

    async def astream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> AsyncIterator[StreamEvent]:
        item = self._next(messages, tools, options)
        if isinstance(item, Completion):
            yield Completed(item)
            return
        for event in self._events(item, messages, tools, bool(options.thinking), sleep=False):
            yield event
            if item.chunk_delay:
                await asyncio.sleep(item.chunk_delay)

    async def acomplete(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Completion:
        return await afinal_completion(self.astream(messages, tools, options))

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
