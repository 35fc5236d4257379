"""MCP config files: the ``{"mcpServers": {name: {...}}}`` format Claude Desktop, Cursor and other clients use,
read into :class:`~agentcpm.mcp.MCPServer` objects (:func:`load_mcp_config`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import MCPConfigError
from .server import MCPServer

_KNOWN = frozenset(
    {"command", "args", "env", "cwd", "url", "headers", "type", "transport", "approval", "include"}
    | {"exclude", "prefix", "timeout", "connect_timeout", "disabled", "description"}
)
_SETTINGS = ("approval", "include", "exclude", "prefix", "timeout", "connect_timeout")
_HTTP_TYPES = ("", "http", "streamable-http", "streamable_http", "streamablehttp")


def load_mcp_config(path: str | Path, **options: Any) -> list[MCPServer]:
    """The servers of an ``{"mcpServers": {name: {...}}}`` file (the format Claude Desktop, Cursor and other
    clients use): ``command`` / ``args`` / ``env`` / ``cwd`` for a stdio server, ``url`` / ``headers`` for a
    streamable HTTP one. agentcpm also reads ``approval``, ``include``, ``exclude``, ``prefix``, ``timeout``
    and ``disabled`` from an entry; ``options`` are defaults for every server (an entry's own value wins).
    ``${VAR}`` in ``env``, ``headers`` and ``url`` values is replaced from the environment."""
    file = Path(path).expanduser()
    servers: list[MCPServer] = []
    for name, entry in _read_entries(file).items():
        server = _server_from_entry(f"MCP config {file}, server {name!r}", str(name), entry, options)
        if server is not None:
            servers.append(server)
    return servers


def _read_entries(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MCPConfigError(f"MCP config {file} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MCPConfigError(f"MCP config {file} is not readable JSON: {exc}") from None
    entries = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise MCPConfigError(
            f'MCP config {file} has no "mcpServers" object: write {{"mcpServers": {{"name": {{...}}}}}}'
        )
    return entries


def _server_from_entry(where: str, name: str, entry: Any, options: dict[str, Any]) -> MCPServer | None:
    """One entry's server; None when it is ``disabled``."""
    if not isinstance(entry, dict):
        raise MCPConfigError(f"{where}: expected an object with command or url", name)
    if entry.get("disabled"):
        return None
    _check_entry(where, name, entry)
    settings = {**options, **{key: entry[key] for key in _SETTINGS if key in entry}}
    if "command" in entry:
        args = entry.get("args") or []
        if not isinstance(entry["command"], str) or not isinstance(args, list):
            raise MCPConfigError(f"{where}: command must be a string and args a list of strings", name)
        env = {str(k): _expand(str(v)) for k, v in (entry.get("env") or {}).items()}
        return MCPServer.stdio(
            entry["command"], [str(a) for a in args], name=name, env=env or None, cwd=entry.get("cwd"), **settings
        )
    if "url" in entry:
        headers = {str(k): _expand(str(v)) for k, v in (entry.get("headers") or {}).items()}
        return MCPServer.http(_expand(str(entry["url"])), headers=headers, name=name, **settings)
    raise MCPConfigError(f"{where}: needs command (a stdio server) or url (a streamable HTTP server)", name)


def _check_entry(where: str, name: str, entry: dict[str, Any]) -> None:
    unknown = sorted(set(entry) - _KNOWN)
    if unknown:
        raise MCPConfigError(f"{where}: unknown keys {', '.join(unknown)}", name)
    kind = str(entry.get("type") or entry.get("transport") or "").lower()
    if kind in ("sse",):
        raise MCPConfigError(f"{where}: the SSE transport is not supported; use the server's streamable HTTP URL")
    if entry.get("url") and kind not in _HTTP_TYPES:
        raise MCPConfigError(f"{where}: unknown type {kind!r} for a url server (use streamable HTTP)", name)
    if "command" in entry and "url" in entry:
        raise MCPConfigError(f"{where}: give either command (stdio) or url (HTTP), not both", name)


def _expand(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), value)
