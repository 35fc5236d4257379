"""agentcpm: build agents on MiniCPM-V 4.6 with tools, screen vision and a terminal.

>>> from agentcpm import Client
>>> client = Client(base_url="http://localhost:8000/v1")  # doctest: +SKIP
>>> client.chat("Describe this screenshot.", images=["screen.png"]).content  # doctest: +SKIP

The public names load on first use, so ``import agentcpm`` (and ``agentcpm --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (what users annotate with is exported too)
_EXPORTS = {
    "Agent": "agent",
    "PendingCall": "agent",
    "Rejected": "agent",
    "UsageLimits": "agent",
    "AgentEvent": "agent",
    "RunFinished": "agent",
    "RunResult": "agent",
    "RunUsage": "agent",
    "Step": "agent",
    "StepFinished": "agent",
    "ToolFinished": "agent",
    "ToolRunFinished": "agent",
    "ToolRunStarted": "agent",
    "ToolStarted": "agent",
    "GenerationOptions": "backends",
    "Reply": "backends",
    "ScriptedBackend": "backends",
    "Backend": "backends.base",
    "FinishChunk": "backends.base",
    "RawChunk": "backends.base",
    "ReasoningChunk": "backends.base",
    "Request": "backends.base",
    "StartChunk": "backends.base",
    "TextChunk": "backends.base",
    "ToolCallChunk": "backends.base",
    "UsageChunk": "backends.base",
    "Client": "client",
    "AgentCPMError": "errors",
    "Tool": "tools",
    "tool": "tools",
    "instrument": "tracing",
    "Completed": "types",
    "Completion": "types",
    "ContentDelta": "types",
    "ImagePart": "types",
    "Message": "types",
    "ReasoningDelta": "types",
    "ResponseCompleted": "types",
    "StreamEvent": "types",
    "TextPart": "types",
    "ToolCall": "types",
    "ToolCallArgumentsDelta": "types",
    "ToolCallFinished": "types",
    "ToolCallStarted": "types",
    "ToolResult": "types",
    "Usage": "types",
    "VideoPart": "types",
}

if TYPE_CHECKING:
    from .agent import (
        Agent,
        AgentEvent,
        PendingCall,
        Rejected,
        RunFinished,
        RunResult,
        RunUsage,
        Step,
        StepFinished,
        ToolFinished,
        ToolRunFinished,
        ToolRunStarted,
        ToolStarted,
        UsageLimits,
    )
    from .backends import GenerationOptions, Reply, ScriptedBackend
    from .backends.base import (
        Backend,
        FinishChunk,
        RawChunk,
        ReasoningChunk,
        Request,
        StartChunk,
        TextChunk,
        ToolCallChunk,
        UsageChunk,
    )
    from .client import Client
    from .errors import AgentCPMError
    from .tools import Tool, tool
    from .tracing import instrument
    from .types import (
        Completed,
        Completion,
        ContentDelta,
        ImagePart,
        Message,
        ReasoningDelta,
        ResponseCompleted,
        StreamEvent,
        TextPart,
        ToolCall,
        ToolCallArgumentsDelta,
        ToolCallFinished,
        ToolCallStarted,
        ToolResult,
        Usage,
        VideoPart,
    )

    Image = ImagePart


def __getattr__(name: str) -> Any:
    if name == "Image":  # short alias: agentcpm.Image("photo.jpg")
        name = "ImagePart"
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentcpm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "Image"])


__all__ = [
    "Agent",
    "AgentCPMError",
    "AgentEvent",
    "Backend",
    "Client",
    "Completed",
    "Completion",
    "ContentDelta",
    "FinishChunk",
    "GenerationOptions",
    "Image",
    "ImagePart",
    "Message",
    "PendingCall",
    "RawChunk",
    "ReasoningChunk",
    "ReasoningDelta",
    "Rejected",
    "Reply",
    "Request",
    "ResponseCompleted",
    "RunFinished",
    "RunResult",
    "RunUsage",
    "ScriptedBackend",
    "StartChunk",
    "Step",
    "StepFinished",
    "StreamEvent",
    "TextChunk",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallArgumentsDelta",
    "ToolCallChunk",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolFinished",
    "ToolResult",
    "ToolRunFinished",
    "ToolRunStarted",
    "ToolStarted",
    "Usage",
    "UsageChunk",
    "UsageLimits",
    "VideoPart",
    "__version__",
    "instrument",
    "tool",
]
