"""MCPServer: one MCP tool server (stdio or streamable HTTP) whose tools become agentcpm :class:`Tool` objects.

Each server's session lives on a dedicated background thread with its own event loop (the SDK's anyio
streams are bound to the loop that opened them). Calls from any thread or event loop are handed to that
loop with ``asyncio.run_coroutine_threadsafe`` and awaited with ``asyncio.wrap_future``, so the same
server works from sync code, from ``asyncio.run`` in another thread, and from the agent's own loop.
Closing the server stops the session, which stops (and reaps) the subprocess of a stdio server.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import concurrent.futures
import contextlib
import copy
import functools
import inspect
import json
import os
import re
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import MissingDependencyError
from ..tools import Tool, _clean_schema
from ..types import ImagePart, Part, TextPart, ToolCall
from .errors import (
    MCPApprovalDenied,
    MCPConfigError,
    MCPConnectionError,
    MCPError,
    MCPTimeoutError,
    MCPToolError,
)

__all__ = ["Approval", "MCPServer", "amcp_tools", "load_mcp_config", "mcp_tools"]

#: ``"allow"``: run without asking; ``"ask"``: the tools are marked ``requires_approval`` (the agent's
#: ``approval`` policy decides, by default a y/N prompt); a callable ``approve(call) -> bool`` (may be async)
#: is asked before each call and a refusal raises :class:`MCPApprovalDenied`.
Approval = Union[Literal["allow", "ask"], Callable[[ToolCall], Any]]  # noqa: UP007 - a runtime alias on 3.10

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0  # the SDK itself waits ~2 s for a stdio server to exit, then terminates, then kills
PREFIX_SEPARATOR = "__"
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_STDERR_TAIL = 800

_live: weakref.WeakSet[MCPServer] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    """A server nobody closed (no ``with``, an exception, Ctrl-C) is still closed, so no subprocess outlives us."""
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_close_all_at_exit)


def _import_sdk() -> Any:
    try:
        import mcp
    except ImportError as exc:
        raise MissingDependencyError("mcp", extra="mcp", purpose="MCP tool servers") from exc
    return mcp


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


def _is_transport_failure(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, EOFError)):
        return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - the mcp SDK depends on httpx
        return False
    return isinstance(exc, (httpx.TransportError, httpx.HTTPStatusError))


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, which anyio task groups raise."""
    while getattr(exc, "exceptions", None) and isinstance(exc.exceptions[0], BaseException):  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


