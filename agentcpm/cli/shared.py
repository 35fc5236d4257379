"""What the commands share: the client from the options, images, tool sets, MCP servers, the approval prompt."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import Client
    from ..mcp import MCPServer
    from ..types import ImagePart, ToolCall


def check_model(model: str | None, base_url: str | None = None) -> None:
    """Fail at once, before torch is imported, when the in-process model is a folder that is not there."""
    if base_url or os.environ.get("AGENTCPM_BASE_URL"):
        return
    model = model or os.environ.get("AGENTCPM_MODEL")
    if model:
        from ..backends.local import check_model_path

        check_model_path(model)


def make_client(args: argparse.Namespace) -> Client:
    """A Client configured from the common options (and the environment)."""
    return client_from(args, args.base_url, args.api_key)


def client_from(args: argparse.Namespace, base_url: str | None, api_key: str | None) -> Client:
    """A Client for ``base_url`` (None: the model in-process) with the common model options of ``args``."""
    from ..client import Client

    check_model(args.model, base_url)
    return Client(
        base_url=base_url,
        model=args.model,
        api_key=api_key,
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
