"""Tool-call markup for scripted model replies, written by the project's own renderer.

Tests script what the model says (ScriptedBackend, the OpenAI test server); a reply that calls a tool is the
markup MiniCPM-V writes. ``render_tool_calls`` writes it exactly as the chat template does, so tests build it
from there instead of by hand::

    from markup import call, calls

    call("click", x=500, y=120)                                # one call
    calls(("screenshot", {}), ("click", {"x": 1}))             # several, one after another
    calls(("screenshot", {}), before="Let me look.\n")         # words before the call

Tests that are about the raw text itself (sloppy or malformed markup, a call cut off mid-way, exact bytes and
chunk boundaries) keep writing it by hand, and say so.
"""

from __future__ import annotations

from typing import Any

from agentcpm.format import render_tool_calls
from agentcpm.types import ToolCall


def call(name: str, /, **arguments: Any) -> str:
    """The markup of one call of ``name`` with ``arguments`` (any names: ``text=`` is a tool argument here)."""
    return render_tool_calls([ToolCall(name=name, arguments=arguments)])


def calls(*pairs: tuple[str, dict[str, Any]], before: str = "") -> str:
    """The markup of several calls ``(name, arguments)``, in order, after ``before`` (words before the calls)."""
    return before + render_tool_calls([ToolCall(name=name, arguments=arguments) for name, arguments in pairs])
