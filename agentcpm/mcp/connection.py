"""The connection half of :class:`~agentcpm.mcp.MCPServer`: the background thread and event loop that hold
one MCP session, requests on it with failures turned into MCP errors that name the server, and closing (a
stdio server's subprocess is stopped and reaped, also at interpreter exit for a server nobody closed).

Each server's session lives on a dedicated background thread with its own event loop (the SDK's anyio
streams are bound to the loop that opened them). Calls from any thread or event loop are handed to that
loop with ``asyncio.run_coroutine_threadsafe`` and awaited with ``asyncio.wrap_future``, so the same
server works from sync code, from ``asyncio.run`` in another thread, and from the agent's own loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import tempfile
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import MissingDependencyError
from .errors import MCPConnectionError, MCPError, MCPTimeoutError

CLOSE_TIMEOUT = 10.0  # the SDK itself waits ~2 s for a stdio server to exit, then terminates, then kills
_STDERR_TAIL = 800

_live: weakref.WeakSet[_Connection] = weakref.WeakSet()


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


class _Connection:
    """The background loop and the session of one MCP server; :class:`~agentcpm.mcp.MCPServer` is one.

    The server's settings (``name``, ``transport``, ``command``, ...) are set by ``MCPServer.__init__``,
    which calls :meth:`_init_connection` for the state below."""

    name: str
    transport: str
    command: str | None
    args: list[str]
    env: dict[str, str] | None
    cwd: str | None
    url: str | None
    headers: dict[str, str]
    connect_timeout: float

    def _init_connection(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._holder: concurrent.futures.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._session: Any = None
        self._gone: str | None = None  # why the connection ended, once it has
        self._gone_event: asyncio.Event | None = None
        self._stale = True
        self._stderr: Any = None

    @property
    def connected(self) -> bool:
        """True while a session is open and the server has not gone away."""
        return self._session is not None and self._gone is None

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
