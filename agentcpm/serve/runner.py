"""Running one request: the bounded queue in front of the model, and the rules the model cannot be forced
to follow (``tool_choice`` required or named, ``response_format``) checked after it answers, re-asking once.

The model cannot be constrained while it writes, so:

- ``tool_choice: "required"``: the tools are sent with an instruction to call one; a named function: only that
  tool is sent, with an instruction to call it. If the answer has no call, the model is asked once more; the
  second answer is returned as it is.
- ``response_format`` (``json_object`` or ``json_schema``): an instruction with the schema is added; the answer
  is parsed (code fences removed) and validated; if it does not fit, the model is told why and asked once more;
  the second answer is returned as it is.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..client import Client
from ..types import Completion, Message, TextPart
from .config import APIError
from .request import ChatRequest
from .response import sendable_calls


class Gate:
    """At most ``concurrency`` requests at work, at most ``queue`` waiting; more get 503 at once."""

    def __init__(self, concurrency: int, queue: int, retry_after: int = 1) -> None:
        self.concurrency = max(1, concurrency)
        self.queue = max(0, queue)
        self.retry_after = retry_after
        self.active = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(self.concurrency)

    async def enter(self) -> None:
        if self.active + self.waiting >= self.concurrency + self.queue:
            raise APIError(
                503,
                f"the server is busy ({self.active} generating, {self.waiting} waiting); retry shortly",
                code="server_overloaded",
                headers={"Retry-After": str(self.retry_after)},
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        self._slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.enter()
        try:
            yield
        finally:
            self.leave()


def buffered(request: ChatRequest) -> bool:
    """Whether the answer must be checked before any of it is sent (forced tool choice, a JSON format)."""
    return request.schema is not None or request.tool_choice not in (None, "none")


def prepared(request: ChatRequest) -> tuple[list[Message], list[dict[str, Any]]]:
    """The messages (with the instruction a forced tool choice or a format needs) and the tools to send."""
    tools, note = request.tools, ""
    if request.tool_choice == "required":
        note = "You must answer with a tool call now (one of the tools above), not with text."
    elif request.tool_choice not in (None, "none"):
        tools = [t for t in tools if t["function"]["name"] == request.tool_choice]
        note = f"You must answer with a call to the tool {request.tool_choice} now, not with text."
    if request.schema is not None:
        note += " " + format_instruction(request.schema)
    return with_system_note(request.messages, note.strip()), tools


def format_instruction(schema: dict[str, Any]) -> str:
    if not schema:
        return "Answer with one JSON object only: no other text, no code fences."
    return (
        "Answer with one JSON object only (no other text, no code fences) that matches this JSON schema: "
        + json.dumps(schema, ensure_ascii=False)
    )


def with_system_note(messages: list[Message], note: str) -> list[Message]:
    if not note:
        return messages
    if messages and messages[0].role == "system":
        first = messages[0]
        return [first.model_copy(update={"content": [*first.content, TextPart(note)]}), *messages[1:]]
    return [Message("system", note), *messages]


def problem(request: ChatRequest, completion: Completion) -> str | None:
    """What is wrong with the answer (None: nothing)."""
    if request.tool_choice not in (None, "none") and not sendable_calls(completion):
        name = "one of the tools" if request.tool_choice == "required" else f"the tool {request.tool_choice}"
        return f"You did not call a tool. Answer now with a call to {name}."
    if request.schema is not None and not sendable_calls(completion):
        _, error = parse_json_answer(completion.content, request.schema)
        if error:
            return f"Your answer is not valid: {error}. Answer again with only the JSON object."
    return None


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_json_answer(text: str, schema: dict[str, Any]) -> tuple[str, str | None]:
    """``text`` without code fences, and what keeps it from fitting ``schema`` (None: it fits)."""
    match = _FENCE.match(text)
    cleaned = match.group(1).strip() if match else text.strip()
    try:
        value = json.loads(cleaned)
    except ValueError as exc:
        return cleaned, f"it is not JSON ({exc})"
    if not schema:
        return cleaned, None if isinstance(value, dict) else "it is not a JSON object"
    try:
        import jsonschema
    except ImportError:
        return cleaned, None
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    if error is None:
        return cleaned, None
    where = "/".join(str(p) for p in error.absolute_path)
    return cleaned, f"{error.message}" + (f" (at {where})" if where else "")


async def checked_completion(client: Client, request: ChatRequest, options: Any) -> Completion:
    """The answer, re-asked once when it breaks ``tool_choice`` or ``response_format`` (see the module)."""
    messages, tools = prepared(request)
    completion = await client.acomplete(messages, tools, options)
    issue = problem(request, completion)
    if issue is not None and completion.finish_reason not in ("length", "incomplete"):
        retry = [*messages, completion.to_message(), Message("user", issue)]
        second = await client.acomplete(retry, tools, options)
        second.usage = completion.usage + second.usage
        completion = second
    if request.schema is not None and not sendable_calls(completion):
        cleaned, error = parse_json_answer(completion.content, request.schema)
        if error is None:
            completion.content = cleaned
    return completion
