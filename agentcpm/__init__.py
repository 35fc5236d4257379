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

# public name -> the module that defines it
_EXPORTS = {
    "Agent": "agent",
    "RunFinished": "agent",
    "RunResult": "agent",
    "StepFinished": "agent",
    "ToolFinished": "agent",
    "ToolStarted": "agent",
    "GenerationOptions": "backends",
    "Reply": "backends",
    "ScriptedBackend": "backends",
    "Client": "client",
    "AgentCPMError": "errors",
    "instrument": "tracing",
    "Tool": "tools",
    "tool": "tools",
    "Completed": "types",
    "Completion": "types",
    "ContentDelta": "types",
    "ImagePart": "types",
    "Message": "types",
    "ReasoningDelta": "types",
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
    from .agent import Agent, RunFinished, RunResult, StepFinished, ToolFinished, ToolStarted
    from .backends import GenerationOptions, Reply, ScriptedBackend
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
    "Client",
    "Completed",
    "Completion",
    "ContentDelta",
    "GenerationOptions",
    "Image",
    "ImagePart",
    "Message",
    "ReasoningDelta",
    "Reply",
    "RunFinished",
    "RunResult",
    "ScriptedBackend",
    "StepFinished",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallArgumentsDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolFinished",
    "ToolResult",
    "ToolStarted",
    "Usage",
    "VideoPart",
    "__version__",
    "instrument",
    "tool",
]
