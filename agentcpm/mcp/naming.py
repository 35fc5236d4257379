"""Tool and server names: what the model and agentcpm accept, names from a command or a URL, and one list of
many servers' tools with every name unique (:func:`mcp_tools`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..tools import Tool
from .errors import MCPConfigError

if TYPE_CHECKING:
    from .server import MCPServer

PREFIX_SEPARATOR = "__"


def _sanitize(name: str, fallback: str = "tool") -> str:
    """A name the model and agentcpm accept: letters, digits, ``_ . -``, not starting with a digit, at most 64."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip("._-") or fallback
    if not re.match(r"[A-Za-z_]", cleaned):
        cleaned = f"_{cleaned}"
    return cleaned[:64]


def _name_from_command(command: str, args: Sequence[str]) -> str:
    """``python files.py`` -> files, ``python -m pkg.server`` -> pkg.server, ``npx -y @org/server-x`` -> server-x."""
    items = list(args)
    for index, arg in enumerate(items):
        if arg == "-m" and index + 1 < len(items):
            return items[index + 1]
        if arg == "-c":
            break
        if not arg.startswith("-"):
            return Path(arg).stem or Path(command).stem
    return Path(command).stem or "server"


def _name_from_url(url: str) -> str:
    """``http://127.0.0.1:8000/mcp`` -> mcp_127_0_0_1, ``https://files.example.com/mcp`` -> files_example_com."""
    match = re.match(r"https?://([^/:]+)", url or "")
    host = match.group(1).replace(".", "_") if match else "server"
    return host if re.match(r"[A-Za-z_]", host) else f"mcp_{host}"


def mcp_tools(servers: Sequence[MCPServer], *, reserved: Sequence[str] = ()) -> list[Tool]:
    """The tools of all ``servers`` in one list, each name unique: a name two servers share (or one of the
    ``reserved`` names, e.g. your Python tools') becomes ``server__tool`` for every server that has it.

    >>> tools = mcp_tools([files, github], reserved=[t.name for t in python_tools])   # doctest: +SKIP
    >>> agent = Agent(client, tools=[*python_tools, *tools])                          # doctest: +SKIP
    """
    _check_unique(servers)
    listed = [(server, server.tools()) for server in servers]
    return _resolve(listed, reserved)


async def amcp_tools(servers: Sequence[MCPServer], *, reserved: Sequence[str] = ()) -> list[Tool]:
    """:func:`mcp_tools` for async code (the servers start concurrently)."""
    _check_unique(servers)
    lists = await asyncio.gather(*(server.atools() for server in servers))
    return _resolve(list(zip(servers, lists, strict=True)), reserved)


def _check_unique(servers: Sequence[MCPServer]) -> None:
    names = [s.name for s in servers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MCPConfigError(f"two MCP servers are named {', '.join(duplicates)}: give one of them name=...")


def _resolve(listed: list[tuple[MCPServer, list[Tool]]], reserved: Sequence[str]) -> list[Tool]:
    counts: dict[str, int] = {}
    for name in reserved:
        counts[name] = counts.get(name, 0) + 1
    for _, tools in listed:
        for tool in tools:
            counts[tool.name] = counts.get(tool.name, 0) + 1
    out: list[Tool] = []
    for server, tools in listed:
        for tool in tools:
            if counts[tool.name] > 1:
                tool = server.rename(tool, f"{server.name}{PREFIX_SEPARATOR}{tool.name}")
            out.append(tool)
    final = [t.name for t in out]
    still = sorted({n for n in final if final.count(n) > 1})
    if still:
        raise MCPConfigError(f"tool names still clash after prefixing with the server name: {', '.join(still)}")
    return out
