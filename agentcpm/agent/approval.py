"""Approval for tools marked ``requires_approval``: only an explicit yes runs a call.

The terminal prompt is used only when the caller asked for it (``approval="ask"``) and stdin is a terminal;
without one the call is refused with a message that says what to pass instead, so library code never blocks
on stdin. A tool may carry its own ``approval`` (an MCP server's setting): it is asked before the agent's.
``"later"`` asks nobody: the run ends with the calls pending (:class:`~agentcpm.agent.PendingCall`) and any
later process decides them (``approvals={call_id: True | Rejected("why")}``).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ApprovalError
from ..tools import Tool, display_call, run_in_thread
from ..types import Message, ToolCall

Approval = (
    Literal["ask", "allow", "deny", "later"] | Callable[[ToolCall], "bool | str | Awaitable[bool | str | None] | None"]
)

#: True while a call the agent has already approved runs (an MCP tool then does not ask its callback again).
granted: ContextVar[bool] = ContextVar("agentcpm_approval_granted", default=False)


@dataclass(frozen=True)
class Rejected:
    """A decision on a pending call: do not run it; ``message`` (optional) is what the model is told why."""

    message: str | None = None


#: Decisions on pending calls, by call id: ``True`` runs the call, ``False`` or :class:`Rejected` refuses it.
Approvals = Mapping[str, "bool | Rejected"]


def rejection(call: ToolCall, decision: bool | Rejected) -> str:
    """What the model reads for a pending call that was rejected."""
    message = decision.message if isinstance(decision, Rejected) else None
    return f"{refusal(call)} The user said: {message}" if message else refusal(call)


def deferral(tool: Tool, approval: Approval) -> str | None:
    """With ``approval="later"``: why this call must wait for a decision (None: it needs none, or the tool's
    own approval decides it now)."""
    if approval != "later":
        return None
    own = getattr(tool, "approval", None)
    if own == "allow" or callable(own):
        return None
    if own == "ask":
        return f"{tool.name} comes from a server whose tools need approval"
    if tool.requires_approval:
        return f"{tool.name} is marked requires_approval"
    return None


def refusal(call: ToolCall) -> str:
    return f"The user did not allow {call.name} to run, so it was not run."


def no_terminal(call: ToolCall) -> str:
    return (
        f"{call.name} needs approval and there is no terminal to ask (stdin is not a TTY), so it was not run. "
        'Pass Agent(approval="allow"), "deny" or a callable approve(call) where nobody can answer a prompt.'
    )


async def decide(tool: Tool, call: ToolCall, approval: Approval, messages: list[Message]) -> str | None:
    """None when ``call`` may run, else the refusal the model reads. The tool's own ``approval`` (a callable,
    or "allow") is asked before the agent's; "ask" on the tool leaves it to the agent's ``approval``."""
    own = getattr(tool, "approval", None)
    if own == "allow":
        return None
    if callable(own):
        return None if await _ask_callable(own, call, messages) else refusal(call)
    if not tool.requires_approval and own != "ask":
        return None
    if approval == "allow":
        return None
    if approval == "deny" or approval == "later":  # (a call "later" defers never gets here: the run decides)
        return refusal(call)
    if approval == "ask":
        if not _stdin_is_a_terminal():
            return no_terminal(call)
        return None if await run_in_thread(ask_in_terminal, call) else refusal(call)
    return None if await _ask_callable(approval, call, messages) else refusal(call)


async def _ask_callable(approve: Callable[[ToolCall], Any], call: ToolCall, messages: list[Message]) -> bool:
    outcome = approve(call) if inspect.iscoroutinefunction(approve) else await run_in_thread(approve, call)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return approved(outcome, call, messages)


def approved(outcome: Any, call: ToolCall, messages: list[Message]) -> bool:
    """An approval callback's answer: only ``True`` or "y"/"yes" approve; ``False``, ``None`` and other
    strings refuse; anything else is a bug in the callback (``1``, a dict, ...), never taken as a yes."""
    if isinstance(outcome, bool):
        return outcome
    if outcome is None:
        return False
    if isinstance(outcome, str):
        return outcome.strip().lower() in ("y", "yes")
    raise ApprovalError(
        f"the approval callback returned {type(outcome).__name__} for {display_call(call)[:200]}, so it was "
        "not run: return True to allow the call, False to refuse it",
        messages,
    )


def _stdin_is_a_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def ask_in_terminal(call: ToolCall) -> bool:
    """A y/N prompt on the terminal; control, bidi and zero-width characters are shown escaped, so what is
    shown is what runs. Anything but y/yes (and end of input) refuses."""
    try:
        answer = input(f"Allow {display_call(call)}? [y/N] ")
    except EOFError:
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in ("y", "yes")
