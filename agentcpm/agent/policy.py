"""The agent's decision rules as plain functions: which calls run, when a run must stop, what the model is sent
(the image window), and how the final answer is read. No I/O here; :mod:`.run` applies them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import move_tool_images
from ..errors import (
    IncompleteAnswerError,
    MaxStepsExceeded,
    RepeatedToolCallError,
    ToolRetriesExceeded,
)
from ..tools import Tool, ToolArgumentsError, dumps_exact, format_validation_error
from ..types import Completion, ImagePart, Message, TextPart, ToolCall, ToolResult

INCOMPLETE = "incomplete"  # engine.INCOMPLETE: the answer's stream ended before the backend said it finished


def error_result(call: ToolCall, text: str) -> ToolResult:
    """A refusal or failure, as the tool result the model reads."""
    return ToolResult(call_id=call.id, name=call.name or "unknown", content=[TextPart(text)], is_error=True)


# ---------------------------------------------------------------------------- calls


@dataclass
class Decision:
    """What to do with one call: run ``tool`` with ``arguments``, or answer it with ``result`` right away."""

    call: ToolCall
    tool: Tool | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    result: ToolResult | None = None
    error: str | None = None
    recorded: bool = False  # written to the transcript
    message: Message | None = None  # the result as a message, once recorded

    def refuse(self, text: str) -> Decision:
        self.result, self.error = error_result(self.call, text), text
        return self


@dataclass
class CallRules:
    """The per-run state of the call rules: invalid-argument attempts per tool, the repeated-call streak."""

    tools: dict[str, Tool]
    tool_retries: int
    repeat_limit: int | None
    invalid_in_a_row: dict[str, int] = field(default_factory=dict)
    last_call: tuple[str, str] | None = None
    repeats: int = 0
    stop: str | None = None  # set when the run must end once this step's results are in

    def check(self, call: ToolCall) -> Decision:
        """The rules before approval, in order: cut off, unknown tool, invalid arguments, repeated call."""
        decision = Decision(call)
        if not call.complete:  # never run a call whose end was not seen: its arguments may be cut short
            return decision.refuse(
                f"The call to {call.name or 'a tool'} was cut off before it was complete (the answer ended "
                "before the call did), so it was not run. Make the call again, complete and shorter."
            )
        tool = self.tools.get(call.name)
        if tool is None:
            available = ", ".join(self.tools) or "none"
            return decision.refuse(f"There is no tool named {call.name!r}. Available tools: {available}.")
        decision.tool = tool
        try:
            if call.error:
                raise ToolArgumentsError(tool.name, [call.error])
            decision.arguments = tool.validate(dict(call.arguments))
        except ToolArgumentsError as exc:
            self.invalid_in_a_row[tool.name] = self.invalid_in_a_row.get(tool.name, 0) + 1
            schema = json.dumps(tool.parameters, ensure_ascii=False)
            errors = "\n".join(f"- {e}" for e in exc.errors)
            return decision.refuse(
                f"Invalid arguments for {tool.name}:\n{errors}\nThe parameters are:\n{schema}\n"
                "Call the tool again with corrected arguments."
            )
        self.invalid_in_a_row[tool.name] = 0
        if self._is_repeat(call):
            return decision.refuse(
                f"You already called {call.name} with exactly these arguments {self.repeats - 1} times "
                "in a row, so it was not run again. Use the results you have, or do something different."
            )
        return decision

    def _is_repeat(self, call: ToolCall) -> bool:
        if self.repeat_limit is None:
            return False
        key = (call.name, dumps_exact(call.arguments, sort_keys=True, default=str))
        self.repeats = self.repeats + 1 if key == self.last_call else 1
        self.last_call = key
        if self.repeats < self.repeat_limit:
            return False
        if self.repeats > self.repeat_limit:  # told once and insisting: end the run after this step
            self.stop = (
                f"the model called {call.name} with the same arguments {self.repeats} times in a row after being "
                "told it already ran; stopping. A different prompt or a larger model may help."
            )
        return True

    def check_budgets(self, messages: list[Message]) -> None:
        """After a step: raise if the model insists on a repeated call or keeps sending invalid arguments."""
        if self.stop is not None:
            raise RepeatedToolCallError(self.stop, messages)
        for name, count in self.invalid_in_a_row.items():
            if count > self.tool_retries:
                raise ToolRetriesExceeded(
                    f"the model sent invalid arguments to {name} {count} times in a row (tool_retries="
                    f"{self.tool_retries}); the last errors are in the final tool message. Describe the "
                    "parameters better in the docstring, or raise tool_retries.",
                    messages,
                )


def out_of_steps(max_steps: int, final_prompt: str | None, messages: list[Message]) -> Message:
    """The step limit is reached: the final prompt to ask without tools, or MaxStepsExceeded."""
    if final_prompt is None:
        raise MaxStepsExceeded(
            f"no final answer after max_steps={max_steps}: raise max_steps, or set final_prompt to ask for an "
            "answer without tools",
            messages,
        )
    return Message("user", final_prompt)


def check_final(completion: Completion, messages: list[Message]) -> None:
    """An answer without calls whose stream broke off is not a final answer: raise, with the messages."""
    if completion.finish_reason == INCOMPLETE:
        raise IncompleteAnswerError(
            "the model's answer broke off before it finished (finish_reason 'incomplete': the stream or the "
            "connection ended early), so it was not taken as the final answer; the conversation so far is in "
            ".messages (pass it as history= to try again)",
            messages,
        )


def unanswered_calls(messages: list[Message]) -> list[ToolCall]:
    """Calls of the last assistant turn that have no result yet (a run stopped between the two)."""
    answered: set[str] = set()
    for message in reversed(messages):
        if message.role == "tool" and message.tool_call_id:
            answered.add(message.tool_call_id)
        elif message.role == "assistant":
            return [c for c in message.tool_calls if c.id not in answered]
        else:
            return []
    return []


def step_of(messages: list[Message], target: Message) -> int:
    """The step (assistant turns so far) a message of the conversation belongs to."""
    step = 0
    for message in messages:
        if message.role == "assistant":
            step += 1
        if message is target:
            return step
    return step


# ---------------------------------------------------------------------------- the image window

_OMITTED = "[image from step {} omitted]"


def prune_chunk(keep_images: int) -> int:
    """How many old tool images are dropped at once by default: half the window, rounded up."""
    return max(1, (keep_images + 1) // 2)


def tool_images_kept(count: int, keep_images: int, chunk: int) -> int:
    """How many of ``count`` tool images are sent: all up to ``keep_images``; past it, the oldest are dropped
    ``chunk`` at a time, so between ``keep_images - chunk + 1`` and ``keep_images`` stay and what is dropped
    changes only every ``chunk`` new images. Between two drops the request only grows at its end, so an
    in-process model's prefix cache (and a server's) reuses everything before the new step.

    >>> [tool_images_kept(n, keep_images=3, chunk=2) for n in range(1, 9)]
    [1, 2, 3, 2, 3, 2, 3, 2]
    """
    if count <= keep_images:
        return count
    dropped = -(-(count - keep_images) // chunk) * chunk  # the excess, rounded up to whole chunks
    return max(0, count - dropped)


def request_messages(
    messages: list[Message], keep_images: int, max_images: int | None, chunk: int | None = None
) -> list[Message]:
    """What the model is sent: the newest tool images (:func:`tool_images_kept`: at most ``keep_images``,
    older ones dropped ``chunk`` at a time, by default :func:`prune_chunk`), user images always (within
    ``max_images``), then tool images moved into a following user turn. A dropped image becomes a placeholder
    where it would have been (a tool's in that user turn: the tool's text is unchanged, so the prompt without
    it is the prompt with it up to that turn, all a prefix cache can reuse)."""
    if not any(isinstance(p, ImagePart) for m in messages for p in m.content):
        return list(messages)  # the common case: nothing to window (the engine moves tool images anyway)
    tool_images = sum(1 for m in messages if m.role == "tool" for p in m.content if isinstance(p, ImagePart))
    keep_images = tool_images_kept(tool_images, keep_images, chunk or prune_chunk(keep_images))
    keep: dict[int, set[int]] = {}
    tool_kept = total = 0
    step = sum(1 for m in messages if m.role == "assistant")
    steps: list[int] = [0] * len(messages)
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        steps[index] = step
        if message.role == "assistant":
            step -= 1
        for position in range(len(message.content) - 1, -1, -1):
            if not isinstance(message.content[position], ImagePart):
                continue
            from_tool = message.role == "tool"
            if (not from_tool or tool_kept < keep_images) and (max_images is None or total < max_images):
                keep.setdefault(index, set()).add(position)
                total += 1
                tool_kept += from_tool
    out: list[Message] = []
    stand_ins: dict[tuple[int, int], str] = {}  # dropped tool images: their placeholder goes where they would be
    for index, message in enumerate(messages):
        dropped = [
            i for i, p in enumerate(message.content) if isinstance(p, ImagePart) and i not in keep.get(index, ())
        ]
        if message.role == "tool" or not dropped:
            stand_ins.update({(index, i): _OMITTED.format(steps[index]) for i in dropped})
            out.append(message)
            continue
        content = [
            TextPart(_OMITTED.format(steps[index])) if i in dropped else p for i, p in enumerate(message.content)
        ]
        out.append(message.model_copy(update={"content": content}))
    return move_tool_images(out, stand_ins)


# ---------------------------------------------------------------------------- structured output


def output_instruction(system: str | None, output_type: Any) -> str | None:
    """The system prompt, with the JSON schema of ``output_type`` appended when one is asked for."""
    if output_type in (None, str):
        return system
    from pydantic import TypeAdapter

    schema = json.dumps(TypeAdapter(output_type).json_schema(), ensure_ascii=False)
    instruction = f"Give your final answer as only a JSON value matching this schema:\n{schema}"
    return f"{system}\n\n{instruction}" if system else instruction


def parse_output(output_type: Any, text: str) -> tuple[Any, str | None]:
    """(the output, None), or (None, what to tell the model) when the answer does not fit ``output_type``."""
    if output_type is None or output_type is str:
        return text, None
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(output_type)
    try:
        return adapter.validate_json(extract_json(text)), None
    except ValidationError as exc:
        errors = "\n".join(f"- {e}" for e in format_validation_error(exc))
        schema = json.dumps(adapter.json_schema(), ensure_ascii=False)
        return None, (
            f"Your answer does not fit the required format:\n{errors}\nAnswer again with only a JSON value "
            f"matching this schema, nothing else:\n{schema}"
        )


def extract_json(text: str) -> str:
    """The JSON in an answer: inside a ```json fence if there is one, else from the first { or [."""
    fence = re.search(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.S)
    if fence:
        return fence.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text.strip()
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    return text[start : end + 1] if end > start else text[start:]


def type_name(output_type: Any) -> str:
    return getattr(output_type, "__name__", repr(output_type))


def jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
