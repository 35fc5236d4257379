"""The command line's arguments: every command, option and help text (cheap: imports nothing heavy)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

EPILOG = """\
examples:
  agentcpm                                          chat in the terminal (the model runs in-process)
  agentcpm chat --base-url http://localhost:8000/v1 chat with a model served by vLLM, Ollama, ...
  agentcpm ask "What is in this picture?" --image photo.jpg
  agentcpm ask "Summarise the error on screen" --screen --json
  agentcpm run "Open the settings and turn on dark mode" --tools screen,gui
  agentcpm chat --mcp mcp.json                      with the tools of the MCP servers in a config file
  agentcpm run "Tidy ~/notes" --mcp "npx -y @modelcontextprotocol/server-filesystem ~/notes"
  agentcpm watch "Has the build finished?" --every 10 --until yes --timeout 600
  agentcpm logs                                     recent conversations (chat -c continues the last)
  agentcpm doctor

environment: AGENTCPM_BASE_URL, AGENTCPM_MODEL, AGENTCPM_API_KEY (or OPENAI_API_KEY).
"""


# ---------------------------------------------------------------------------- arguments


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults let the options go before or after the command name without one level
    # overwriting the other; main() fills the gaps.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("model options")
    group.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible server (default: run the model here)")
    group.add_argument("--model", metavar="NAME|PATH", help="model id or local checkpoint folder")
    group.add_argument("--api-key", metavar="KEY", help="API key for the server (default: $AGENTCPM_API_KEY)")
    group.add_argument("--thinking", action="store_true", help="let the model reason before it answers")
    group.add_argument("--downsample", choices=["16x", "4x"], help="4x: 4 times more visual tokens, for small text")
    group.add_argument("--max-slice-nums", type=int, metavar="N", help="image slices (more: sharper, slower)")
    group.add_argument("--max-tokens", type=int, metavar="N", help="longest answer, in tokens")
    group.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    group.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug details")
    return common


COMMON_DEFAULTS: dict[str, Any] = {
    "base_url": None,
    "model": None,
    "api_key": None,
    "thinking": False,
    "downsample": None,
    "max_slice_nums": None,
    "max_tokens": None,
    "temperature": None,
    "verbose": False,
}


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        left, top, width, height = (int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError("a region is LEFT,TOP,WIDTH,HEIGHT in pixels, e.g. 0,0,800,600") from None
    return left, top, width, height


NO_LOG_HELP = "do not log this conversation (AGENTCPM_NO_LOG=1 or `agentcpm logs off`: never)"
TOOLS_HELP = "tool sets: screen, gui, none (default: screen when a display can be captured, else none)"
MCP_HELP = (
    'MCP tool servers: a config file (FILE.json, {"mcpServers": ...}) or one stdio server\'s command in quotes '
    '("python server.py"); repeatable'
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (cheap: imports nothing)."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="agentcpm",
        description="Agents, tools and screen vision on MiniCPM-V 4.6.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_chat(commands.add_parser("chat", parents=[common], help="chat in the terminal (the default)"))
    _add_ask(commands.add_parser("ask", parents=[common], help="one question, one answer (for scripts)"))
    _add_run(commands.add_parser("run", parents=[common], help="run an agent on a task, with live progress"))
    from .unattended import add_resume_parser  # argparse only

    add_resume_parser(commands, common, TOOLS_HELP)
    _add_watch(commands.add_parser("watch", parents=[common], help="ask about the screen every few seconds"))
    doctor = commands.add_parser("doctor", parents=[common], help="check the installation, the server and the display")
    doctor.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="CONFIG|COMMAND",
        help="check only these MCP servers instead: start each and list its tools (repeatable)",
    )
    from .serve import add_arguments as add_serve_arguments  # argparse only

    add_serve_arguments(commands.add_parser("serve", parents=[common], help="an OpenAI-compatible server"))
    from .logs import add_parser as add_logs_parser

    add_logs_parser(commands)
    return parser


def _add_chat(chat: argparse.ArgumentParser) -> None:
    chat.add_argument("--tools", metavar="LIST", help=TOOLS_HELP)
    chat.add_argument("--mcp", action="append", default=[], metavar="CONFIG|COMMAND", help=MCP_HELP)
    chat.add_argument("--approve", choices=["ask", "allow", "deny"], default="ask", help="tools that need approval")
    chat.add_argument(
        "-c", "--continue", dest="continue_last", action="store_true", help="go on with the last conversation"
    )
    chat.add_argument("--resume", metavar="ID", help="continue a logged conversation (`agentcpm logs` lists them)")
    chat.add_argument("--no-log", action="store_true", help=NO_LOG_HELP)


def _add_ask(ask: argparse.ArgumentParser) -> None:
    ask.add_argument("prompt", metavar="PROMPT", help="the question; - reads it from stdin")
    ask.add_argument("--image", action="append", default=[], metavar="PATH|URL", help="attach an image (repeatable)")
    ask.add_argument("--screen", action="store_true", help="attach a screenshot")
    ask.add_argument("--monitor", type=int, default=1, metavar="N", help="monitor to capture (0: all; default 1)")
    ask.add_argument("--json", action="store_true", help="print one JSON object: content, reasoning, tool_calls, usage")
    ask.add_argument("--no-log", action="store_true", help=NO_LOG_HELP)


def _add_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("task", metavar="TASK", help="what to do; - reads it from stdin")
    run.add_argument("--tools", metavar="LIST", help=TOOLS_HELP)
    run.add_argument("--mcp", action="append", default=[], metavar="CONFIG|COMMAND", help=MCP_HELP)
    run.add_argument("--max-steps", type=int, default=20, metavar="N", help="most model calls (default 20)")
    run.add_argument(
        "--approve",
        choices=["ask", "allow", "deny", "later"],
        default="ask",
        help="tools that need approval (later: stop with them pending; `agentcpm resume` decides)",
    )
    run.add_argument("--transcript", metavar="FILE", help="append the run to a JSONL transcript")
    run.add_argument("--image", action="append", default=[], metavar="PATH|URL", help="attach an image (repeatable)")
    run.add_argument("--no-log", action="store_true", help=NO_LOG_HELP)
    run.add_argument("--trace", metavar="FILE", help="write the run's OpenTelemetry spans to FILE (JSON lines)")
    from .unattended import add_budget_arguments  # argparse only

    add_budget_arguments(run)


def _add_watch(watch: argparse.ArgumentParser) -> None:
    watch.add_argument("question", metavar="QUESTION", help="what to ask about the screen each time it is looked at")
    watch.add_argument("--every", type=float, required=True, metavar="SECONDS", help="seconds between looks")
    watch.add_argument("--until", metavar="TEXT", help="stop (exit 0) when an answer contains TEXT")
    watch.add_argument("--timeout", type=float, metavar="SECONDS", help="give up (exit 1) after this long")
    watch.add_argument("--monitor", type=int, default=1, metavar="N", help="monitor to watch (default 1)")
    watch.add_argument("--region", type=_region, metavar="L,T,W,H", help="watch only this rectangle")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name, default in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.command is None:
        args.command = "chat"
        args.tools, args.approve = None, "ask"
        args.continue_last, args.resume, args.no_log, args.mcp = False, None, False, []
    return args
