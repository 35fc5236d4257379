"""``agentcpm chat``: the terminal REPL. Each question runs the agent (with the screen tools when a display
is there) and its events stream through :class:`~agentcpm.cli.render.TurnView`.

Ctrl-C stops the answer being written and keeps the session; Ctrl-D or ``/exit`` leaves. Line editing
and history come from readline; the history persists in ``$XDG_STATE_HOME/agentcpm/history``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._redact import redact_url
from ..types import ImagePart, Message, Usage
from .main import approval_prompt, build_tools, friendly_error, gui, image_source, load_images, make_client, screenshot
from .render import TurnView, format_usage, play, preview

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")

COMMANDS = {
    "/image": ("PATH|URL", "attach an image to the next message (or paste / drag a file path)"),
    "/screen": ("[N]", "attach a screenshot of monitor N (default 1)"),
    "/tools": ("", "list the tools the model can use"),
    "/think": ("", "turn the model's reasoning on or off"),
    "/reset": ("", "start a new conversation"),
    "/save": ("FILE", "save the conversation"),
    "/load": ("FILE", "load a saved conversation"),
    "/usage": ("", "token usage of the last turn and the session"),
    "/help": ("", "this list"),
    "/exit": ("", "leave (or Ctrl-D)"),
}

# One leading token as a shell would write a dragged path: quoted, or with backslash-escaped spaces.
_TOKEN = re.compile(r"""\s*('[^']*'|"[^"]*"|(?:\\.|[^\s\\])+)""")


