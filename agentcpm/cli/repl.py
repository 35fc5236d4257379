"""``agentcpm chat``: the terminal REPL. Each question runs the agent (with the screen tools when a display
is there) and its events stream through :class:`~agentcpm.cli.render.TurnView`.

Ctrl-C stops the answer being written and keeps the session; Ctrl-D or ``/exit`` leaves. Line editing
and history come from readline; the history persists in ``$XDG_STATE_HOME/agentcpm/history`` (each line
appended as it is typed, under a lock, so sessions running at once never overwrite each other's lines).
Each conversation is logged (:mod:`agentcpm.logs`) unless ``--no-log``; ``chat -c`` / ``--resume ID`` go on
with a logged one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._redact import redact_url
from ..types import ImagePart, Message, Usage
from .render import TurnView, format_usage, play, preview
from .shared import (
    approval_prompt,
    build_tools,
    gui,
    image_source,
    load_images,
    make_client,
    screenshot,
    server_source,
    started_mcp_servers,
)
from .wording import friendly_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")

COMMANDS = {
    "/image": ("PATH|URL", "attach an image to the next message (or paste / drag a file path)"),
    "/screen": ("[N]", "attach a screenshot of monitor N (default 1)"),
    "/tools": ("", "list the tools the model can use"),
    "/think": ("", "turn the model's reasoning on or off"),
    "/reset": ("", "start a new conversation"),
    "/save": ("FILE", "save the conversation"),
    "/history": ("[N]", "the conversations logged last (their ids)"),
    "/load": ("ID|FILE", "open a logged conversation, or load a saved one"),
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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` + ``.lock`` between processes (where fcntl exists)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
        self.servers: list[Any] = []  # the --mcp servers, started in start() and closed when run() ends
        self._closing = contextlib.ExitStack()
        self.log: Any = None  # the logged conversation (agentcpm.logs.Conversation), made at the first question

    # setup -------------------------------------------------------------------------------------------
    def start(self) -> None:
        from ..agent import Agent

        if self.client is None:
            with self.console.status("[dim]starting…[/]"):
                self.client = make_client(self.args)
        if self.tools is None:
            self.tools = build_tools(self.args)
        if getattr(self.args, "mcp", None):  # before the model loads: a server that cannot start fails at once
            with self.console.status("[dim]starting the MCP servers…[/]"):
                mcp = started_mcp_servers(self.args, [t.name for t in self.tools])
                self.servers = self._closing.enter_context(mcp)
        load = getattr(self.client.backend, "load", None)
        if callable(load):  # the in-process model: load it now, not in the middle of the first answer
            with self.console.status(f"[dim]{escape(loading_text(str(self.client.model)))}[/]"):
                load()
        approve = self.args.approve
        approval: Any = approval_prompt(self.console, lambda: self.view) if approve == "ask" else approve
        tools = [*self.tools, *self.servers]  # the agent lists the servers' tools at the start of each run
        self.agent = Agent(self.client, tools=tools, approval=approval, parallel_tool_calls=not gui(self.args))
        where = redact_url(self.client.base_url) if self.client.base_url else "in-process"
        names = ", ".join(t.name for t in self.tools) or "none"
        model = self.client.model or getattr(self.client.backend, "model", None)
        banner = f" · {f'{model} ({where})' if model else where} · tools: {names}"
        if self.servers:
            listed = ", ".join(f"{s.name} ({len(s.tools())})" for s in self.servers)
            banner += f" · MCP: {listed}"
        self.console.print(Text.assemble(("agentcpm", "bold"), banner))
        self.console.print("[dim]/help lists the commands · Ctrl-C stops an answer · Ctrl-D leaves[/]")
        from .logs import open_for_chat

        conversation = open_for_chat(self.args)
        if conversation is not None:
            self._open_logged(conversation)

    def run(self) -> int:
        """Read, answer, repeat until /exit or Ctrl-D."""
        remember = self._setup_readline()
        try:
            self.start()
            while True:
                try:
                    line = self.read(self._prompt()).strip()
                    if remember is not None:
                        remember()
                    if line and self.handle(line) is False:
                        return 0
                except EOFError:
                    self.console.print()
                    return 0
                except KeyboardInterrupt:  # at the prompt, or between two answers: the session goes on
                    self.console.print("\n[dim](Ctrl-D or /exit leaves)[/]")
        finally:
            try:
                self._closing.close()  # the MCP servers: stopped and reaped
            finally:
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
            path.touch()
            with _locked(path):
                readline.read_history_file(path)
        except OSError:
            pass
        readline.set_history_length(2000)  # append_history_file keeps the file to this many lines
        names = sorted(COMMANDS)

        def complete(text: str, state: int) -> str | None:
            found = [n for n in names if n.startswith(text)] if text.startswith("/") else []
            return found[state] if state < len(found) else None

        readline.set_completer(complete)
        readline.set_completer_delims(" \t\n")
        readline.parse_and_bind("tab: complete")

        written = readline.get_current_history_length()

        def remember() -> None:
            """Append the lines typed since the last call (never rewrite the file: another session may
            have added lines since this one read it)."""
            nonlocal written
            now = readline.get_current_history_length()
            if now > written:
                with contextlib.suppress(OSError), _locked(path):
                    readline.append_history_file(now - written, path)
            written = now

        return remember

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
        from .logs import answer_text, model_of

        images, self.pending = self.pending, []
        self.view = view = TurnView(self.console, show_reasoning=True)
        log = self._log_for_turn(text)
        transcript = log.path if log is not None else None
        try:
            result = play(view, self.agent.stream(text, images=images, history=self.messages, transcript=transcript))
        except (KeyboardInterrupt, AgentCancelled):
            # The turn is dropped whole: a half answer or half-run tool calls would confuse the next one.
            self.console.print("[yellow]interrupted[/] [dim](this question is left out of the conversation)[/]")
            self._drop_logged_turn("interrupted")
            return
        except Exception as exc:
            self._error(exc)
            self._drop_logged_turn("error")
            return
        finally:
            self.view = None
        if result is not None:
            self.messages = list(result.messages)
            self.turn_usage = view.usage
            self.total_usage = self.total_usage + view.usage
            if log is not None:
                usage = result.usage
                answer = answer_text(self.messages)
                log.turn_finished(answer, usage.prompt_tokens, usage.completion_tokens, model=model_of(self.client))

    # the conversation log ----------------------------------------------------------------------------
    def _log_for_turn(self, question: str) -> Any:
        """The logged conversation this turn goes to (made at the first question), its question recorded;
        None when logging is off. A log that fails never stops the chat."""
        try:
            if self.log is None:
                from .logs import start_log

                self.log = start_log(self.args, self.client, "chat")
                if self.log is not None and self.messages:  # loaded from a file, or a /reset in between
                    self.log.rewrite(self.messages)
            if self.log is not None:
                self.log.turn_started(question)
        except Exception as exc:  # a full disk, a locked database: say so once, go on without logging
            self.say(f"not logging this conversation: {friendly_error(exc)}", style="yellow")
            self.log, self.args.no_log = None, True
        return self.log

    def _drop_logged_turn(self, outcome: str) -> None:
        """The turn is left out of the conversation: in the log too (the file again holds what is kept)."""
        if self.log is not None:
            with contextlib.suppress(Exception):
                self.log.turn_finished(None, outcome=outcome)
                self.log.rewrite(self.messages)

    def _open_logged(self, conversation: Any) -> None:
        """Go on with a logged conversation: its messages become this session's, its file gets the next turns."""
        self.messages = conversation.resume()
        self.log = conversation if not getattr(self.args, "no_log", False) else None
        info = conversation.info
        turns = sum(1 for m in self.messages if m.role == "user")
        self.say(f"continuing conversation {info.id} ({turns} question{'s' * (turns != 1)}, {info.model or '?'})")
        self._show_last_exchange()

    def _show_last_exchange(self) -> None:
        for message in self.messages[-2:]:
            if message.role in ("user", "assistant") and message.text:
                self.console.print(Text.assemble((f"{message.role}: ", "bold"), preview(message.text)))

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
        if not self.tools and not self.servers:
            self.say("no tools (the screen tools need a display; --mcp adds an MCP server's)")
            return
        if self.tools:
            if self.servers:  # grouped: the built-in tools, then each server's
                self.console.print(Text("built-in", style="bold"))
            self.console.print(_tool_table(self.tools))
        for server, tools, error in self._mcp_listing():
            heading = Text.assemble((f"MCP server {server.name}", "bold"), (f"  {server_source(server)}", "dim"))
            self.console.print(heading, soft_wrap=True)
            if error is not None:
                self.say("  " + friendly_error(error).splitlines()[0], style="red")
            elif not tools:
                self.say("  no tools")
            else:
                self.console.print(_tool_table(tools))

    def _mcp_listing(self) -> list[tuple[Any, list[Any], BaseException | None]]:
        """Each server with its tools under the names the model sees (a clash gets the server's name), or the
        error that listing them gave (a server that went away)."""
        from ..mcp import MCPError, mcp_tools

        listed: list[tuple[Any, list[Any], BaseException | None]] = []
        working = []
        for server in self.servers:
            try:
                server.tools()  # listed again if the server said its list changed
            except MCPError as exc:
                listed.append((server, [], exc))
            else:
                working.append(server)
        tools = mcp_tools(working, reserved=[t.name for t in self.tools or []]) if working else []
        for server in working:
            listed.append((server, [t for t in tools if getattr(t, "mcp_server", None) == server.name], None))
        order = {id(s): i for i, s in enumerate(self.servers)}
        return sorted(listed, key=lambda entry: order[id(entry[0])])

    def cmd_think(self, _: str) -> None:
        thinking = not self.client.defaults.thinking
        self.client.defaults = self.client.defaults.merged(thinking=thinking)
        self.say(f"reasoning {'on' if thinking else 'off'}")

    def cmd_reset(self, _: str) -> None:
        self.messages, self.pending, self.log = [], [], None
        self.turn_usage, self.total_usage = Usage(), Usage()
        self.say("new conversation")

    def cmd_usage(self, _: str) -> None:
        for usage, label in ((self.turn_usage, "last turn"), (self.total_usage, "session")):
            line = format_usage(usage, label)
            if usage.cached_tokens is not None:  # the in-process model's prefix cache
                line += f", {usage.cached_tokens} prompt tokens from the cache"
            if usage.images_encoded is not None:
                line += f", {usage.images_encoded} image{'s' * (usage.images_encoded != 1)} encoded"
            self.say(line, style="")

    def cmd_save(self, argument: str) -> None:
        from ..transcript import save_messages

        if not argument:
            self.say("usage: /save FILE", style="red")
            return
        path = Path(image_source(argument))
        save_messages(path, self.messages)
        self.say(f"saved {len(self.messages)} messages to {path}")

    def cmd_history(self, argument: str) -> None:
        from .logs import listing, store

        infos = store().recent(int(argument) if argument.strip() else 20)
        if not infos:
            self.say("no conversations logged yet")
            return
        for line in reversed(listing(infos, self.console.width)):
            marker = " (this one)" if self.log is not None and line.startswith(self.log.id) else ""
            self.say(line + marker, style="")
        self.say("/load ID opens one")

    def cmd_load(self, argument: str) -> None:
        from ..transcript import load_messages

        if not argument:
            self.say("usage: /load ID|FILE", style="red")
            return
        path = Path(image_source(argument))
        if not path.exists() and re.fullmatch(r"[0-9a-f]{4,}", argument):  # a logged conversation's id
            from .logs import store

            self._open_logged(store().open(argument))
            return
        self.messages, self.log = list(load_messages(path)), None  # the next question starts a new log
        self.say(f"loaded {len(self.messages)} messages from {path}")
        self._show_last_exchange()


def _tool_table(tools: list[Any]) -> Table:
    """One line per tool, indented by the table's padding: its name and the first line of its description."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    for tool in tools:
        note = " [yellow](asks first)[/]" if getattr(tool, "requires_approval", False) else ""
        description = escape((tool.description or "").strip().split("\n")[0])
        table.add_row(f"[bold]{escape(tool.name)}[/]", description + note)
    return table
