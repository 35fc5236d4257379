"""Completions and stream events -> OpenAI's exact response shapes (``chat.completion`` and its chunks)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..types import (
    Completion,
    ContentDelta,
    ReasoningDelta,
    ResponseCompleted,
    StreamEvent,
    ToolCall,
    ToolCallFinished,
    Usage,
)

#: The engine's finish reasons that OpenAI has no name for: all mean the answer was cut off.
_CUT_REASONS = {"incomplete", "cancelled", "max_tokens"}


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def sendable_calls(completion: Completion) -> list[ToolCall]:
    """The calls a client may run: a call cut off mid-way (``complete`` False) is never sent."""
    return [call for call in completion.tool_calls if call.complete]


def finish_reason(completion: Completion) -> str:
    if sendable_calls(completion):
        return "tool_calls"
    reason = completion.finish_reason or "stop"
    if reason in _CUT_REASONS:
        return "length"
    return "stop" if reason == "tool_calls" else reason


def call_json(call: ToolCall) -> dict[str, Any]:
    return call.to_openai()


def usage_json(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return out


def completion_json(completion: Completion, model: str, response_id: str | None = None) -> dict[str, Any]:
    """The whole ``chat.completion`` object."""
    calls = sendable_calls(completion)
    message: dict[str, Any] = {"role": "assistant", "content": completion.content or (None if calls else "")}
    if completion.reasoning:
        message["reasoning_content"] = completion.reasoning
    if calls:
        message["tool_calls"] = [call_json(c) for c in calls]
    return {
        "id": response_id or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(completion)}],
        "usage": usage_json(completion.usage),
    }


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class ChunkWriter:
    """Turns stream events into ``chat.completion.chunk`` SSE lines.

    Text and reasoning go out as they arrive. A tool call goes out when the parser has finished it (its
    arguments are then converted to their schema's types): first a delta with its index, id, type and name,
    then one with its JSON ``arguments``; the fragments of a call concatenate to its final JSON, a call is
    sent once, and a call that was cut off is never sent.
    """

    def __init__(self, model: str, *, include_usage: bool = False, response_id: str | None = None) -> None:
        self.id = response_id or new_id()
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.calls_sent = 0
        self.completion: Completion | None = None

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            body["usage"] = None
        return sse(body)

    def start(self) -> bytes:
        return self.chunk({"role": "assistant", "content": ""})

    def event(self, event: StreamEvent) -> list[bytes]:
        if isinstance(event, ContentDelta):
            return [self.chunk({"content": event.text})] if event.text else []
        if isinstance(event, ReasoningDelta):
            return [self.chunk({"reasoning_content": event.text})] if event.text else []
        if isinstance(event, ToolCallFinished):
            return self.call(event.call) if event.call.complete else []
        if isinstance(event, ResponseCompleted):
            self.completion = event.completion
            return self.finish(event.completion)
        return []  # ToolCallStarted / arguments deltas: the call goes out once it is finished

    def call(self, call: ToolCall) -> list[bytes]:
        index, self.calls_sent = self.calls_sent, self.calls_sent + 1
        whole = call_json(call)
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        tail = {"index": index, "function": {"arguments": whole["function"]["arguments"]}}
        return [self.chunk({"tool_calls": [head]}), self.chunk({"tool_calls": [tail]})]

    def finish(self, completion: Completion) -> list[bytes]:
        out = [self.chunk({}, finish_reason(completion))]
        if self.include_usage:
            body = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage_json(completion.usage),
            }
            out.append(sse(body))
        return out

    def replay(self, completion: Completion) -> list[bytes]:
        """A whole completion (already checked, e.g. re-asked for a schema) as chunks."""
        out = [self.start()]
        if completion.reasoning:
            out.append(self.chunk({"reasoning_content": completion.reasoning}))
        if completion.content:
            out.append(self.chunk({"content": completion.content}))
        for call in sendable_calls(completion):
            out.extend(self.call(call))
        self.completion = completion
        return out + self.finish(completion)


DONE = b"data: [DONE]\n\n"
