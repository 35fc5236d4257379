"""The ``agentcpm`` command: ``chat`` (the REPL), ``ask``, ``run``, ``watch`` and ``doctor``.

Only argparse is imported at the top so that ``agentcpm --help`` answers at once; each command imports
what it needs (the model, rich, the screen) when it runs.

>>> main(["ask", "What is 2+2?", "--base-url", "http://localhost:8000/v1"])  # doctest: +SKIP
4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import Client
    from ..mcp import MCPServer
    from ..types import ImagePart, ToolCall

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

    chat = commands.add_parser("chat", parents=[common], help="chat in the terminal (the default)")
    chat.add_argument("--tools", metavar="LIST", help=TOOLS_HELP)
    chat.add_argument("--mcp", action="append", default=[], metavar="CONFIG|COMMAND", help=MCP_HELP)
    chat.add_argument("--approve", choices=["ask", "allow", "deny"], default="ask", help="tools that need approval")
    chat.add_argument(
        "-c", "--continue", dest="continue_last", action="store_true", help="go on with the last conversation"
    )
    chat.add_argument("--resume", metavar="ID", help="continue a logged conversation (`agentcpm logs` lists them)")
    chat.add_argument("--no-log", action="store_true", help=NO_LOG_HELP)

    ask = commands.add_parser("ask", parents=[common], help="one question, one answer (for scripts)")
    ask.add_argument("prompt", metavar="PROMPT", help="the question; - reads it from stdin")
    ask.add_argument("--image", action="append", default=[], metavar="PATH|URL", help="attach an image (repeatable)")
    ask.add_argument("--screen", action="store_true", help="attach a screenshot")
    ask.add_argument("--monitor", type=int, default=1, metavar="N", help="monitor to capture (0: all; default 1)")
    ask.add_argument("--json", action="store_true", help="print one JSON object: content, reasoning, tool_calls, usage")
    ask.add_argument("--no-log", action="store_true", help=NO_LOG_HELP)

    run = commands.add_parser("run", parents=[common], help="run an agent on a task, with live progress")
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
    from .unattended import add_budget_arguments, add_resume_parser  # argparse only

    add_budget_arguments(run)
    add_resume_parser(commands, common, TOOLS_HELP)

    watch = commands.add_parser("watch", parents=[common], help="ask about the screen every few seconds")
    watch.add_argument("question", metavar="QUESTION", help="what to ask about the screen each time it is looked at")
    watch.add_argument("--every", type=float, required=True, metavar="SECONDS", help="seconds between looks")
    watch.add_argument("--until", metavar="TEXT", help="stop (exit 0) when an answer contains TEXT")
    watch.add_argument("--timeout", type=float, metavar="SECONDS", help="give up (exit 1) after this long")
    watch.add_argument("--monitor", type=int, default=1, metavar="N", help="monitor to watch (default 1)")
    watch.add_argument("--region", type=_region, metavar="L,T,W,H", help="watch only this rectangle")

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


# ---------------------------------------------------------------------------- shared helpers


def check_model(args: argparse.Namespace) -> None:
    """Fail at once, before torch is imported, when the in-process model is a folder that is not there."""
    if args.base_url or os.environ.get("AGENTCPM_BASE_URL"):
        return
    model = args.model or os.environ.get("AGENTCPM_MODEL")
    if model:
        from ..backends.local import check_model_path

        check_model_path(model)


def make_client(args: argparse.Namespace) -> Client:
    """A Client configured from the common options (and the environment)."""
    from ..client import Client

    check_model(args)
    return Client(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        thinking=args.thinking or None,
        downsample_mode=args.downsample,
        max_slice_nums=args.max_slice_nums,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )


def image_source(text: str) -> str:
    """A path or URL as typed, pasted or dragged (quotes, ``~``, ``file://``) -> what ImagePart takes.

    >>> image_source("'~/My Pictures/cat.png'").endswith("My Pictures/cat.png")
    True
    """
    from urllib.parse import unquote, urlparse

    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    if text.startswith(("http://", "https://", "data:")):
        return text
    return os.path.expanduser(text.replace("\\ ", " "))


def load_images(sources: Sequence[str]) -> list[ImagePart]:
    """Check each image now (a missing or broken file fails before the model loads)."""
    from ..errors import ImageError
    from ..types import ImagePart

    images = []
    for source in sources:
        path = image_source(source)
        if not path.startswith(("http://", "https://", "data:")) and not os.path.isfile(path):
            raise ImageError(f"no image at {path}: check the path (relative paths start at {os.getcwd()})", path)
        image = ImagePart(path)
        if not image.is_url:
            image.open()
        images.append(image)
    return images


def screenshot(args: argparse.Namespace, monitor: int = 1) -> ImagePart:
    """The screen as an image to attach to a message, sized for the model."""
    from ..screen import capture

    return capture(monitor=monitor).to_part(max_slice_nums=args.max_slice_nums, downsample_mode=args.downsample)


def tool_sets(args: argparse.Namespace) -> set[str]:
    """``--tools screen,gui`` -> {"screen", "gui"}; not given -> {"screen"}; ``none`` -> nothing.
    (Not given and no display: :func:`build_tools` gives no tools.)"""
    if args.tools is None:
        return {"screen"}
    names = {name.strip() for name in args.tools.split(",") if name.strip()} - {"none"}
    unknown = names - {"screen", "gui"}
    if unknown:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"unknown tool set(s) {', '.join(sorted(unknown))}: use screen, gui or none")
    return names


def build_tools(args: argparse.Namespace) -> list[Any]:
    """The tools ``--tools`` asks for, the same rule for ``chat`` and ``run``: not given, the screen tools
    when a display can be captured and none otherwise; named (screen, gui) without a display, a
    :class:`~agentcpm.errors.DisplayError` now rather than at the model's first call. GUI actions (click,
    type, ...) only when ``gui`` is named; they ask for approval before they act."""
    names = tool_sets(args)
    if not names:
        return []
    if not display_available():
        if args.tools is None:
            return []
        from ..errors import DisplayError

        raise DisplayError(
            f"--tools {args.tools} needs a display to capture, and there is none here (is DISPLAY set?): "
            "run where a screen can be captured, or use --tools none"
        )
    from ..screen.tools import screen_tools

    return screen_tools(actions="gui" in names, max_slice_nums=args.max_slice_nums, downsample_mode=args.downsample)


def gui(args: argparse.Namespace) -> bool:
    """True when the GUI actions were asked for: they then run one at a time, in the model's order."""
    return "gui" in tool_sets(args)


