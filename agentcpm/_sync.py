"""One way to drive agentcpm's async code from sync code, shared by :class:`Client` and :class:`Agent`.

Everything in agentcpm is written once, as coroutines and async generators. Sync callers run them on a private
event loop kept per thread (so connection pools stay warm from one call to the next), or, where an event loop
already runs in this thread (a notebook), on a worker thread with its own loop.

Ctrl-C: while a step runs, SIGINT raises ``KeyboardInterrupt`` right where the work is (a model generating on
this thread, a tool), or cancels the task while the loop waits (for a server, a tool thread); the coroutine
then ends as it chooses (the agent with ``AgentCancelled``, a client call with ``KeyboardInterrupt``). In the
caller's own loop body it raises there, as anywhere in the caller's code. In the glue between the two it is
remembered and delivered when the next step starts, so it never lands halfway through scheduling a task.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import signal
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_local = threading.local()


def is_interruption(exc: BaseException) -> bool:
    """A Ctrl-C or a cancellation, also wrapped in (nested) exception groups of nothing else: a Ctrl-C that
    lands inside a task of a task group (httpx connecting through anyio, an MCP session) reaches the code
    above that group as a ``BaseExceptionGroup``."""
    inner = getattr(exc, "exceptions", None)  # BaseExceptionGroup (the exceptiongroup backport on 3.10)
    if type(exc).__name__.endswith("ExceptionGroup") and isinstance(inner, tuple) and inner:
        return all(is_interruption(e) for e in inner)
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)


def loop_running() -> bool:
    """Whether an event loop runs in this thread (then sync code must not start another one here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
        if threading.current_thread() is threading.main_thread():
            atexit.register(_close_loop, loop)
    return loop


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """At exit: let what the loop holds finish as ``asyncio.run`` would (open async generators closed, so HTTP
    clients close their connections), instead of leaving pending tasks to be destroyed."""
    if loop.is_closed() or loop.is_running():
        return
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` to its end and return its result (see the module docstring)."""
    if loop_running():
        with ThreadPoolExecutor(1, thread_name_prefix="agentcpm-sync") as pool:
            return pool.submit(lambda: run(make)).result()
    return _drive(make(), _thread_loop())


def iterate(make: Callable[[], AsyncGenerator[T, None]]) -> Iterator[T]:
    """Iterate the async generator ``make()`` from sync code; closing this iterator closes it."""
    if loop_running():
        return _iterate_in_thread(make)
    return _iterate(make())


class _Interrupts:
    """Where a Ctrl-C may land while :func:`_iterate` drives a generator (see the module docstring).
    Only in the main thread, and only over Python's default handler; elsewhere nothing changes."""

    def __init__(self) -> None:
        self.inside = False  # the step's task is running
        self.started = False  # the current step's coroutine has begun
        self.waiting = False  # the caller has an item and its own code runs
        self.pending = False  # a Ctrl-C waits to be delivered
        self._previous: Any = None

    def __enter__(self) -> _Interrupts:
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if (self.inside and self.started) or self.waiting:
            raise KeyboardInterrupt
        self.pending = True


def _iterate(agen: AsyncGenerator[T, None]) -> Iterator[T]:
    loop = _thread_loop()
    interrupts = _Interrupts()
    try:
        with interrupts:
            while True:
                try:
                    interrupts.waiting = False
                    item = _drive(_next(agen, interrupts), loop, interrupts)
                    interrupts.waiting = True  # the caller's loop body runs: Ctrl-C raises there as usual
                    yield item
                except StopAsyncIteration:
                    return
                except KeyboardInterrupt:
                    if not interrupts.waiting:
                        raise
                    interrupts.pending = True  # it landed in this frame: delivered when the next step starts
    finally:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(agen.aclose())


async def _next(agen: AsyncGenerator[T, None], interrupts: _Interrupts) -> T:
    interrupts.started = True
    if interrupts.pending:
        interrupts.pending = False
        return await agen.athrow(KeyboardInterrupt())
    return await agen.__anext__()


def _drive(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop, interrupts: _Interrupts | None = None) -> T:
    """Run ``coro`` on ``loop``. A Ctrl-C that lands while the loop waits cancels the task, which then ends as
    it chooses; a task that ends by being cancelled raises KeyboardInterrupt here."""
    if interrupts is not None:
        interrupts.started = False
    task = loop.create_task(coro)
    interrupted = False
    while True:
        try:
            if interrupts is not None:
                interrupts.inside = True
            return loop.run_until_complete(task)
        except KeyboardInterrupt:
            if task.done():
                raise
            if interrupts is not None and not interrupts.started:
                interrupts.pending = True  # a cancel now would never reach the coroutine: deliver it on start
            else:
                interrupted = True
                task.cancel()
        except BaseException as exc:  # cancelled, or a task group's group of interruptions
            if interrupted and is_interruption(exc):
                raise KeyboardInterrupt from None
            raise
        finally:
            if interrupts is not None:
                interrupts.inside = False


_END = object()


def _iterate_in_thread(make: Callable[[], AsyncGenerator[T, None]]) -> Iterator[T]:
    """For sync iteration inside a running event loop: a worker thread drives the generator on its own loop."""
    items: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=64)
    stop = threading.Event()

    async def pump() -> None:
        agen = make()
        try:
            async for item in agen:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:
            items.put((_END, exc))
            return
        finally:
            await agen.aclose()
        items.put((_END, None))

    worker = threading.Thread(target=lambda: asyncio.run(pump()), name="agentcpm-sync", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                items.get_nowait()
        worker.join()
