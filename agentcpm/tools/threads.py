"""The bounded pool of daemon worker threads that runs sync tools (``run_in_thread``, ``set_thread_limit``)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

DEFAULT_THREAD_LIMIT = 32


def _default_thread_limit() -> int:
    configured = os.environ.get("AGENTCPM_TOOL_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    # Tools mostly wait (network, subprocesses, sleeps), so the CPU count says little about how many may run
    # at once; 32 is more than a model's step asks for in parallel and bounds what a runaway answer costs.
    return DEFAULT_THREAD_LIMIT


class _Job:
    """One call waiting for or running in a worker; ``abandon`` when nobody waits for its result any more."""

    __slots__ = ("run", "state")

    def __init__(self, run: Callable[[], None]) -> None:
        self.run = run
        self.state = "queued"  # queued | running | abandoned | done


class _DaemonThreads:
    """Worker threads for sync tools: daemon threads (unlike ``asyncio.to_thread``'s pool), so a tool that
    hangs past its timeout, or runs when the user presses Ctrl-C, never keeps the process alive.

    At most ``limit`` workers run calls at once (``set_thread_limit``; default 32 or the
    ``AGENTCPM_TOOL_THREADS`` environment variable); more calls wait in order for a free worker. A call
    abandoned before it started (timed out or cancelled while waiting) never runs. A call abandoned while
    running (a hung tool past its timeout) no longer counts: its thread finishes it in the background and
    a fresh worker may take its place, so hung tools cannot starve the others."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or _default_thread_limit()
        self._queue: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._workers = 0  # workers counted against the limit
        self._idle = 0  # of those, waiting for a job

    def submit(self, run: Callable[[], None]) -> _Job:
        job = _Job(run)
        with self._lock:
            self._queue.append(job)
            if self._idle >= len(self._queue):
                self._ready.notify()
            elif self._workers < self.limit:
                self._start()
        return job

    def abandon(self, job: _Job) -> None:
        with self._lock:
            if job.state == "queued":
                job.state = "abandoned"
                self._queue.remove(job)
            elif job.state == "running":
                job.state = "abandoned"
                self._workers -= 1  # its thread leaves once the call returns, unless there is room again
                if self._queue and self._idle < len(self._queue) and self._workers < self.limit:
                    self._start()

    def _start(self) -> None:  # with the lock held
        self._workers += 1
        threading.Thread(target=self._work, name="agentcpm-tool", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue or self._workers > self.limit:
                    if self._workers > self.limit:  # the limit was lowered: this worker leaves
                        self._workers -= 1
                        return
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                job = self._queue.popleft()
                job.state = "running"
            job.run()
            with self._lock:
                if job.state == "abandoned":  # no longer counted: rejoin only if there is room
                    if self._workers >= self.limit:
                        return
                    self._workers += 1
                job.state = "done"


_threads = _DaemonThreads()


def set_thread_limit(limit: int | None = None) -> None:
    """How many sync tool calls may run at once in worker threads (None: the default, 32,
    or the ``AGENTCPM_TOOL_THREADS`` environment variable). Further calls wait for a free worker; a call's
    timeout counts from when it was submitted, so the wait counts too."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"the thread limit must be a positive int, got {limit!r}")
    with _threads._lock:
        _threads.limit = limit or _default_thread_limit()
        _threads._ready.notify_all()  # idle workers above the new limit leave


def run_in_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` in a daemon worker thread; the returned future resolves on the running loop.
    Cancelling the future before the call started means it never runs."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value, error = context.run(fn, *args), None
        except BaseException as exc:
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(settle, value, error)

    job = _threads.submit(run)
    future.add_done_callback(lambda f: _threads.abandon(job) if f.cancelled() else None)
    return future
