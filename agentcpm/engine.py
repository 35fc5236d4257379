"""The engine: the one place that turns a backend's raw chunks into events and a :class:`Completion`.

Every backend (a server, the model in-process, a script) only talks to the model and yields raw chunks
(:mod:`agentcpm.backends.base`). Everything that is the same whichever backend answered happens here, once:
tool images move into the next user turn, text goes through the tool-call parser, structured calls from a
server are merged (a call is never reported twice), the finish reason follows one set of rules, and the
:class:`~agentcpm.types.Usage` and :class:`~agentcpm.types.Completion` are assembled.

>>> from agentcpm.backends import ScriptedBackend
>>> from agentcpm.backends.base import GenerationOptions
>>> import asyncio
>>> asyncio.run(complete(ScriptedBackend(["Hello!"]), [Message("user", "hi")], [], GenerationOptions())).content
'Hello!'
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from . import tracing
from .backends.base import (
    Backend,
    FinishChunk,
    GenerationOptions,
    RawChunk,
    ReasoningChunk,
    Request,
    StartChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
    move_tool_images,
)
from .errors import ResponseError
from .format.arguments import convert_arguments
from .format.parser import ParsedOutput, StreamParser
from .types import (
    Completed,
    Completion,
    Message,
    ReasoningDelta,
    StreamEvent,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
    new_call_id,
)

#: The finish reason of an answer whose stream ended without the backend saying it finished: its unclosed
#: tool calls are ``complete=False`` and never executed.
INCOMPLETE = "incomplete"
_CUT = frozenset({"length", INCOMPLETE, "cancelled"})
_CALL_EVENTS = (ToolCallStarted, ToolCallArgumentsDelta, ToolCallFinished)


def prepare(
    messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions, *, stream: bool, blocking: bool
) -> Request:
    """The request every backend gets: images that tools returned moved into the next user turn."""
    return Request(move_tool_images(messages), tools, options, stream=stream, blocking=blocking)


def stream(
    backend: Backend,
    messages: list[Message],
    tools: list[dict[str, Any]],
    options: GenerationOptions,
    *,
    blocking: bool = False,
) -> AsyncGenerator[StreamEvent, None]:
    """Ask ``backend`` and yield events as the answer arrives, ending with exactly one :class:`Completed`.

    ``blocking``: the caller drives this on a private event loop (:mod:`agentcpm._sync`), so the backend may
    block it (the in-process model then generates on the calling thread).
    """
    events = _stream(backend, messages, tools, options, blocking)
    if tracing.tracer is None:  # tracing off: nothing else happens
        return events
    return tracing.model_request(events, backend, messages, options)


async def _stream(
    backend: Backend, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions, blocking: bool
) -> AsyncGenerator[StreamEvent, None]:
    request = prepare(messages, tools, options, stream=True, blocking=blocking)
    assembly = Assembly(request)
    async with aclosing(backend.generate(request)) as chunks:
        async for chunk in chunks:
            events = assembly.feed(chunk)
            for event in events:
                yield event
    for event in assembly.finish():
        yield event


async def complete(
    backend: Backend,
    messages: list[Message],
    tools: list[dict[str, Any]],
    options: GenerationOptions,
    *,
    blocking: bool = False,
) -> Completion:
    """Ask ``backend`` and return the whole answer."""
    if tracing.tracer is not None:
        return await tracing.model_completion(
            _complete(backend, messages, tools, options, blocking), backend, messages, options
        )
    return await _complete(backend, messages, tools, options, blocking)


async def _complete(
    backend: Backend, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions, blocking: bool
) -> Completion:
    request = prepare(messages, tools, options, stream=False, blocking=blocking)
    assembly = Assembly(request)
    async with aclosing(backend.generate(request)) as chunks:
        async for chunk in chunks:
            assembly.feed(chunk)
    return assembly.completion()


@dataclass
class _StructuredCall:
    position: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False
    ready: ToolCall | None = None


class Assembly:
    """One answer being put together from raw chunks: ``feed`` each chunk (events come back), then ``finish``.

    Markup in the text and structured calls from a server are both understood; whichever shows a call first
    owns the calls of this answer, so a server that sends both never reports a call twice.
    """

    def __init__(self, request: Request) -> None:
        self.tools = request.tools
        self.streamed = request.stream
        self.in_reasoning = bool(request.options.thinking)
        self.started = time.perf_counter()
        self.parser: StreamParser | None = None
        self.server_reasoning: list[str] = []
        self.text: list[str] = []
        self.calls: dict[Any, _StructuredCall] = {}
        self.owner: str | None = None  # "structured" or "markup"
        self.finish_reason: str | None = None
        self.usage = UsageChunk()
        self.first_token: float | None = None

    # input ---------------------------------------------------------------------------------------------
    def feed(self, chunk: RawChunk) -> list[StreamEvent]:
        kind = type(chunk)
        if kind is TextChunk:
            return self._text(chunk.text)  # type: ignore[union-attr]
        if kind is ReasoningChunk:
            return self._reasoning(chunk.text)  # type: ignore[union-attr]
        if kind is ToolCallChunk:
            self._arrived()
            return self._structured(chunk)  # type: ignore[arg-type]
        if kind is UsageChunk:
            self.usage = chunk  # type: ignore[assignment]
        elif kind is FinishChunk:
            self.finish_reason = chunk.reason or "stop"  # type: ignore[union-attr]
        elif kind is StartChunk:
            self.in_reasoning = chunk.in_reasoning  # type: ignore[union-attr]
        else:
            raise ResponseError(f"the backend sent {chunk!r}, which is not a raw chunk")
        return []

    def _arrived(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter() - self.started

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        self._arrived()
        self.text.append(text)
        if self.parser is None:
            # A server that separates reasoning itself sends text without the <think> part.
            self.parser = StreamParser(self.tools, thinking=self.in_reasoning and not self.server_reasoning)
        events = self.parser.feed(text)
        return self._markup(events) if self.owner != "markup" else list(events)

    def _reasoning(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        self._arrived()
        self.server_reasoning.append(text)
        return [ReasoningDelta(text)]

    def _markup(self, events: Sequence[StreamEvent]) -> list[StreamEvent]:
        if not any(isinstance(e, _CALL_EVENTS) for e in events):
            return list(events)
        if self.owner is None:
            self.owner = "markup"
            return list(events)
        return [e for e in events if not isinstance(e, _CALL_EVENTS)]  # structured calls own this answer

    def _structured(self, chunk: ToolCallChunk) -> list[StreamEvent]:
        key = chunk.index
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = _StructuredCall(len(self.calls))
        if chunk.id and not call.id:
            call.id = chunk.id
        if chunk.name and chunk.name != call.name:
            call.name += chunk.name
        if chunk.arguments:
            call.arguments.append(chunk.arguments)
        if chunk.ready is not None:
            call.ready = chunk.ready
        if self.owner == "markup" or not call.name:
            return []
        self.owner = "structured"
        call.id = call.id or new_call_id()
        if not call.started:
            call.started = True
            events: list[StreamEvent] = [ToolCallStarted(call.position, call.id, call.name)]
            if call.arguments:
                events.append(ToolCallArgumentsDelta(call.position, call.id, None, "".join(call.arguments)))
            return events
        if chunk.arguments:
            return [ToolCallArgumentsDelta(call.position, call.id, None, chunk.arguments)]
        return []

    # output --------------------------------------------------------------------------------------------
    @property
    def cut(self) -> bool:
        """The answer did not end on its own (token limit, cancelled, or the stream just stopped)."""
        return (self.finish_reason or INCOMPLETE) in _CUT

    def _structured_call(self, call: _StructuredCall) -> ToolCall:
        if call.ready is not None:
            return call.ready
        raw = "".join(call.arguments)
        parsed = ToolCall.from_openai({"id": call.id, "function": {"name": call.name, "arguments": raw}})
        if not call.name:
            return parsed.model_copy(update={"error": "the server sent a tool call without a function name"})
        if self.cut:  # a name or arguments may have been cut anywhere: never run such a call
            reason = self.finish_reason or INCOMPLETE
            cut = parsed.error or f"the answer was cut off (finish_reason={reason!r}) before this call ended"
            return parsed.model_copy(update={"complete": False, "error": f"{cut}; not executed"})
        if parsed.error is not None:
            return parsed
        arguments, error = convert_arguments(parsed.name, parsed.arguments, self.tools)
        return parsed.model_copy(update={"arguments": arguments, "error": error})

    def finish(self) -> list[StreamEvent]:
        """The closing events, ending with :class:`Completed`."""
        events: list[StreamEvent] = []
        finish = self.finish_reason or INCOMPLETE
        parsed = ParsedOutput()
        if self.parser is not None:
            closing = self.parser.close(finish_reason="length" if finish in _CUT else finish)
            events += self._markup(closing) if self.owner != "markup" else closing
            parsed = self.parser.result()
            if finish == INCOMPLETE:  # the parser knows only "length": say why these calls were not run
                events = [
                    ToolCallFinished(e.index, _cut_off(e.call)) if isinstance(e, ToolCallFinished) else e
                    for e in events
                ]
                parsed.tool_calls = [_cut_off(c) for c in parsed.tool_calls]
        calls = parsed.tool_calls
        if self.owner == "structured":
            calls = [self._structured_call(c) for c in self.calls.values() if c.started]
            events += [ToolCallFinished(i, call) for i, call in enumerate(calls)]
        if calls and finish == "stop":  # servers that leave the markup in content say "stop"
            finish = "tool_calls"
        events.append(Completed(self._completion(parsed, calls, finish)))
        return events

    def completion(self) -> Completion:
        """The whole answer (for callers that do not want the events)."""
        last = self.finish()[-1]
        assert isinstance(last, Completed)
        return last.completion

    def _completion(self, parsed: ParsedOutput, calls: list[ToolCall], finish: str) -> Completion:
        usage = self.usage
        duration = time.perf_counter() - self.started
        first = usage.time_to_first_token if usage.time_to_first_token is not None else self.first_token
        speed = usage.tokens_per_second
        if speed is None and self.streamed and usage.completion_tokens and first is not None:
            decode = duration - first
            speed = usage.completion_tokens / decode if decode > 0 else None
        reasoning = "".join(self.server_reasoning) or parsed.reasoning or None
        return Completion(
            content=parsed.content,
            reasoning=reasoning,
            tool_calls=calls,
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                images_encoded=usage.images_encoded,
                time_to_first_token=first if (self.streamed or usage.time_to_first_token is not None) else None,
                tokens_per_second=speed,
                duration=duration,
            ),
            raw="".join(self.text),
        )


_LENGTH_CUT = "the output was cut off (finish_reason='length') before this call ended"
_STREAM_CUT = "the stream ended before the server said the answer was finished (no finish_reason, no [DONE])"


def _cut_off(call: ToolCall) -> ToolCall:
    """A markup call of an incomplete answer, its error naming the real cause (not the token limit)."""
    if call.complete or not call.error or _LENGTH_CUT not in call.error:
        return call
    return call.model_copy(update={"error": call.error.replace(_LENGTH_CUT, _STREAM_CUT)})