def state_dir() -> Path:
    """Where the REPL keeps its history: ``$XDG_STATE_HOME/agentcpm`` or ``~/.local/state/agentcpm``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "agentcpm"


def split_image_paths(line: str) -> tuple[list[str], str]:
    """Leading image files in a typed line (pasted or dragged: quoted, ``\\ `` escapes, ``file://``) and the
    text after them.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp(); path = os.path.join(folder, "my cat.png"); open(path, "wb").close()
    >>> split_image_paths(f"'{path}' what is this?") == ([path], "what is this?")
    True
    >>> split_image_paths("what is this?")
    ([], 'what is this?')
    """
    paths: list[str] = []
    rest = line
    while True:
        match = _TOKEN.match(rest)
        if not match:
            break
        token = match.group(1)
        candidate = image_source(token if token[0] in "'\"" else token.replace("\\", ""))
        is_url = candidate.startswith(("http://", "https://")) and candidate.lower().endswith(IMAGE_SUFFIXES)
        if not (is_url or (candidate.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(candidate))):
            break
        paths.append(candidate)
        rest = rest[match.end() :]
    return paths, rest.strip()


def loading_text(model: str) -> str:
    """What the REPL shows while the in-process model loads: a download is mentioned only for a hub id.

    >>> loading_text("openbmb/MiniCPM-V-4.6")
    'loading openbmb/MiniCPM-V-4.6 (downloaded from the hub on first use)…'
    """
    if os.path.isdir(os.path.expanduser(model)):
        return f"loading {model}…"
    return f"loading {model} (downloaded from the hub on first use)…"


class Repl:
    """The interactive session. ``client`` and ``tools`` may be given (tests); else they come from ``args``."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        console: Console | None = None,
        client: Any = None,
        tools: list[Any] | None = None,
        read: Callable[[str], str] = input,
    ) -> None:
        self.args = args
        self.console = console or Console(highlight=False)
        self.client = client
        self.tools = tools
        self.read = read
        self.messages: list[Message] = []
        self.pending: list[ImagePart] = []
        self.turn_usage = Usage()
        self.total_usage = Usage()
        self.view: TurnView | None = None
        self.agent: Any = None

    # setup -------------------------------------------------------------------------------------------
    def start(self) -> None:
        from ..agent import Agent

        if self.client is None:
            with self.console.status("[dim]starting…[/]"):
                self.client = make_client(self.args)
        load = getattr(self.client.backend, "load", None)
        if callable(load):  # the in-process model: load it now, not in the middle of the first answer
            with self.console.status(f"[dim]{escape(loading_text(str(self.client.model)))}[/]"):
                load()
        if self.tools is None:
            self.tools = build_tools(self.args)
        approve = self.args.approve
        approval: Any = approval_prompt(self.console, lambda: self.view) if approve == "ask" else approve
        self.agent = Agent(self.client, tools=self.tools, approval=approval, parallel_tool_calls=not gui(self.args))
        where = redact_url(self.client.base_url) if self.client.base_url else "in-process"
        tools = ", ".join(t.name for t in self.tools) or "none"
        model = self.client.model or getattr(self.client.backend, "model", None)
        banner = f" · {f'{model} ({where})' if model else where} · tools: {tools}"
        self.console.print(Text.assemble(("agentcpm", "bold"), banner))
        self.console.print("[dim]/help lists the commands · Ctrl-C stops an answer · Ctrl-D leaves[/]")

    def run(self) -> int:
        """Read, answer, repeat until /exit or Ctrl-D."""
        history = self._setup_readline()
        try:
            self.start()
            while True:
                try:
                    line = self.read(self._prompt()).strip()
                    if line and self.handle(line) is False:
                        return 0
                except EOFError:
                    self.console.print()
                    return 0
                except KeyboardInterrupt:  # at the prompt, or between two answers: the session goes on
                    self.console.print("\n[dim](Ctrl-D or /exit leaves)[/]")
        finally:
            if history is not None:
                history()
            if self.client is not None:
                self.client.close()

    def _prompt(self) -> str:
        marker = f"[{len(self.pending)} image{'s' if len(self.pending) > 1 else ''}] " if self.pending else ""
        if self.console.is_terminal:
            # \001 \002 tell readline the colour codes take no room on the line
            return f"\001\x1b[1;36m\002{marker}you>\001\x1b[0m\002 "
        return f"{marker}you> "

    def _setup_readline(self) -> Callable[[], None] | None:
        if self.read is not input:
            return None
        try:
            import readline
        except ImportError:  # Windows without pyreadline: plain input still works
            return None
        path = state_dir() / "history"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                readline.read_history_file(path)
        except OSError:
            pass
        readline.set_history_length(2000)
        names = sorted(COMMANDS)

        def complete(text: str, state: int) -> str | None:
            found = [n for n in names if n.startswith(text)] if text.startswith("/") else []
            return found[state] if state < len(found) else None

        readline.set_completer(complete)
        readline.set_completer_delims(" \t\n")
        readline.parse_and_bind("tab: complete")

        def save() -> None:
            with contextlib.suppress(OSError):
                readline.write_history_file(path)

        return save

    # one line ----------------------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Act on one line; False means leave."""
        paths, text = split_image_paths(line)
        if not paths and line.startswith("/"):
            name, _, argument = line.partition(" ")
            return self.command(name, argument.strip())
        try:
            if paths:
                self.pending += load_images(paths)
                if not text:
                    names = ", ".join(os.path.basename(p) for p in paths)
                    self.say(f"attached {names}; now ask about it")
                    return True
        except Exception as exc:
            self._error(exc)
            return True
        self.ask(text)
        return True

    def ask(self, text: str) -> None:
        """Run one agent turn on ``text`` with the pending images, showing it as it happens."""
        from ..errors import AgentCancelled

        images, self.pending = self.pending, []
        self.view = view = TurnView(self.console, show_reasoning=True)
        try:
            result = play(view, self.agent.stream(text, images=images, history=self.messages))
        except (KeyboardInterrupt, AgentCancelled):
            # The turn is dropped whole: a half answer or half-run tool calls would confuse the next one.
            self.console.print("[yellow]interrupted[/] [dim](this question is left out of the conversation)[/]")
            return
        except Exception as exc:
            self._error(exc)
            return
        finally:
            self.view = None
        if result is not None:
            self.messages = list(result.messages)
            self.turn_usage = view.usage
            self.total_usage = self.total_usage + view.usage

    def say(self, text: str, style: str = "dim") -> None:
        """One line of plain text (no markup: paths and model text are shown as they are)."""
        self.console.print(Text(text, style=style), soft_wrap=True)

    def _error(self, exc: BaseException) -> None:
        if getattr(self.args, "verbose", False):
            self.console.print_exception()
        self.say(friendly_error(exc), style="red")

    # slash commands ----------------------------------------------------------------------------------
    def command(self, name: str, argument: str) -> bool:
        handler = getattr(self, "cmd_" + name.lstrip("/"), None) if name in COMMANDS else None
        if handler is None:
            self.say(f"unknown command {name}: /help lists the commands", style="red")
            return True
        try:
            return handler(argument) is not False
        except Exception as exc:
            self._error(exc)
            return True

    def cmd_help(self, _: str) -> None:
        table = Table(show_header=False, box=None, padding=(0, 2))
        for name, (usage, what) in COMMANDS.items():
            table.add_row(f"[bold]{name}[/] {usage}", what)
        self.console.print(table)
        self.console.print("[dim]Pasting or dragging an image file's path attaches it too.[/]")

    def cmd_exit(self, _: str) -> bool:
        return False

    def cmd_image(self, argument: str) -> None:
        if not argument:
            self.say("usage: /image PATH|URL", style="red")
            return
        sources = [image_source(t) for t in shlex.split(argument)] if argument[0] in "'\"" else [argument]
        self.pending += load_images(sources)
        self.say(f"attached {', '.join(sources)}; now ask about it")

    def cmd_screen(self, argument: str) -> None:
        monitor = int(argument) if argument else 1
        with self.console.status("[dim]capturing…[/]"):
            shot = screenshot(self.args, monitor)
        self.pending.append(shot)
        width, height = shot.open().size
        self.say(f"attached a screenshot of monitor {monitor} ({width}x{height}); now ask about it")

    def cmd_tools(self, _: str) -> None:
        if not self.tools:
            self.say("no tools (the screen tools need a display)")
            return
        table = Table(show_header=False, box=None, padding=(0, 2))
        for tool in self.tools:
            note = " [yellow](asks first)[/]" if getattr(tool, "requires_approval", False) else ""
            table.add_row(f"[bold]{tool.name}[/]", escape((tool.description or "").strip().split("\n")[0]) + note)
        self.console.print(table)

    def cmd_think(self, _: str) -> None:
        thinking = not self.client.defaults.thinking
        self.client.defaults = self.client.defaults.merged(thinking=thinking)
        self.say(f"reasoning {'on' if thinking else 'off'}")

    def cmd_reset(self, _: str) -> None:
        self.messages, self.pending = [], []
        self.turn_usage, self.total_usage = Usage(), Usage()
        self.say("new conversation")

    def cmd_usage(self, _: str) -> None:
        self.say(format_usage(self.turn_usage, "last turn"), style="")
        self.say(format_usage(self.total_usage, "session"), style="")

    def cmd_save(self, argument: str) -> None:
        from ..transcript import save_messages

        if not argument:
            self.say("usage: /save FILE", style="red")
            return
        path = Path(image_source(argument))
        save_messages(path, self.messages)
        self.say(f"saved {len(self.messages)} messages to {path}")

    def cmd_load(self, argument: str) -> None:
        from ..transcript import load_messages

        if not argument:
            self.say("usage: /load FILE", style="red")
            return
        path = Path(image_source(argument))
        self.messages = list(load_messages(path))
        self.say(f"loaded {len(self.messages)} messages from {path}")
        for message in self.messages[-2:]:
            if message.role in ("user", "assistant") and message.text:
                self.console.print(Text.assemble((f"{message.role}: ", "bold"), preview(message.text)))
