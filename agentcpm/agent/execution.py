"""Running the approved calls of one answer: concurrently unless told otherwise, each within its timeout,
results reported as they end and left in the order the model made the calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

from .. import tracing
from .._sync import is_interruption
from ..tools import to_content
from ..types import ImagePart, ToolResult
from .approval import granted
from .events import AgentEvent, ToolRunFinished, ToolRunStarted
from .policy import Decision, error_result

CANCELLED = "Cancelled by the user before it finished."


async def execute(decision: Decision, default_timeout: float | None, deadline: float | None = None) -> Decision:
    """Run one approved call; its failure or timeout becomes the error result the model reads. ``deadline``
    (``time.monotonic()``): the run's time limit, which stops the call too."""
    if tracing.tracer is not None:  # inside an ``execute_tool`` span (agentcpm.tracing)
        return await tracing.tool_call(decision.call, lambda: _execute(decision, default_timeout, deadline))
    return await _execute(decision, default_timeout, deadline)


async def _execute(decision: Decision, default_timeout: float | None, deadline: float | None) -> Decision:
    tool, call = decision.tool, decision.call
    assert tool is not None
    timeout = tool.timeout if tool.timeout is not None else default_timeout
    by_deadline = False
    if deadline is not None and (timeout is None or deadline - time.monotonic() < timeout):
        timeout, by_deadline = max(deadline - time.monotonic(), 0.0), True

    async def attempt() -> ToolResult:
        approved = granted.set(True)  # the call was approved (or needed no approval): an MCP tool asks no more
        try:
            content = to_content(await tool.acall(decision.arguments, validate=False))
            for part in content:  # a broken image fails here, as this tool's error, not in the next request
                if isinstance(part, ImagePart) and not part.is_url:
                    part.open()
            return ToolResult(call_id=call.id, name=call.name, content=content)
        except Exception as exc:  # inside, so that a TimeoutError the tool raises is not taken for ours
            decision.error = f"{type(exc).__name__}: {exc}"
            return error_result(call, f"{call.name} failed: {decision.error}")
        finally:
            granted.reset(approved)

    started = time.perf_counter()
    try:
        decision.result = await (attempt() if timeout is None else asyncio.wait_for(attempt(), timeout))
    except asyncio.TimeoutError:
        decision.error = (
            f"{call.name} was stopped: the run's time limit ran out; its result is lost."
            if by_deadline
            else f"{call.name} timed out after {timeout:g} s and was stopped; its result is lost."
        )
        decision.result = error_result(call, decision.error)
    decision.result.duration = time.perf_counter() - started
    return decision


async def run_calls(
    step: int,
    decisions: list[Decision],
    *,
    parallel: bool,
    default_timeout: float | None,
    record: Callable[[Decision], None],
    deadline: float | None = None,
) -> AsyncGenerator[AgentEvent, None]:
    """Report the refused calls, then run the others (concurrently when ``parallel`` and no tool is
    ``sequential``). ``record`` writes each result the moment it is known. On cancellation every call still
    running is stopped and gets a "cancelled" result before the cancellation goes on."""
    for decision in decisions:
        if decision.result is not None:
            record(decision)
            yield ToolRunFinished(step, decision.call, decision.result, decision.error, 0.0)
    ready = [d for d in decisions if d.result is None]
    concurrent = parallel and len(ready) > 1 and not any(d.tool and d.tool.sequential for d in ready)
    tasks: list[asyncio.Future[Decision]] = []

    def finished(decision: Decision) -> ToolRunFinished:
        assert decision.result is not None
        record(decision)
        return ToolRunFinished(step, decision.call, decision.result, decision.error, decision.result.duration or 0.0)

    try:
        for decision in ready:
            yield ToolRunStarted(step, decision.call)
            if concurrent:
                tasks.append(asyncio.ensure_future(execute(decision, default_timeout, deadline)))
            else:
                yield finished(await execute(decision, default_timeout, deadline))
        for future in asyncio.as_completed(tasks):
            yield finished(await future)
    except BaseException as exc:
        if not is_interruption(exc):
            raise
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for decision in ready:
            if decision.result is None:
                decision.result = error_result(decision.call, CANCELLED)
                record(decision)
        raise
    finally:  # also when the consumer of the events stops early: leave no tool running
        for task in tasks:
            task.cancel()
