"""Unattended runs on the command line: budget flags, ``run --approve later`` and ``agentcpm resume``.

``agentcpm run TASK --approve later --transcript run.jsonl`` ends (exit status 3) listing the calls that wait
for approval; ``agentcpm resume run.jsonl`` shows them and asks on a terminal, or takes ``--approve ID`` and
``--reject ID[:MESSAGE]``, and continues the run. Only argparse is imported at the top.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..agent import PendingCall, UsageLimits

#: The exit status of a run that stopped with calls waiting for approval.
PENDING_STATUS = 3


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget (the run stops when one is reached)")
    group.add_argument("--max-requests", type=int, metavar="N", help="most model requests")
    group.add_argument("--max-tool-calls", type=int, metavar="N", help="most tool calls")
    group.add_argument("--max-total-tokens", type=int, metavar="N", help="most input + output tokens")
    group.add_argument("--time-limit", type=float, metavar="SECONDS", help="wall-clock limit, tools included")
    group.add_argument("--max-images", type=int, metavar="N", help="most images sent (counted per request)")
    group.add_argument(
        "--final-answer", action="store_true", help="at a limit, ask once more without tools instead of failing"
    )


def limits_from(args: argparse.Namespace) -> UsageLimits | None:
    """The UsageLimits the budget flags ask for (None when no flag was given)."""
    from ..agent import UsageLimits

    values = {
        "requests": args.max_requests,
        "tool_calls": args.max_tool_calls,
        "total_tokens": args.max_total_tokens,
        "seconds": args.time_limit,
        "images": args.max_images,
    }
    if all(v is None for v in values.values()):
        return None
    return UsageLimits(**values, final_answer=args.final_answer)


def add_resume_parser(commands: Any, common: argparse.ArgumentParser, tools_help: str) -> None:
    resume = commands.add_parser(
        "resume", parents=[common], help="decide the calls a run left pending (--approve later) and go on"
    )
    resume.add_argument("transcript", metavar="TRANSCRIPT", help="the run's JSONL transcript")
    resume.add_argument("--approve", dest="approve_ids", action="append", default=[], metavar="ID", help="run it")
    resume.add_argument(
        "--reject", action="append", default=[], metavar="ID[:MESSAGE]", help="refuse it (MESSAGE: why, to the model)"
    )
    resume.add_argument("--tools", metavar="LIST", help=tools_help + "; give the run's own")
    resume.add_argument("--mcp", action="append", default=[], metavar="CONFIG|COMMAND", help="the run's MCP servers")
    resume.add_argument("--max-steps", type=int, default=20, metavar="N", help="most model calls (default 20)")
    add_budget_arguments(resume)


def show_pending(console: Any, pending: list[PendingCall], transcript: str) -> None:
    from rich.markup import escape

    from ..tools import display_call
    from ..types import ToolCall

    console.print(f"[bold yellow]{len(pending)} call{'s' * (len(pending) != 1)} waiting for approval:[/]")
    for call in pending:
        shown = display_call(ToolCall(id=call.id, name=call.tool, arguments=call.arguments))
        console.print(f"  {escape(call.id)}  {escape(shown)}  [dim]({escape(call.reason)})[/]", soft_wrap=True)
    ids = " ".join(f"--approve {c.id}" for c in pending)
    console.print(f"[dim]decide with: agentcpm resume {escape(transcript)} {escape(ids)} (or --reject ID:why)[/]")


def decisions(args: argparse.Namespace, pending: list[PendingCall], console: Any) -> dict[str, Any]:
    """The flags' decisions; on a terminal, the undecided calls are asked for (y / n / n: message)."""
    from ..agent import Rejected
    from ..errors import ConfigurationError

    chosen: dict[str, Any] = {i: True for i in args.approve_ids}
    for item in args.reject:
        call_id, _, message = item.partition(":")
        chosen[call_id] = Rejected(message.strip() or None)
    known = {c.id for c in pending}
    unknown = [i for i in chosen if i not in known]
    if unknown:
        raise ConfigurationError(
            f"no pending call with id {', '.join(unknown)} in {args.transcript} (pending: {', '.join(known) or 'none'})"
        )
    if sys.stdin is not None and sys.stdin.isatty():
        for call in pending:
            if call.id not in chosen:
                chosen[call.id] = _ask(console, call)
    return chosen


def _ask(console: Any, call: PendingCall) -> Any:
    from rich.markup import escape

    from ..agent import Rejected

    answer = console.input(f"[bold yellow]allow {escape(call.id)} ({escape(call.tool)})?[/] \\[y/n/n: why] ")
    answer = answer.strip()
    if answer.lower() in ("y", "yes"):
        return True
    _, _, why = answer.partition(":")
    return Rejected(why.strip() or None)


def cmd_resume(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..agent import Agent
    from ..transcript import Transcript
    from .render import TurnView, play
    from .shared import build_tools, gui, make_client, started_mcp_servers

    console = Console(highlight=False)
    pending = Transcript.load_pending(args.transcript)
    if pending:
        show_pending(console, pending, args.transcript)
    chosen = decisions(args, pending, console)
    history = Transcript.load(args.transcript)
    view = TurnView(console, show_reasoning=args.thinking, markdown=console.is_terminal)
    tools = build_tools(args)
    with started_mcp_servers(args, [t.name for t in tools]) as servers, make_client(args) as client:
        agent = Agent(
            client,
            tools=[*tools, *servers],
            max_steps=args.max_steps,
            approval="later",
            parallel_tool_calls=not gui(args),
            limits=limits_from(args),
        )
        result = play(view, agent.stream(history=history, transcript=args.transcript, approvals=chosen))
    return finished(console, result, args.transcript)


def finished(console: Any, result: Any, transcript: str | None) -> int:
    """After a run: the calls left pending (exit status 3), else the usage line (0)."""
    from .render import format_usage

    if result is None:
        return 0
    if result.pending:
        show_pending(console, result.pending, str(transcript))
        return PENDING_STATUS
    steps = len(result.steps)
    console.print(format_usage(result.usage, f"{steps} step{'s' * (steps != 1)}"), style="dim")
    return 0