class MCPServer:
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
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._holder: concurrent.futures.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._session: Any = None
        self._gone: str | None = None  # why the connection ended, once it has
        self._gone_event: asyncio.Event | None = None
        self._stale = True
        self._cache: list[Tool] = []
        self._mcp_tools: list[Any] = []
        self._stderr: Any = None

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
            match = re.match(r"https?://([^/:]+)", url or "")
            host = match.group(1).replace(".", "_") if match else "server"
            name = host if re.match(r"[A-Za-z_]", host) else f"mcp_{host}"
        return cls(transport="http", name=name, url=url, headers=headers, **options)

    def __repr__(self) -> str:
        where = f"{self.command} {' '.join(self.args)}".strip() if self.transport == "stdio" else self.url
        return f"MCPServer({self.name!r}, {self.transport}: {where})"

    @property
    def connected(self) -> bool:
        """True while a session is open and the server has not gone away."""
        return self._session is not None and self._gone is None

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

    def close(self) -> None:
        """Close the session; a stdio server's process is stopped and reaped. Safe to call twice."""
        with self._lock:
            loop, thread, holder, stop = self._loop, self._thread, self._holder, self._stop
            self._loop = self._thread = self._holder = self._stop = None
        _live.discard(self)
        if loop is None or thread is None:
            return
        if stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if holder is not None:
            with contextlib.suppress(BaseException):
                holder.result(CLOSE_TIMEOUT)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._session = None
        self._stale = True
        if self._stderr is not None:
            with contextlib.suppress(OSError):
                self._stderr.close()
            self._stderr = None

    async def aclose(self) -> None:
        """:meth:`close` for async code (runs in a worker thread, so the calling loop is not blocked)."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def _begin(self) -> concurrent.futures.Future[None] | None:
        """Start the background loop and the task that holds the session; None when already running."""
        with self._lock:
            if self._loop is not None:
                return None
            _import_sdk()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"agentcpm-mcp-{self.name}", daemon=True)
            thread.start()
            self._loop, self._thread, self._gone, self._stale = loop, thread, None, True
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._stop = asyncio.Event()
            self._gone_event = asyncio.Event()
            self._holder = asyncio.run_coroutine_threadsafe(self._hold(ready, self._stop), loop)
            _live.add(self)
        return ready

    def _submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        loop = self._loop
        if loop is None:
            coro.close()
            raise MCPConnectionError(f"MCP server {self.name!r} is closed: start it again (or use `with`)", self.name)
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _wait_sync(self, future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    # ------------------------------------------------------------------------------------------ session
    def _transport(self) -> Any:
        if self.transport == "stdio":
            from mcp import StdioServerParameters
            from mcp.client.stdio import stdio_client

            assert self.command is not None
            params = StdioServerParameters(command=self.command, args=self.args, env=self.env, cwd=self.cwd)
            # The server's stderr goes to a file: its log lines stay out of the terminal, and its last
            # lines go into the error when it fails.
            self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            return stdio_client(params, errlog=self._stderr)
        from mcp.client import streamable_http as http

        if hasattr(http, "streamable_http_client"):  # mcp >= 1.24
            import httpx
            from mcp.shared._httpx_utils import create_mcp_http_client

            client = create_mcp_http_client(headers=self.headers, timeout=httpx.Timeout(30.0, read=300.0))
            return _owning(client, http.streamable_http_client(str(self.url), http_client=client))
        return http.streamablehttp_client(str(self.url), headers=self.headers)

    async def _hold(self, ready: concurrent.futures.Future[None], stop: asyncio.Event) -> None:
        """The session's whole life, in one task (anyio scopes must open and close in the same task)."""
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport())
                session = ClientSession(streams[0], streams[1], message_handler=self._on_message)
                session = await stack.enter_async_context(session)
                await asyncio.wait_for(session.initialize(), self.connect_timeout)
                self._session = session
                ready.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(self._startup_error(_first_leaf(exc)))
            else:
                self._mark_gone(f"the connection failed ({type(_first_leaf(exc)).__name__}: {_first_leaf(exc)})")
            if not isinstance(exc, Exception):
                raise
        finally:
            self._session = None

    async def _on_message(self, message: Any) -> None:
        from mcp import types

        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            self._stale = True
        elif isinstance(message, Exception) and self._session is not None and _is_transport_failure(message):
            # Only a broken transport ends the session: the SDK also reports harmless things here, such as
            # the late answer to a call we abandoned after its timeout ("unknown request ID").
            self._mark_gone(f"the connection failed ({type(message).__name__}: {message})")

    def _mark_gone(self, reason: str) -> None:
        """Record why the connection ended (the first reason wins) and fail the calls waiting on it."""
        if self._gone is None:
            self._gone = reason
        if self._gone_event is not None:
            self._gone_event.set()

    def _where(self) -> str:
        if self.transport == "stdio":
            return f"command `{' '.join([self.command or '', *self.args])}`"
        return f"URL {self.url}"

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read()[-_STDERR_TAIL:].strip()
        except (OSError, ValueError):
            return ""
        return f"\nIts stderr ended with:\n{text}" if text else ""

    def _startup_error(self, exc: BaseException) -> MCPError:
        if isinstance(exc, MCPError):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return MCPTimeoutError(
                f"MCP server {self.name!r} ({self._where()}) did not finish starting within "
                f"{self.connect_timeout:g} s; check that it is an MCP server and speaks {self.transport}, "
                "or raise connect_timeout." + self._stderr_tail(),
                self.name,
            )
        if isinstance(exc, FileNotFoundError) and self.transport == "stdio":
            return MCPConnectionError(
                f"MCP server {self.name!r}: cannot start {self._where()}: {self.command!r} was not found; "
                "install it or give its full path.",
                self.name,
            )
        if self.transport == "stdio":
            return MCPConnectionError(
                f"MCP server {self.name!r} ({self._where()}) stopped before it was ready ({type(exc).__name__}: "
                f"{exc}); run the command by hand to see why." + self._stderr_tail(),
                self.name,
            )
        return MCPConnectionError(
            f"MCP server {self.name!r} at {self.url} could not be reached ({type(exc).__name__}: {exc}); check "
            "that the server is running, the URL (streamable HTTP endpoints usually end in /mcp) and the headers.",
            self.name,
        )

    def _gone_error(self, detail: str) -> MCPConnectionError:
        self._mark_gone(detail)
        advice = "it may have crashed; close and start it again" if self.transport == "stdio" else "check the server"
        return MCPConnectionError(
            f"MCP server {self.name!r} is no longer connected ({self._gone}); {advice}." + self._stderr_tail(),
            self.name,
        )

    async def _request(self, what: str, coro_fn: Callable[[Any], Any], timeout: float | None) -> Any:
        """Run one request on the session (on the background loop), turning failures into MCP errors."""
        from mcp.shared.exceptions import McpError
        from mcp.types import CONNECTION_CLOSED

        session = self._session
        if session is None or self._gone is not None:
            raise self._gone_error("the session ended")
        gone = self._gone_event
        task = asyncio.ensure_future(coro_fn(session))
        watcher = asyncio.ensure_future(gone.wait()) if gone is not None else None
        try:
            waiting = {task} if watcher is None else {task, watcher}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled() and self._gone is not None:
            raise self._gone_error("the connection failed")
        try:
            if task.cancelled():
                raise asyncio.TimeoutError
            return task.result()
        except (asyncio.TimeoutError, TimeoutError):
            raise MCPTimeoutError(
                f"MCP server {self.name!r} did not answer {what} within {timeout:g} s, so the call was abandoned; "
                "the tool may be stuck, or slow: raise the server's timeout= if it needs longer.",
                self.name,
            ) from None
        except McpError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                raise self._gone_error("the connection closed: the server exited or dropped it") from None
            raise MCPError(f"MCP server {self.name!r} refused {what}: {exc.error.message}", self.name) from None
        except (OSError, EOFError) as exc:
            raise self._gone_error(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            import anyio

            if isinstance(exc, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)):
                raise self._gone_error("the connection closed: the server exited or dropped it") from None
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
        parts = _result_parts(result, self.name)
        if result.isError:
            text = "\n".join(p.text for p in parts if isinstance(p, TextPart)).strip() or "the tool reported an error"
            raise MCPToolError(text, self.name, name)
        if all(isinstance(p, TextPart) for p in parts):
            return "\n".join(p.text for p in parts if isinstance(p, TextPart))
        return parts


