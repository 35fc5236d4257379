"""An OpenAI-compatible answer (SSE chunks, or the one message of a plain reply) as raw chunks.

Only translation happens here: ``content`` -> TextChunk, ``reasoning_content``/``reasoning`` ->
ReasoningChunk, structured ``tool_calls`` -> ToolCallChunk, ``usage``/``timings`` -> UsageChunk, and a
``finish_reason`` -> FinishChunk. Parsing, merging and the finish rules are the engine's.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import ResponseError, ServerError
from ..base import FinishChunk, RawChunk, ReasoningChunk, TextChunk, ToolCallChunk, UsageChunk
from .errors import message_of, short


class AnswerReader:
    """One answer's JSON in, raw chunks out. ``finish_reason``: what the server said last (None: nothing)."""

    def __init__(self, streamed: bool) -> None:
        self.streamed = streamed
        self.finish_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._timings: dict[str, Any] = {}
        self._keys: set[Any] = set()
        self._last_key: Any = 0

    def reply(self, data: Any) -> list[RawChunk]:
        """A whole non-streaming reply, ending with its FinishChunk (a whole reply is a finished answer)."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ResponseError(f"the server's reply has no choices: {short(data)}")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise ResponseError(f"the server's reply has no message: {short(data)}")
        out = self._delta(message) + self._usage_of(data)
        self.finish_reason = choices[0].get("finish_reason") or "stop"
        out.append(FinishChunk(self.finish_reason))
        return out

    def chunk(self, data: Any) -> list[RawChunk]:
        """One SSE chunk of a streaming reply (its finish_reason is remembered, not sent: see ``finish``)."""
        if not isinstance(data, dict):
            raise ResponseError(f"the server sent a stream chunk that is not an object: {short(data)}")
        if data.get("error") and not data.get("choices"):
            raise ServerError(f"the server failed mid-answer: {message_of(data) or short(data)}")
        out: list[RawChunk] = []
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            if isinstance(delta, dict):
                out += self._delta(delta)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out + self._usage_of(data)

    def finish(self, done: bool) -> list[RawChunk]:
        """The end of a stream; ``done``: it ended with ``data: [DONE]``. Finished when the server said so
        (a finish_reason, or [DONE]); otherwise nothing: the answer may be cut anywhere, it is incomplete."""
        if self.finish_reason is not None:
            return [FinishChunk(self.finish_reason)]
        return [FinishChunk("stop")] if done else []

    def _delta(self, delta: dict[str, Any]) -> list[RawChunk]:
        out: list[RawChunk] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningChunk(reasoning))
        for position, item in enumerate(delta.get("tool_calls") or ()):
            if isinstance(item, dict):
                out.append(self._call(item, position))
        content = delta.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str) and content:
            out.append(TextChunk(content))
        return out

    def _call(self, item: dict[str, Any], position: int) -> ToolCallChunk:
        key = item.get("index")
        if key is None:  # plain replies list whole calls; a stream without indexes continues the last call
            key = item.get("id") or (self._last_key if self.streamed else position)
        if key not in self._keys:
            self._keys.add(key)
            self._last_key = key
        function: dict[str, Any] = item["function"] if isinstance(item.get("function"), dict) else {}
        name = function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        return ToolCallChunk(
            key,
            id=str(item["id"]) if item.get("id") else None,
            name=name if isinstance(name, str) and name else None,
            arguments=arguments if isinstance(arguments, str) and arguments else None,
        )

    def _usage_of(self, data: dict[str, Any]) -> list[RawChunk]:
        usage, timings = data.get("usage"), data.get("timings")  # timings: llama.cpp
        if not isinstance(usage, dict) and not isinstance(timings, dict):
            return []
        self._usage = usage if isinstance(usage, dict) else self._usage
        self._timings = timings if isinstance(timings, dict) else self._timings
        details = self._usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        speed = self._timings.get("predicted_per_second")
        return [
            UsageChunk(
                prompt_tokens=_count(self._usage.get("prompt_tokens")),
                completion_tokens=_count(self._usage.get("completion_tokens")),
                cached_tokens=_count(cached) if cached is not None else None,
                tokens_per_second=float(speed) if isinstance(speed, (int, float)) else None,
            )
        ]


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
