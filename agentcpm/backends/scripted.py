"""A backend that replays given model outputs: for tests, examples and docs.

Each reply is raw model text (exactly what MiniCPM-V would write, tool-call markup included), streamed in
small chunks into the same engine as every other backend.

>>> from agentcpm import Client
>>> backend = ScriptedBackend(["Hello!"])
>>> Client(backend=backend).chat("hi").content
'Hello!'
>>> backend.requests[0].messages[-1].text
'hi'
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError
from ..types import Completion, Message
from .base import (
    FinishChunk,
    GenerationOptions,
    RawChunk,
    ReasoningChunk,
    Request,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)


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

    async def generate(self, request: Request) -> AsyncGenerator[RawChunk, None]:
        """Yield the next reply as raw chunks (``chunk_size`` characters, ``chunk_delay`` apart)."""
        item = self._next(request.messages, request.tools, request.options)
        if isinstance(item, Completion):
            for chunk in _completion_chunks(item):
                yield chunk
            return
        text = reply_text = item.text
        step = max(1, item.chunk_size)
        for start in range(0, len(text), step):
            if item.chunk_delay and start:
                if request.blocking:
                    time.sleep(item.chunk_delay)
                else:
                    await asyncio.sleep(item.chunk_delay)
            yield TextChunk(text[start : start + step])
        prompt_chars = sum(len(m.text) for m in request.messages) + sum(len(str(t)) for t in request.tools)
        yield UsageChunk(prompt_tokens=prompt_chars // 4 + 1, completion_tokens=len(reply_text) // 4 + 1)
        yield FinishChunk(item.finish_reason or "stop")

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _completion_chunks(completion: Completion) -> list[RawChunk]:
    """A ready Completion as the chunks a server with a tool parser would send."""
    chunks: list[RawChunk] = []
    if completion.reasoning:
        chunks.append(ReasoningChunk(completion.reasoning))
    if completion.content:
        chunks.append(TextChunk(completion.content))
    for index, call in enumerate(completion.tool_calls):
        chunks.append(ToolCallChunk(index, call.id, call.name, json.dumps(call.arguments, default=str), ready=call))
    usage = completion.usage
    chunks.append(UsageChunk(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens))
    chunks.append(FinishChunk(completion.finish_reason or "stop"))
    return chunks