def _list_page(session: Any, cursor: str | None) -> Any:
    return session.list_tools(cursor=cursor) if cursor else session.list_tools()


class _owning:
    """An async context manager that enters ``inner`` and closes ``client`` after it."""

    def __init__(self, client: Any, inner: Any) -> None:
        self.client, self.inner = client, inner

    async def __aenter__(self) -> Any:
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            await self.client.aclose()


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


def _input_schema(raw: Any) -> dict[str, Any]:
    """The tool's input schema as agentcpm shows it to the model: refs inlined, titles dropped (as for
    Python tools, via tools._clean_schema)."""
    schema = dict(raw) if isinstance(raw, dict) else {}
    schema.pop("$schema", None)
    defs = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}
    cleaned: dict[str, Any] = _clean_schema(schema, defs)
    if defs and '"$ref"' in json.dumps(cleaned):
        cleaned["$defs"] = {name: _clean_schema(d, defs, (name,)) for name, d in defs.items()}
    cleaned["type"] = "object"
    cleaned.setdefault("properties", {})
    return cleaned


def _decode(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def _result_parts(result: Any, server: str) -> list[Part]:
    """MCP content -> parts: text stays text, images become :class:`ImagePart`, embedded text resources
    become text, other blobs and links a line that says what they are. Structured content is added as
    JSON when no text block already carries it."""
    from mcp import types

    parts: list[Part] = []
    for block in result.content or []:
        if isinstance(block, types.TextContent):
            parts.append(TextPart(block.text))
        elif isinstance(block, types.ImageContent):
            data = _decode(block.data)
            parts.append(ImagePart(data) if data else TextPart(f"[an image from {server} that is not valid base64]"))
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(TextPart(resource.text))
            elif (resource.mimeType or "").startswith("image/") and (data := _decode(resource.blob)):
                parts.append(ImagePart(data))
            else:
                size = len(resource.blob) * 3 // 4
                parts.append(
                    TextPart(f"[binary resource {resource.uri} ({resource.mimeType or 'unknown type'}, ~{size} bytes)]")
                )
        elif isinstance(block, types.ResourceLink):
            parts.append(TextPart(f"[resource {block.uri}" + (f": {block.name}]" if block.name else "]")))
        elif isinstance(block, types.AudioContent):
            parts.append(TextPart(f"[audio ({block.mimeType}) omitted: this model reads text and images]"))
        else:
            parts.append(TextPart(f"[{getattr(block, 'type', 'unknown')} content omitted]"))
    structured = getattr(result, "structuredContent", None)
    if structured is not None and not any(isinstance(p, TextPart) for p in parts):
        parts.append(TextPart(json.dumps(structured, ensure_ascii=False)))
    return parts


# ---------------------------------------------------------------------------------------------- many servers


def mcp_tools(servers: Sequence[MCPServer], *, reserved: Sequence[str] = ()) -> list[Tool]:
    """The tools of all ``servers`` in one list, each name unique: a name two servers share (or one of the
    ``reserved`` names, e.g. your Python tools') becomes ``server__tool`` for every server that has it.

    >>> tools = mcp_tools([files, github], reserved=[t.name for t in python_tools])   # doctest: +SKIP
    >>> agent = Agent(client, tools=[*python_tools, *tools])                          # doctest: +SKIP
    """
    names = [s.name for s in servers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MCPConfigError(f"two MCP servers are named {', '.join(duplicates)}: give one of them name=...")
    listed = [(server, server.tools()) for server in servers]
    return _resolve(listed, reserved)


async def amcp_tools(servers: Sequence[MCPServer], *, reserved: Sequence[str] = ()) -> list[Tool]:
    """:func:`mcp_tools` for async code (the servers start concurrently)."""
    names = [s.name for s in servers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MCPConfigError(f"two MCP servers are named {', '.join(duplicates)}: give one of them name=...")
    lists = await asyncio.gather(*(server.atools() for server in servers))
    return _resolve(list(zip(servers, lists, strict=True)), reserved)


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


# ---------------------------------------------------------------------------------------------- config files


def load_mcp_config(path: str | Path, **options: Any) -> list[MCPServer]:
    """The servers of an ``{"mcpServers": {name: {...}}}`` file (the format Claude Desktop, Cursor and other
    clients use): ``command`` / ``args`` / ``env`` / ``cwd`` for a stdio server, ``url`` / ``headers`` for a
    streamable HTTP one. agentcpm also reads ``approval``, ``include``, ``exclude``, ``prefix``, ``timeout``
    and ``disabled`` from an entry; ``options`` are defaults for every server (an entry's own value wins).
    ``${VAR}`` in ``env``, ``headers`` and ``url`` values is replaced from the environment."""
    file = Path(path).expanduser()
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
    known = {"command", "args", "env", "cwd", "url", "headers", "type", "transport", "approval", "include"}
    known |= {"exclude", "prefix", "timeout", "connect_timeout", "disabled", "description"}
    servers: list[MCPServer] = []
    for name, entry in entries.items():
        where = f"MCP config {file}, server {name!r}"
        if not isinstance(entry, dict):
            raise MCPConfigError(f"{where}: expected an object with command or url", str(name))
        if entry.get("disabled"):
            continue
        unknown = sorted(set(entry) - known)
        if unknown:
            raise MCPConfigError(f"{where}: unknown keys {', '.join(unknown)}", str(name))
        settings = {**options}
        for key in ("approval", "include", "exclude", "prefix", "timeout", "connect_timeout"):
            if key in entry:
                settings[key] = entry[key]
        kind = str(entry.get("type") or entry.get("transport") or "").lower()
        if kind in ("sse",):
            raise MCPConfigError(f"{where}: the SSE transport is not supported; use the server's streamable HTTP URL")
        if entry.get("url") and kind not in ("", "http", "streamable-http", "streamable_http", "streamablehttp"):
            raise MCPConfigError(f"{where}: unknown type {kind!r} for a url server (use streamable HTTP)", str(name))
        if "command" in entry and "url" in entry:
            raise MCPConfigError(f"{where}: give either command (stdio) or url (HTTP), not both", str(name))
        if "command" in entry:
            args = entry.get("args") or []
            if not isinstance(entry["command"], str) or not isinstance(args, list):
                raise MCPConfigError(f"{where}: command must be a string and args a list of strings", str(name))
            env = {str(k): _expand(str(v)) for k, v in (entry.get("env") or {}).items()}
            servers.append(
                MCPServer.stdio(
                    entry["command"],
                    [str(a) for a in args],
                    name=str(name),
                    env=env or None,
                    cwd=entry.get("cwd"),
                    **settings,
                )
            )
        elif "url" in entry:
            headers = {str(k): _expand(str(v)) for k, v in (entry.get("headers") or {}).items()}
            servers.append(MCPServer.http(_expand(str(entry["url"])), headers=headers, name=str(name), **settings))
        else:
            raise MCPConfigError(
                f"{where}: needs command (a stdio server) or url (a streamable HTTP server)", str(name)
            )
    return servers


def _expand(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), value)
