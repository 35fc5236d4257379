"""Agents: :class:`Agent` (configuration) runs the loop in :mod:`.run`, with the rules of :mod:`.policy`,
approval from :mod:`.approval` and tool execution from :mod:`.execution`; :mod:`.events` holds what a run
reports."""

from .agent import DEFAULT_FINAL_PROMPT, Agent, EventCallback
from .approval import Approval
from .events import (
    AgentEvent,
    RunFinished,
    RunResult,
    RunUsage,
    Step,
    StepFinished,
    ToolFinished,
    ToolRunFinished,
    ToolRunStarted,
    ToolStarted,
)

__all__ = [
    "DEFAULT_FINAL_PROMPT",
    "Agent",
    "AgentEvent",
    "Approval",
    "EventCallback",
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
