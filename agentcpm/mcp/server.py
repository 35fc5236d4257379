"""MCPServer: one MCP tool server (stdio or streamable HTTP) whose tools become agentcpm :class:`Tool` objects.

Its settings, the makers (:meth:`MCPServer.stdio`, :meth:`MCPServer.http`), starting, the tool list and
calls are here; the background loop that holds the session, requests on it and closing are in
:mod:`.connection`, names and clashes in :mod:`.naming`, MCP results as agentcpm content in :mod:`.results`.
Closing the server stops the session, which stops (and reaps) the subprocess of a stdio server.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Union

from ..tools import Tool
from ..types import Part, ToolCall
from .connection import _Connection
from .errors import MCPApprovalDenied, MCPConfigError
from .naming import PREFIX_SEPARATOR, _name_from_command, _name_from_url, _sanitize
from .results import _input_schema, _tool_content

__all__ = ["Approval", "MCPServer"]

#: ``"allow"``: run without asking; ``"ask"``: the tools are marked ``requires_approval`` (the agent's
#: ``approval`` policy decides, by default a y/N prompt); a callable ``approve(call) -> bool`` (may be async)
#: is asked before each call and a refusal raises :class:`MCPApprovalDenied`.
Approval = Union[Literal["allow", "ask"], Callable[[ToolCall], Any]]  # noqa: UP007 - a runtime alias on 3.10

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 30.0


def _check_options(
    transport: str,
    name: str,
    command: str | None,
    url: str | None,
    approval: Any,
    timeout: float | None,
    connect_timeout: float,
) -> None:
    if transport == "stdio" and not command:
        raise MCPConfigError(f"MCP server {name!r}: a stdio server needs a command", name)
    if transport == "http" and not (url and re.match(r"https?://", url)):
        raise MCPConfigError(f"MCP server {name!r}: an HTTP server needs an http(s):// URL, got {url!r}", name)
    if approval not in ("allow", "ask") and not callable(approval):
        raise MCPConfigError(
            f'MCP server {name!r}: approval must be "allow", "ask" or a callable, got {approval!r}', name
        )
    if timeout is not None and timeout <= 0:
        raise MCPConfigError(f"MCP server {name!r}: timeout must be positive seconds (or None)", name)
    if connect_timeout <= 0:
        raise MCPConfigError(f"MCP server {name!r}: connect_timeout must be positive seconds", name)


class MCPServer(_Connection):
    """An MCP tool server whose tools an :class:`~agentcpm.Agent` can call.

    Make one with :meth:`stdio` (a command the SDK starts and stops) or :meth:`http` (a streamable HTTP URL),
    or read many from a config file with :func:`load_mcp_config`. Use it as a context manager (sync or
    async), or call :meth:`start` / :meth:`close`; :meth:`tools` connects on first use.

    >>> with MCPServer.stdio("python", ["server.py"], name="files") as files:   # doctest: +SKIP
    ...     agent = Agent(client, tools=[*files.tools(), get_weather])
    ...     agent.run("List the files in /tmp")

    Options (both transports): ``name`` (in errors and in prefixes; default from the command or host),
    ``approval`` (``"allow"``, ``"ask"`` or a callable; default ``"ask"``: MCP tools are code agentcpm has
    not seen, a stdio server runs with your rights on this machine and an HTTP server acts with the
    credentials in its headers), ``include`` / ``exclude`` (MCP tool names to keep / drop), ``prefix``
    (``True``: name every tool ``server__tool``; a string: that prefix instead of the server name; default
    ``False``: only names that clash with another server's get the prefix, see :func:`mcp_tools`),
    ``timeout`` (seconds per tool call, default 60), ``connect_timeout`` (seconds to start and list tools).
    """

    def __init__(
        self,
        *,
        transport: Literal["stdio", "http"],
        name: str,
        command: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        approval: Approval = "ask",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prefix: bool | str = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        _check_options(transport, name, command, url, approval, timeout, connect_timeout)
        self.name = _sanitize(name, "server")
        self.transport = transport
        self.command = command
        self.args = [str(a) for a in args]
        self.env = dict(env) if env else None
        self.cwd = str(cwd) if cwd is not None else None
        self.url = url
        self.headers = dict(headers or {})
        self.approval: Approval = approval
        self.include = set(include) if include is not None else None
        self.exclude = set(exclude or ())
        self.prefix = prefix
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._init_connection()
        self._cache: list[Tool] = []
        self._mcp_tools: list[Any] = []

    # ------------------------------------------------------------------------------------------ makers
    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server the SDK starts as ``command args`` (stdin/stdout), with ``env`` added to a minimal
        environment (the SDK passes only PATH, HOME and the like, not your whole environment)."""
        if name is None:
            name = _name_from_command(command, args)
        return cls(transport="stdio", name=name, command=command, args=args, env=env, cwd=cwd, **options)

    @classmethod
    def http(
        cls, url: str, *, headers: dict[str, str] | None = None, name: str | None = None, **options: Any
    ) -> MCPServer:
        """A streamable HTTP server at ``url`` (e.g. ``http://127.0.0.1:8000/mcp``); ``headers`` go with every
        request (``{"Authorization": "Bearer ..."}``)."""
        if name is None:
            name = _name_from_url(url)
        return cls(transport="http", name=name, url=url, headers=headers, **options)

    def __repr__(self) -> str:
        where = f"{self.command} {' '.join(self.args)}".strip() if self.transport == "stdio" else self.url
        return f"MCPServer({self.name!r}, {self.transport}: {where})"

    # ------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> MCPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MCPServer:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the server (or connect to it) and list its tools; raises :class:`MCPConnectionError` or
        :class:`MCPTimeoutError` naming the server when it cannot. Does nothing when already started."""
        future = self._begin()
        if future is not None:
            try:
                self._wait_sync(future, None)
                self._wait_sync(self._submit(self._refresh()), None)
            except BaseException:
                self.close()
                raise

    async def astart(self) -> None:
        """:meth:`start` for async code (any event loop)."""
        future = self._begin()
        if future is not None:
            try:
                await asyncio.wrap_future(future)
                await asyncio.wrap_future(self._submit(self._refresh()))
            except BaseException:
                await self.aclose()
                raise

    # ------------------------------------------------------------------------------------------ tools
    def tools(self) -> list[Tool]:
        """The server's tools as agentcpm :class:`Tool` objects (include/exclude applied, names prefixed if
        ``prefix``). Starts the server on first use. The list is cached and listed again after the server
        sends ``tools/list_changed``."""
        if self._loop is None:
            self.start()
        elif self._stale:
            self._wait_sync(self._submit(self._refresh()), None)
        return list(self._cache)

    async def atools(self) -> list[Tool]:
        """:meth:`tools` for async code."""
        if self._loop is None:
            await self.astart()
        elif self._stale:
            await asyncio.wrap_future(self._submit(self._refresh()))
        return list(self._cache)

    async def _refresh(self) -> None:
        if not self._stale and self._cache:
            return
        self._stale = False  # before listing: a change announced while we list marks it stale again
        listed: list[Any] = []
        cursor: str | None = None
        while True:
            page = await self._request("tools/list", functools.partial(_list_page, cursor=cursor), self.connect_timeout)
            listed.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                break
        kept = [t for t in listed if (self.include is None or t.name in self.include) and t.name not in self.exclude]
        self._mcp_tools = kept
        self._cache = [self._make_tool(t) for t in kept]

    def _tool_name(self, mcp_name: str) -> str:
        if self.prefix is False:
            return _sanitize(mcp_name)
        prefix = self.name if self.prefix is True else _sanitize(str(self.prefix), self.name)
        return _sanitize(f"{prefix}{PREFIX_SEPARATOR}{mcp_name}")

    def _make_tool(self, spec: Any) -> Tool:
        mcp_name: str = spec.name
        schema = _input_schema(spec.inputSchema)
        server = self
        approve = self.approval if callable(self.approval) else None

        async def call_mcp_tool(**arguments: Any) -> Any:
            from ..agent.approval import granted  # set while an agent runs a call it has approved

            if approve is not None and not granted.get():
                await _check_approval(approve, server, tool.name, arguments)
            return await server.acall(mcp_name, arguments)

        tool = Tool(
            call_mcp_tool,
            name=self._tool_name(mcp_name),
            description=(spec.description or getattr(spec, "title", None) or "").strip(),
            parameters=schema,
            requires_approval=self.approval == "ask",
        )
        tool.approval = self.approval  # type: ignore[attr-defined]  # asked by the agent before its own
        tool.mcp_server = self.name  # type: ignore[attr-defined]
        tool.mcp_name = mcp_name  # type: ignore[attr-defined]
        return tool

    def rename(self, tool: Tool, name: str) -> Tool:
        """A copy of one of this server's tools under another name (what :func:`mcp_tools` does on a clash)."""
        renamed = copy.copy(tool)
        renamed.name = _sanitize(name)
        return renamed

    # ------------------------------------------------------------------------------------------ calling
    def call(self, name: str, arguments: dict[str, Any] | None = None) -> str | list[Part]:
        """Call the MCP tool ``name`` (its name on the server) and return its content: a string when it is
        all text, else a list of :class:`TextPart` / :class:`ImagePart`. Raises :class:`MCPToolError` for an
        ``isError`` result, :class:`MCPTimeoutError` after ``timeout``, :class:`MCPConnectionError` when the
        server is gone. No approval and no validation here: the :class:`Tool` objects do those."""
        if self._loop is None:
            self.start()
        return self._wait_sync(self._submit(self._call(name, dict(arguments or {}))), None)

    async def acall(self, name: str, arguments: dict[str, Any] | None = None) -> str | list[Part]:
        """:meth:`call` for async code (any event loop)."""
        if self._loop is None:
            await self.astart()
        return await asyncio.wrap_future(self._submit(self._call(name, dict(arguments or {}))))

    async def _call(self, name: str, arguments: dict[str, Any]) -> str | list[Part]:
        # The SDK's own read timeout stays off: ours names the server and the tool.
        result = await self._request(
            f"a call to {name}",
            lambda s: s.call_tool(name, arguments, read_timeout_seconds=timedelta(days=1)),
            self.timeout,
        )
        return _tool_content(result, self.name, name)


def _list_page(session: Any, cursor: str | None) -> Any:
    return session.list_tools(cursor=cursor) if cursor else session.list_tools()


async def _check_approval(approve: Callable[[ToolCall], Any], server: MCPServer, name: str, arguments: dict) -> None:
    call = ToolCall(name=name, arguments=dict(arguments))
    try:
        outcome = approve(call)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except Exception as exc:
        raise MCPApprovalDenied(
            f"{name} was not run: the approval callback of MCP server {server.name!r} failed "
            f"({type(exc).__name__}: {exc})",
            server.name,
        ) from exc
    if not outcome:
        raise MCPApprovalDenied(f"The user did not allow {name} to run, so it was not run.", server.name)