def display_available() -> bool:
    """True when a screen can be captured here."""
    try:
        from ..screen import list_monitors

        return bool(list_monitors())
    except Exception:  # no X server, no mss, no permission: simply no screen tools
        return False


def mcp_servers(args: argparse.Namespace) -> list[MCPServer]:
    """The MCP servers ``--mcp`` names, not started: each ``FILE.json`` is a config file
    (:func:`~agentcpm.mcp.load_mcp_config`), anything else one stdio server's command line (split as a shell
    would; named after its script or package). Two servers with one name: the later gets ``_2``, ``_3``..."""
    import shlex

    from ..mcp import MCPConfigError, MCPServer, load_mcp_config

    servers: list[MCPServer] = []
    for spec in getattr(args, "mcp", None) or []:
        text = spec.strip()
        if text.lower().endswith(".json") and not any(c.isspace() for c in text):
            servers += load_mcp_config(image_source(text))
            continue
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise MCPConfigError(f"--mcp {spec!r} is not a command line ({exc}): check its quotes") from None
        if not words:
            raise MCPConfigError("--mcp needs a config file (FILE.json) or a server's command, got nothing")
        servers.append(MCPServer.stdio(words[0], words[1:]))
    taken: set[str] = set()
    for server in servers:
        name, n = server.name, 1
        while server.name in taken:
            n += 1
            server.name = f"{name}_{n}"
        taken.add(server.name)
    return servers


