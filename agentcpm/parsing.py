"""TEMPORARY placeholder parser (well-formed input only, no real streaming).

Being replaced by the real parser (issue 2); the public names and signatures below are the contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .types import (
    ContentDelta,
    ParseEvent,
    ReasoningDelta,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
)


@dataclass
class ParsedOutput:
    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)


def parse_output(
    text: str,
    tools: list[dict[str, Any]] | None = None,
    *,
    thinking: bool = False,
    finish_reason: str | None = None,
) -> ParsedOutput:
    reasoning = None
    if thinking and "</think>" in text:
        reasoning, text = text.split("</think>", 1)
    elif text.lstrip().startswith("<think>") and "</think>" in text:
        reasoning, text = text.lstrip()[len("<think>") :].split("</think>", 1)
    calls = []
    for match in _BLOCK.finditer(text):
        body = match.group(1)
        name = re.search(r"<function=([^>\n]+)>", body)
        if name:
            args = {k: v for k, v in _PARAM.findall(body)}
            calls.append(ToolCall(name=name.group(1), arguments=args, raw=match.group(0)))
        else:
            try:
                obj = json.loads(body)
                calls.append(ToolCall(name=obj["name"], arguments=obj.get("arguments", {}), raw=match.group(0)))
            except Exception:
                pass
    content = _BLOCK.sub("", text).strip()
    return ParsedOutput(content, reasoning.strip() if reasoning is not None else None, calls)


class StreamParser:
    def __init__(self, tools: list[dict[str, Any]] | None = None, thinking: bool = False) -> None:
        self.tools, self.thinking, self._text = tools, thinking, []  # type: ignore[var-annotated]
        self._result: ParsedOutput | None = None

    def feed(self, delta: str) -> list[ParseEvent]:
        self._text.append(delta)
        return []

    def close(self, finish_reason: str | None = None) -> list[ParseEvent]:
        self._result = parse_output("".join(self._text), self.tools, thinking=self.thinking)
        events: list[ParseEvent] = []
        if self._result.reasoning:
            events.append(ReasoningDelta(self._result.reasoning))
        if self._result.content:
            events.append(ContentDelta(self._result.content))
        for i, call in enumerate(self._result.tool_calls):
            events += [ToolCallStarted(i, call.id, call.name), ToolCallFinished(i, call)]
        return events

    def result(self) -> ParsedOutput:
        assert self._result is not None
        return self._result


def render_tool_calls(calls: list[ToolCall]) -> str:
    raise NotImplementedError


def normalize_text(text: str) -> str:
    raise NotImplementedError


def convert_arguments(
    name: str, arguments: dict[str, Any], tools: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], str | None]:
    return arguments, None
