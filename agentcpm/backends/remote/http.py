"""The wire: one pooled async client per event loop, chat POSTs, JSON bodies and SSE lines under a deadline.

httpx async connections belong to the loop that opened them, so each event loop gets its own client, closed
when that loop shuts down its async generators (as ``asyncio.run`` does) or by ``close``/``aclose``. Sync
callers come through :mod:`agentcpm._sync`'s per-thread loop, so their connections stay warm between calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx

from ...errors import RequestTimeout, ResponseError
from .errors import CONNECT_TIMEOUT, SILENCE_TIMEOUT, StatusError

T = TypeVar("T")


class LoopClient:
    """One event loop's async client. It is closed when the loop shuts down its async generators (as
    ``asyncio.run`` does before closing the loop), or by :meth:`LoopClients.close`/``aclose``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.lock = asyncio.Lock()
        self.closed = False
        self.thread = threading.current_thread()
        # An async generator suspended for the client's life: the running loop registers it (firstiter
        # hook) and closes it at shutdown, which runs its ``finally``: the client's close.
        self._watch = self._close_at_shutdown()
        _step(self._watch.__anext__())

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not self.closed:
                self.closed = True
                await self.client.aclose()

    async def aclose(self) -> None:
        """Close the client (on its own loop)."""
        if not self.closed:
            await self._watch.aclose()

    def abandon(self) -> None:
        """The loop can no longer run here (closed, or its thread is gone): drop the client (its sockets close
        with it) and end the generator without awaiting, so no finalizer later calls into that loop."""
        self.closed = True
        _step(self._watch.aclose())


def _step(awaitable: Any) -> None:
    """Run a coroutine step that does not wait for anything (to its first ``yield`` or its end)."""
    with contextlib.suppress(StopIteration):
        awaitable.send(None)


class LoopClients:
    """The async client of each event loop, made by ``make`` on first use in that loop."""

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
        self._clients: dict[asyncio.AbstractEventLoop, LoopClient] = {}
        self._lock = threading.Lock()
        self._closing: set[Any] = set()  # close tasks scheduled on running loops

    def get(self) -> LoopClient:
        """This loop's client (call it from a coroutine)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None:
            return entry
        with self._lock:
            for old in [old for old, e in self._clients.items() if _gone(old, e)]:
                self._clients.pop(old).abandon()
            entry = self._clients.get(loop)
            if entry is None:
                entry = self._clients[loop] = LoopClient(self._make())
        return entry

    def close(self) -> None:
        """Close every loop's client, whatever state its loop is in."""
        with self._lock:
            entries = list(self._clients.items())
            self._clients.clear()
        for loop, entry in entries:
            self._close_one(loop, entry)

    async def aclose(self) -> None:
        """Close every client; this loop's is closed before this returns."""
        with self._lock:
            entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.aclose()
        self.close()

    def _close_one(self, loop: asyncio.AbstractEventLoop, entry: LoopClient) -> None:
        if entry.closed:
            return
        if loop.is_closed():  # closed without shutdown_asyncgens: its sockets go with the client
            entry.abandon()
        elif not loop.is_running():
            loop.run_until_complete(entry.aclose())
        elif asyncio._get_running_loop() is loop:  # close() called from a coroutine of that loop
            task = loop.create_task(entry.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        else:
            asyncio.run_coroutine_threadsafe(entry.aclose(), loop)


def _gone(loop: asyncio.AbstractEventLoop, entry: LoopClient) -> bool:
    """A loop that will never run again: closed, or idle and its thread ended (a sync caller's thread loop)."""
    return loop.is_closed() or (not entry.thread.is_alive() and not loop.is_running())


def http_timeout(deadline: float | None) -> httpx.Timeout:
    """httpx's timeouts for one attempt: what is left of the deadline, else the defaults for a silent server."""
    if deadline is None:
        return httpx.Timeout(SILENCE_TIMEOUT, connect=CONNECT_TIMEOUT)
    left = max(deadline - time.monotonic(), 0.001)
    return httpx.Timeout(left, connect=min(left, CONNECT_TIMEOUT))


def new_client(base_url: str, api_key: str) -> httpx.AsyncClient:
    """A pooled client for one event loop (a plain httpx client: respx can stand in for servers in tests)."""
    # A query in base_url (Azure-style ``?api-version=...``) goes with every request, not only the first path.
    url = httpx.URL(base_url)
    return httpx.AsyncClient(
        base_url=url.copy_with(query=None),
        params=url.params,
        headers={"authorization": f"Bearer {api_key}", "accept": "application/json"},
        timeout=http_timeout(None),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


async def post(client: httpx.AsyncClient, body: dict[str, Any], deadline: float | None) -> httpx.Response:
    """POST a chat request; the streamed response comes back, its body not read yet. An HTTP error status
    raises :class:`StatusError` (its body read)."""
    content = json.dumps(body, ensure_ascii=False).encode()
    request = client.build_request(
        "POST", "chat/completions", content=content, headers=_JSON, timeout=http_timeout(deadline)
    )
    response = await client.send(request, stream=True)
    if response.status_code >= 400:
        try:
            await response.aread()
        finally:
            await response.aclose()
        raise StatusError(response)
    return response


_JSON = {"content-type": "application/json"}


async def get_models(client: httpx.AsyncClient, deadline: float | None) -> tuple[int, Any, dict[str, str]]:
    """``GET /models``: status, JSON body (None if not JSON) and lower-cased headers, whatever the status."""
    response = await client.get("models", timeout=http_timeout(deadline))
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        data = None
    return response.status_code, data, {k.lower(): v for k, v in response.headers.items()}


if sys.version_info >= (3, 11):

    async def within(awaitable: Awaitable[T], deadline: float | None, timed_out: Callable[[], Exception]) -> T:
        """``await awaitable``, stopped at ``deadline`` with ``timed_out()``."""
        if deadline is None:
            return await awaitable
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                return await awaitable
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            raise timed_out() from None

else:  # pragma: no cover - Python 3.10

    async def within(awaitable: Awaitable[T], deadline: float | None, timed_out: Callable[[], Exception]) -> T:
        if deadline is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            raise timed_out() from None


async def read_json(response: httpx.Response, url: str) -> Any:
    """The whole JSON body of ``response`` (then closed)."""
    try:
        data = await response.aread()
    finally:
        await response.aclose()
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = data[:200].decode("utf-8", "replace")
        raise ResponseError(
            f"the server at {url} answered with something that is not JSON "
            f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no content type')}): "
            f"{text!r}; is base_url the OpenAI-compatible endpoint (usually ending in /v1)?"
        ) from None


async def payloads(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data:`` payloads of an SSE stream (one JSON object per line, as every OpenAI server sends).
    Comments (``: ping``) are skipped, inside the caller's deadline: a server that only pings does not outlive it."""
    async for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


def decode(payload: str, url: str) -> Any:
    """One SSE payload as JSON."""
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        raise ResponseError(f"the server at {url} sent a stream chunk that is not JSON: {payload[:200]!r}") from None
