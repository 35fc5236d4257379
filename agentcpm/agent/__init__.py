"""Agents: :class:`Agent` (configuration) runs the loop in :mod:`.run`, with the rules of :mod:`.policy`,
approval from :mod:`.approval` and tool execution from :mod:`.execution`; :mod:`.events` holds what a run
reports."""

from .agent import DEFAULT_FINAL_PROMPT, Agent, EventCallback
from .approval import Approval, Approvals, Rejected
from .events import (
    AgentEvent,
    PendingCall,
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
from .limits import UsageLimits

__all__ = [
    "DEFAULT_FINAL_PROMPT",
    "Agent",
    "AgentEvent",
    "Approval",
    "Approvals",
    "EventCallback",
    "PendingCall",
    "Rejected",
    "RunFinished",
    "RunResult",
    "RunUsage",
    "Step",
    "StepFinished",
    "ToolFinished",
    "ToolRunFinished",
    "ToolRunStarted",
    "ToolStarted",
    "UsageLimits",
]
