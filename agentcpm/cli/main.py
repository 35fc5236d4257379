"""The ``agentcpm`` command: ``chat`` (the REPL), ``ask``, ``run``, ``watch`` and ``doctor``.

Only argparse is imported at the top so that ``agentcpm --help`` answers at once; each command imports
what it needs (the model, rich, the screen) when it runs.

>>> main(["ask", "What is 2+2?", "--base-url", "http://localhost:8000/v1"])  # doctest: +SKIP
4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .app import build_parser, parse_args
from .shared import approval_prompt, build_tools, gui, load_images, make_client, screenshot, started_mcp_servers
from .wording import friendly_error

__all__ = ["build_parser", "main", "parse_args"]


def cmd_ask(args: argparse.Namespace) -> int:
    import json

    from ..types import Completed, ContentDelta, ReasoningDelta
    from .logs import ask_log

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        from ..errors import ConfigurationError

        raise ConfigurationError("the prompt is empty: give it as an argument or on stdin with `ask -`")
    images = load_images(args.image)
    if args.screen:
        images.append(screenshot(args, args.monitor))
    with make_client(args) as client, ask_log(args, client, prompt, images) as log:
        if args.json:
            c = client.chat(log.messages)
            log.answered(c)
            out = {
                "content": c.content,
                "reasoning": c.reasoning,
                "tool_calls": [{"id": t.id, "name": t.name, "arguments": t.arguments} for t in c.tool_calls],
                "finish_reason": c.finish_reason,
                "usage": {"prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens},
            }
            print(json.dumps(out, ensure_ascii=False))
            return 0
        dim = sys.stderr.isatty()
        wrote = ""
        for event in client.stream(log.messages):
            if isinstance(event, ContentDelta):
                if wrote or event.text.strip():
                    text = event.text if wrote else event.text.lstrip()
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    wrote += text
            elif isinstance(event, ReasoningDelta):
                sys.stderr.write(f"\x1b[2m{event.text}\x1b[0m" if dim else event.text)
                sys.stderr.flush()
            elif isinstance(event, Completed):
                log.answered(event.completion)
                if event.completion.reasoning and not dim:
                    sys.stderr.write("\n")
                for call in event.completion.tool_calls:
                    from .render import format_call

                    sys.stderr.write(f"(the model asked for a tool call: {format_call(call)})\n")
        if not wrote.endswith("\n"):
            sys.stdout.write("\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..agent import Agent
    from ..tracing import trace_file
    from .logs import answer_text, logged_turn, model_of, start_log
    from .render import TurnView, play
    from .unattended import finished, limits_from

    task = sys.stdin.read() if args.task == "-" else args.task
    images = load_images(args.image)
    tools = build_tools(args)
    console = Console(highlight=False)
    view = TurnView(console, show_reasoning=args.thinking, markdown=console.is_terminal)
    approval: Any = approval_prompt(console, lambda: view) if args.approve == "ask" else args.approve
    reserved = [t.name for t in tools]
    with started_mcp_servers(args, reserved) as servers, make_client(args) as client, trace_file(args.trace):
        agent = Agent(
            client,
            tools=[*tools, *servers],  # the agent lists the servers' tools at the start of the run
            max_steps=args.max_steps,
            approval=approval,
            parallel_tool_calls=not gui(args),
            limits=limits_from(args),
        )
        log = start_log(args, client, "run", path=args.transcript)
        with logged_turn(log, task):
            transcript = log.path if log is not None else args.transcript
            if args.approve == "later" and transcript is None:
                from ..errors import ConfigurationError

                raise ConfigurationError("--approve later needs a transcript to resume from: add --transcript FILE")
            result = play(view, agent.stream(task, images=images, transcript=transcript))
            if log is not None and result is not None:
                usage = result.usage
                answer = answer_text(result.messages)
                log.turn_finished(answer, usage.prompt_tokens, usage.completion_tokens, model=model_of(client))
    return finished(console, result, str(transcript))


def cmd_watch(args: argparse.Namespace) -> int:
    from ..screen import watch

    with make_client(args) as client:
        answers = watch(
            args.question,
            every=args.every,
            until=args.until,
            monitor=args.monitor,
            region=args.region,
            client=client,
            timeout=args.timeout,
        )
        for answer in answers:  # ends by itself at the timeout
            stamp = time.strftime("%H:%M:%S", time.localtime(answer.taken_at))
            print(f"[{stamp}] {answer.text.strip()}", flush=True)
            if answer.done:
                return 0
    if args.until is None:
        return 0
    print(f"timed out after {args.timeout:g} s: no answer contained {args.until!r}", file=sys.stderr)
    return 1


def cmd_chat(args: argparse.Namespace) -> int:
    from .repl import Repl

    return Repl(args).run()


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs import cmd_logs

    return cmd_logs(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    return doctor(args)


def cmd_resume(args: argparse.Namespace) -> int:
    from .unattended import cmd_resume as resume

    return resume(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import cmd_serve as serve

    return serve(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "chat": cmd_chat,
    "ask": cmd_ask,
    "run": cmd_run,
    "watch": cmd_watch,
    "doctor": cmd_doctor,
    "logs": cmd_logs,
    "serve": cmd_serve,
    "resume": cmd_resume,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 bad usage, 130 interrupted)."""
    args = parse_args(argv)
    if args.version:
        from .. import __version__

        print(__version__)
        return 0
    import logging

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    else:  # retries and fallbacks stay quiet; the outcome is reported as one line
        logging.getLogger("agentcpm").setLevel(logging.ERROR)
        # transformers sets its own level when it is first imported (lazily, after this), from this variable;
        # its notes about slower reference kernels would otherwise land in the middle of a streamed answer.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # ... and so would its "Loading weights" bar (in stderr, and over the REPL's banner). Importing this
        # module imports neither torch nor transformers.
        from ..backends import local

        local.show_load_progress = False
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from ..errors import AgentCancelled

        if isinstance(exc, AgentCancelled):  # Ctrl-C inside an agent run
            print("\ninterrupted", file=sys.stderr)
            return 130
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(friendly_error(exc), file=sys.stderr)
        return 1
