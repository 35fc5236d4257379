"""agentcpm: build agents on MiniCPM-V 4.6 with tools, screen vision and a terminal.

>>> from agentcpm import Client
>>> client = Client(base_url="http://localhost:8000/v1")  # doctest: +SKIP
>>> client.chat("Describe this screenshot.", images=["screen.png"]).content  # doctest: +SKIP
"""

from __future__ import annotations

from .agent import Agent, RunFinished, RunResult, StepFinished, ToolFinished, ToolStarted
from .backends import GenerationOptions, Reply, ScriptedBackend
from .client import Client
from .errors import AgentCPMError
from .tools import Tool, tool
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

__version__ = "0.1.0"

#: Short alias: ``agentcpm.Image("photo.jpg")``.
Image = ImagePart

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
    "tool",
]
