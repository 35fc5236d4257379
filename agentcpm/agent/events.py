"""What a run reports: the events :meth:`Agent.stream` yields (each with a ``type`` literal) and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..types import Message, StreamEvent, ToolCall, ToolResult, Usage

__all__ = [
    "AgentEvent",
    "PendingCall",
    "RunFinished",
    "RunResult",
    "RunUsage",
    "Step",
    "StepFinished",
    "ToolFinished",
    "ToolRunFinished",
    "ToolRunStarted",
    "ToolStarted",
]


@dataclass
class RunUsage:
    """What a run cost: tokens and requests summed over its steps, tool calls made, images sent (each image
    counted once per request that carried it), wall time in seconds."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    tool_calls: int = 0
    duration: float = 0.0
    images: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Step:
    """One model request and the tool calls it led to. ``index`` counts the conversation's assistant turns."""

    index: int
    message: Message
    tool_results: list[ToolResult]
    usage: Usage
    duration: float
    finish_reason: str | None = None


@dataclass
class PendingCall:
    """A call waiting for a decision (``Agent(approval="later")``): its ``id``, the ``tool``, the
    ``arguments``, ``reason`` (why it needs approval) and the ``step`` that made it."""

    id: str
    tool: str
    arguments: dict[str, Any]
    reason: str
    step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tool": self.tool, "arguments": self.arguments, "reason": self.reason, "step": self.step}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingCall:
        return cls(
            str(data["id"]),
            str(data["tool"]),
            dict(data.get("arguments") or {}),
            str(data.get("reason", "")),
            int(data.get("step", 0)),
        )


@dataclass
class RunResult:
    """The outcome of :meth:`Agent.run`: ``output`` (text, or an ``output_type`` instance), the whole
    conversation (images included), the steps and the summed usage.

    ``pending``: calls waiting for approval (``approval="later"``): the run stopped there, ``output`` is None;
    continue with ``agent.run(history=result.messages, approvals={id: True, ...})`` (or from the transcript).
    ``limit``: the :class:`~agentcpm.agent.UsageLimits` field that was reached when the output is the final
    answer asked for without tools (``final_answer=True``); None otherwise."""

    output: Any
    messages: list[Message]
    steps: list[Step]
    usage: RunUsage
    pending: list[PendingCall] = field(default_factory=list)
    limit: str | None = None


@dataclass(slots=True)
class ToolRunStarted:
    """A tool is about to run (the agent's layer; the model's :class:`~agentcpm.types.ToolCallStarted` is the
    call being written)."""

    type: ClassVar[Literal["tool.started"]] = "tool.started"
    step: int
    call: ToolCall


@dataclass(slots=True)
class ToolRunFinished:
    """A call ended: ``result`` is what goes back to the model; ``error`` is set when it did not succeed
    (invalid arguments, unknown tool, denied, raised, timed out, cancelled)."""

    type: ClassVar[Literal["tool.finished"]] = "tool.finished"
    step: int
    call: ToolCall
    result: ToolResult
    error: str | None
    duration: float


@dataclass(slots=True)
class StepFinished:
    """A step is done; ``usage`` is its model request's usage."""

    type: ClassVar[Literal["step.finished"]] = "step.finished"
    step: int
    usage: Usage
    record: Step


@dataclass(slots=True)
class RunFinished:
    """The last event of a run."""

    type: ClassVar[Literal["run.finished"]] = "run.finished"
    result: RunResult


#: The earlier names, kept as plain aliases.
ToolStarted = ToolRunStarted
ToolFinished = ToolRunFinished

AgentEvent = StreamEvent | ToolRunStarted | ToolRunFinished | StepFinished | RunFinished