@contextlib.contextmanager
def started_mcp_servers(args: argparse.Namespace, reserved: Sequence[str] = ()) -> Iterator[list[MCPServer]]:
    """Start the ``--mcp`` servers (all at once) and list their tools, so a server that cannot start fails
    the command before the model is asked; they are closed on the way out, whatever happens (an error,
    Ctrl-C), so no server process outlives the command. ``reserved``: the other tools' names (a clash gets
    the server's name as a prefix, as in the agent)."""
    servers = mcp_servers(args)
    if not servers:
        yield []
        return
    import asyncio

    from ..mcp import amcp_tools

    try:
        asyncio.run(amcp_tools(servers, reserved=reserved))
        yield servers
    finally:
        close_servers(servers)


def close_servers(servers: Sequence[MCPServer]) -> None:
    """Close the servers side by side (a stdio server may take a second or two to exit)."""
    if len(servers) == 1:
        servers[0].close()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda server: server.close(), servers))


def server_source(server: MCPServer) -> str:
    """Where an MCP server runs: its command line (stdio), or its URL without credentials (HTTP)."""
    if server.transport == "stdio":
        import shlex

        return "stdio: " + shlex.join([server.command or "", *server.args])
    from .._redact import redact_url

    return "http: " + redact_url(str(server.url))


def approval_prompt(console: Any, view: Callable[[], Any]) -> Callable[[ToolCall], Any]:
    """An approval callback for the agent: y / n / always on the terminal, the live display paused.

    It is async so the agent calls it on the main thread, where Ctrl-C and the terminal are."""
    from contextlib import nullcontext

    from rich.markup import escape

    from .render import format_call

    always: set[str] = set()

    async def approve(call: ToolCall) -> bool:
        if call.name in always:
            return True
        current = view()
        with current.paused() if current is not None else nullcontext():
            while True:
                try:
                    answer = console.input(f"[bold yellow]allow {escape(format_call(call))}?[/] \\[y/n/always] ")
                except EOFError:
                    return False
                answer = answer.strip().lower()
                if answer in ("y", "yes"):
                    return True
                if answer in ("n", "no", ""):
                    return False
                if answer in ("a", "always"):
                    always.add(call.name)
                    return True

    return approve


# The library's messages name Python arguments; on the command line they are flags.
_PYTHON_ARGUMENTS = re.compile(
    r"\bClient\((model|base_url|api_key)=([^)]*)\)"  # Client(model=PATH)
    r"|(?<![\w.?&/=-])(model|base_url|api_key)=(\S*)"  # model=PATH, but not ?model= in a URL
)
_BARE_ARGUMENTS = re.compile(r"(?<![\w.?&/=-])(base_url|api_key)\b")  # "fix base_url", "leave base_url out"
_FLAG_VALUES = {"model": "NAME", "base_url": "URL", "api_key": "KEY"}


def cli_wording(message: str) -> str:
    """``Client(model=PATH)``, ``base_url=URL`` and ``model=...`` in a library message -> ``--model PATH``,
    ``--base-url URL``, ``--model NAME``.

    >>> cli_wording("pass a checkpoint folder (model=PATH) or use a server (Client(base_url=...))")
    'pass a checkpoint folder (--model PATH) or use a server (--base-url URL)'
    >>> cli_wording("fix base_url, or leave base_url out")
    'fix --base-url, or leave --base-url out'
    """

    def flag(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        value = match.group(2) if match.group(1) else match.group(4)
        if not value or value.startswith("..."):
            value = _FLAG_VALUES[name] + (value[3:] if value else "")
        return f"--{name.replace('_', '-')} {value}"

    message = _PYTHON_ARGUMENTS.sub(flag, message)
    return _BARE_ARGUMENTS.sub(lambda match: "--" + match.group(1).replace("_", "-"), message)


def friendly_error(exc: BaseException) -> str:
    """One line that says what went wrong and what to do (with the command's flags, not Python's arguments)."""
    from ..errors import AgentCPMError
    from ..mcp.errors import MCPError

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = cli_wording(message)
    if isinstance(exc, MCPError):  # what a server printed before it failed (its stderr's end) says why
        rest = str(exc).strip().splitlines()[1:]
        return "\n  ".join([f"error: {message}", *rest])
    if isinstance(exc, AgentCPMError):
        return f"error: {message}"
    return f"error: {type(exc).__name__}: {message} (run with --verbose for the traceback)"


# ---------------------------------------------------------------------------- commands


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
