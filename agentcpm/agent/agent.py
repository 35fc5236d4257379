"""The agent: :class:`Agent` is plain configuration; :class:`_Run` is the loop, readable top to bottom.

>>> from agentcpm import Agent, Client, ScriptedBackend, tool
>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add two numbers.'''
...     return a + b
>>> backend = ScriptedBackend([
...     "<tool_call>\\n<function=add>\\n<parameter=a>\\n2\\n</parameter>\\n<parameter=b>\\n3\\n</parameter>\\n"
...     "</function>\\n</tool_call>",
...     "2 + 3 = 5.",
... ])
>>> result = Agent(Client(backend=backend), tools=[add]).run("What is 2 + 3?")
>>> result.output, len(result.steps), result.usage.tool_calls
('2 + 3 = 5.', 2, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .backends.base import move_tool_images
from .client import attach_images
from .errors import (
    AgentCancelled,
    ApprovalError,
    BackendError,
    ConfigurationError,
    MaxStepsExceeded,
    OutputValidationError,
    RepeatedToolCallError,
    ToolRetriesExceeded,
)
from .tools import (
    Tool,
    ToolArgumentsError,
    as_tools,
    display_call,
    dumps_exact,
    format_validation_error,
    run_in_thread,
    to_content,
)
from .transcript import Transcript
from .types import (
    Completed,
    Completion,
    ImagePart,
    Message,
    MessageInput,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    to_messages,
)

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "DEFAULT_FINAL_PROMPT",
    "Agent",
    "AgentEvent",
    "RunFinished",
    "RunResult",
    "RunUsage",
    "Step",
    "StepFinished",
    "ToolFinished",
    "ToolStarted",
]

DEFAULT_FINAL_PROMPT = (
    "You have used all the steps you were given. Do not call any more tools: answer now, as well as you can, "
    "with what you have found so far."
)

Approval = Literal["ask", "allow", "deny"] | Callable[[ToolCall], "bool | str | Awaitable[bool | str | None] | None"]


# ---------------------------------------------------------------------------- results and events


@dataclass
class RunUsage:
    """What a run cost: tokens and requests summed over its steps, tool calls made, wall time in seconds."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    tool_calls: int = 0
    duration: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Step:
    """One model request and the tool calls it led to. ``index`` counts the conversation's assistant turns."""

    index: int
    message: Message
    tool_results: list[ToolResult]
    usage: Usage
    duration: float
    finish_reason: str | None = None


@dataclass
class RunResult:
    """The outcome of :meth:`Agent.run`: ``output`` (text, or an ``output_type`` instance), the whole
    conversation (images included), the steps and the summed usage."""

    output: Any
    messages: list[Message]
    steps: list[Step]
    usage: RunUsage


@dataclass(slots=True)
class ToolStarted:
    """A tool is about to run."""

    step: int
    call: ToolCall


@dataclass(slots=True)
class ToolFinished:
    """A call ended: ``result`` is what goes back to the model; ``error`` is set when it did not succeed
    (invalid arguments, unknown tool, denied, raised, timed out, cancelled)."""

    step: int
    call: ToolCall
    result: ToolResult
    error: str | None
    duration: float


@dataclass(slots=True)
class StepFinished:
    """A step is done; ``usage`` is its model request's usage."""

    step: int
    usage: Usage
    record: Step


@dataclass(slots=True)
class RunFinished:
    """The last event of a run."""

    result: RunResult


AgentEvent = StreamEvent | ToolStarted | ToolFinished | StepFinished | RunFinished
EventCallback = Callable[[AgentEvent], Any]


# ---------------------------------------------------------------------------- the agent


class Agent:
    """An agent: a client, tools and the rules of the loop. Configuration only; each run is independent,
    so one Agent can serve many runs at once.

    >>> agent = Agent(client, tools=[get_weather], system="Be brief.", max_steps=20)   # doctest: +SKIP
    >>> agent.run("What's the weather in Beijing?").output                             # doctest: +SKIP

    ``approval``: for tools marked ``requires_approval``: ``"ask"`` (a y/N prompt in the terminal),
    ``"allow"``, ``"deny"`` or a callable ``approve(call)`` (may be async) that approves only by returning
    ``True`` or the string ``"y"``/``"yes"``; ``False``, ``None`` or any other string refuse, and any other
    value raises :class:`~agentcpm.errors.ApprovalError` (the call is never run). ``tool_timeout``:
    seconds per call unless the tool sets its own. ``tool_retries``: invalid-argument attempts allowed per
    tool in a row before the run ends. ``repeat_limit``: the same call with the same arguments this many
    times in a row is refused (None: never). ``keep_images``: images from tools kept in what the model
    sees (older ones become ``[image from step N omitted]``). ``max_images_per_request``: a hard cap on
    images per request. ``output_type``: parse the final answer as JSON into this type, re-asking up to
    ``output_retries`` times. ``final_prompt``: asked without tools when ``max_steps`` is used up (None:
    raise :class:`~agentcpm.errors.MaxStepsExceeded` instead). ``options``: generation options for every
    request (``max_tokens``, ``temperature``, ...). ``on_event``: callbacks that get every event.
    """

    def __init__(
        self,
        client: Client,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        *,
        system: str | None = None,
        max_steps: int = 20,
        approval: Approval = "ask",
        tool_timeout: float | None = None,
        tool_retries: int = 2,
        repeat_limit: int | None = 3,
        parallel_tool_calls: bool = True,
        keep_images: int = 3,
        max_images_per_request: int | None = None,
        output_type: Any = None,
        output_retries: int = 2,
        final_prompt: str | None = DEFAULT_FINAL_PROMPT,
        options: dict[str, Any] | None = None,
        on_event: EventCallback | Sequence[EventCallback] | None = None,
    ) -> None:
        if max_steps < 1:
            raise ConfigurationError(f"max_steps must be at least 1, got {max_steps}")
        if approval not in ("ask", "allow", "deny") and not callable(approval):
            raise ConfigurationError(f'approval must be "ask", "allow", "deny" or a callable, got {approval!r}')
        if keep_images < 0 or (max_images_per_request is not None and max_images_per_request < 0):
            raise ConfigurationError("keep_images and max_images_per_request must be 0 or more")
        if repeat_limit is not None and repeat_limit < 2:
            raise ConfigurationError(f"repeat_limit must be at least 2 (or None), got {repeat_limit}")
        self.client = client
        self.tools: list[Tool] = as_tools(tools)
        self.system = system
        self.max_steps = max_steps
        self.approval = approval
        self.tool_timeout = tool_timeout
        self.tool_retries = tool_retries
        self.repeat_limit = repeat_limit
        self.parallel_tool_calls = parallel_tool_calls
        self.keep_images = keep_images
        self.max_images_per_request = max_images_per_request
        self.output_type = output_type
        self.output_retries = output_retries
        self.final_prompt = final_prompt
        self.options = dict(options or {})
        self.on_event: list[EventCallback] = (
            [] if on_event is None else [on_event] if callable(on_event) else list(on_event)
        )

    def __repr__(self) -> str:
        return f"Agent(tools={[t.name for t in self.tools]}, max_steps={self.max_steps})"

    # ------------------------------------------------------------------------------------------------
    def run(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: Sequence[Message | dict[str, Any]] | None = None,
        transcript: str | Path | None = None,
    ) -> RunResult:
        """Run until the model answers without tool calls; returns a :class:`RunResult`.

        ``history``: earlier messages to continue from (``result.messages`` or ``Transcript.load(path)``;
        calls left unanswered there run first). ``transcript``: a JSONL path to append the run to.
        Ctrl-C stops the run cleanly and raises :class:`~agentcpm.errors.AgentCancelled` with the messages.
        """
        if _loop_running():  # called from async code (a notebook): run on a private loop in another thread
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                return pool.submit(self.run, input, images=images, history=history, transcript=transcript).result()
        events = self._events(input, images, history, transcript, blocking_model=True)
        return _drive(_last_result(events))

    async def arun(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: Sequence[Message | dict[str, Any]] | None = None,
        transcript: str | Path | None = None,
    ) -> RunResult:
        """The async form of :meth:`run`. Cancelling its task raises :class:`~agentcpm.errors.AgentCancelled`
        (not ``CancelledError``), carrying the messages so far."""
        return await _last_result(self._events(input, images, history, transcript, blocking_model=False))

    def stream(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: Sequence[Message | dict[str, Any]] | None = None,
        transcript: str | Path | None = None,
    ) -> Iterator[AgentEvent]:
        """Run, yielding the client's text, reasoning and tool-call events, then ``ToolStarted``,
        ``ToolFinished``, ``StepFinished`` and finally ``RunFinished(result)``.

        >>> for event in agent.stream("Weather in Paris?"):             # doctest: +SKIP
        ...     if isinstance(event, ContentDelta): print(event.text, end="")
        """
        if _loop_running():
            raise ConfigurationError(
                "stream() cannot run inside a running event loop: use `async for ... in astream()`"
            )
        run = _Run(self, input, images, history, transcript, blocking_model=True).loop()
        events = _with_callbacks(run, self.on_event)
        loop = asyncio.new_event_loop()
        interrupts = _Interrupts()
        try:
            with interrupts:
                while True:
                    try:
                        interrupts.waiting = False
                        event = _drive(_next_event(events, run, interrupts), loop=loop, interrupts=interrupts)
                        interrupts.waiting = True  # the caller's loop body runs: Ctrl-C raises there as usual
                        yield event
                    except StopAsyncIteration:
                        return
                    except KeyboardInterrupt:
                        interrupts.pending = True  # it landed in this frame: the run ends at its next step
        finally:
            with contextlib.suppress(BaseException):
                loop.run_until_complete(events.aclose())
            _close_loop(loop)

    def astream(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: Sequence[Message | dict[str, Any]] | None = None,
        transcript: str | Path | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """The async form of :meth:`stream`."""
        return self._events(input, images, history, transcript, blocking_model=False)

    def _events(
        self,
        input: MessageInput | None,
        images: Sequence[Any] | None,
        history: Sequence[Message | dict[str, Any]] | None,
        transcript: str | Path | None,
        *,
        blocking_model: bool,
    ) -> AsyncGenerator[AgentEvent, None]:
        return _with_callbacks(_Run(self, input, images, history, transcript, blocking_model).loop(), self.on_event)


# ---------------------------------------------------------------------------- driving async code from sync code


async def _with_callbacks(
    events: AsyncIterator[AgentEvent], callbacks: list[EventCallback]
) -> AsyncGenerator[AgentEvent, None]:
    async for event in events:
        for callback in callbacks:
            outcome = callback(event)
            if inspect.isawaitable(outcome):
                await outcome
        yield event


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _last_result(events: AsyncIterator[AgentEvent]) -> RunResult:
    async for event in events:
        if isinstance(event, RunFinished):
            return event.result
    raise AssertionError("a run always ends with RunFinished or an exception")


class _Interrupts:
    """Ctrl-C while :meth:`Agent.stream` drives a run from sync code.

    While the run's task is running, SIGINT raises KeyboardInterrupt as usual, right where the run is (a model
    streaming on this thread, a tool), and the run turns it into AgentCancelled carrying the messages; in the
    caller's own loop body it raises there, as anywhere in the caller's code. In the glue between the two
    (scheduling the next step) it is remembered and delivered to the run when it resumes, so it can never
    land halfway through scheduling a task.
    Only in the main thread, and only over Python's default handler; elsewhere nothing changes.
    """

    def __init__(self) -> None:
        self.inside = False  # the run's task is running
        self.started = False  # the current step's coroutine has begun
        self.waiting = False  # the caller has an event and its own code runs
        self.pending = False  # a Ctrl-C waits to be delivered to the run
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


async def _next_event(
    events: AsyncIterator[AgentEvent], run: AsyncGenerator[AgentEvent, None], interrupts: _Interrupts
) -> AgentEvent:
    interrupts.started = True
    if interrupts.pending:
        interrupts.pending = False
        # Thrown into the run itself (not the callback wrapper), which ends with AgentCancelled.
        return await run.athrow(KeyboardInterrupt())
    return await events.__anext__()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _drive(
    coro: Coroutine[Any, Any, Any],
    loop: asyncio.AbstractEventLoop | None = None,
    interrupts: _Interrupts | None = None,
) -> Any:
    """Run ``coro`` to completion on ``loop`` (a fresh one if None). A Ctrl-C that lands while the loop waits
    (for tools, say) cancels the task, which then ends with AgentCancelled carrying the messages."""
    own = loop is None
    loop = loop or asyncio.new_event_loop()
    if interrupts is not None:
        interrupts.started = False
    task = loop.create_task(coro)
    try:
        while True:
            try:
                if interrupts is not None:
                    interrupts.inside = True
                return loop.run_until_complete(task)
            except KeyboardInterrupt:
                if task.done():
                    raise
                if interrupts is not None and not interrupts.started:
                    interrupts.pending = True  # a cancel now would never reach the run: deliver it on start
                else:
                    task.cancel()
            finally:
                if interrupts is not None:
                    interrupts.inside = False
    finally:
        if own:
            _close_loop(loop)


# ---------------------------------------------------------------------------- one run


@dataclass
class _Decision:
    """What to do with one call: run it (``run``) or answer it with ``result`` right away."""

    call: ToolCall
    tool: Tool | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    result: ToolResult | None = None
    error: str | None = None
    recorded: bool = False  # written to the transcript
    message: Message | None = None  # the result as a message, once recorded


class _Run:
    """The state of one run and its loop. Everything the run adds to the conversation goes through
    :meth:`_append`, which also writes the transcript."""

    def __init__(
        self,
        agent: Agent,
        input: MessageInput | None,
        images: Sequence[Any] | None,
        history: Sequence[Message | dict[str, Any]] | None,
        transcript: str | Path | None,
        blocking_model: bool,
    ) -> None:
        self.agent = agent
        self.tools = {t.name: t for t in agent.tools}
        self.schemas = [t.to_openai() for t in agent.tools]
        self.blocking_model = blocking_model
        self.messages: list[Message] = [Message.from_openai(m) for m in history or ()]
        self.history_length = len(self.messages)
        self.new_input = attach_images([] if input is None else to_messages(input), images)
        if not self.messages and not self.new_input:
            raise ConfigurationError("nothing to run: give an input or a history to continue")
        self.steps: list[Step] = []
        self.usage = RunUsage()
        self.invalid_in_a_row: dict[str, int] = {}
        self.last_call: tuple[str, str] | None = None
        self.repeats = 0
        self.stop: str | None = None
        self.last_results: list[ToolResult] = []
        self.step = sum(1 for m in self.messages if m.role == "assistant")
        self.transcript = Transcript(transcript) if transcript is not None else None

    # the loop ---------------------------------------------------------------------------------------
    async def loop(self) -> AsyncGenerator[AgentEvent, None]:
        started = time.perf_counter()
        try:
            self._open()
            pending = _unanswered_calls(self.messages)
            if pending:  # a run cut off mid-step (a transcript of a killed process): finish that step
                async for event in self._run_calls(pending):
                    yield event
            for message in self.new_input:
                self._append(message)
            steps_taken, output_retries, finishing = 0, 0, False
            while True:
                if steps_taken >= self.agent.max_steps and not finishing:
                    if self.agent.final_prompt is None:
                        raise MaxStepsExceeded(
                            f"no final answer after max_steps={self.agent.max_steps}: raise max_steps, "
                            "or set final_prompt to ask for an answer without tools",
                            self.messages,
                        )
                    finishing = True
                    self._append(Message("user", self.agent.final_prompt))
                steps_taken += 1
                self.step += 1
                step_started = time.perf_counter()
                completion: Completion | None = None
                async for event in self._ask_model(use_tools=not finishing):
                    if isinstance(event, Completed):
                        completion = event.completion
                    yield event
                assert completion is not None
                self._count(completion)
                message = completion.to_message()
                self._append(message)
                results: list[ToolResult] = []
                if completion.tool_calls and not finishing:
                    async for event in self._run_calls(completion.tool_calls):
                        yield event
                    results = self.last_results
                record = Step(
                    self.step,
                    message,
                    results,
                    completion.usage,
                    time.perf_counter() - step_started,
                    completion.finish_reason,
                )
                self.steps.append(record)
                self._log_step(record)
                yield StepFinished(self.step, completion.usage, record)
                self._check_budgets()
                if completion.tool_calls and not finishing:
                    continue
                output, problem = self._parse_output(completion.content)
                if problem is None:
                    break
                if output_retries >= self.agent.output_retries:
                    raise OutputValidationError(
                        f"the final answer does not fit {_type_name(self.agent.output_type)} after "
                        f"{output_retries} re-asks: {problem}",
                        self.messages,
                    )
                output_retries += 1
                self._append(Message("user", problem))
            self.usage.duration = time.perf_counter() - started
            result = RunResult(output, list(self.messages), self.steps, self.usage)
            if self.transcript is not None:
                self.transcript.end(output=_jsonable(output), usage=self.usage.__dict__)
            yield RunFinished(result)
        except BackendError as exc:
            # The server failed mid-run: the error stays what it is, with the conversation so far attached.
            exc.messages = list(self.messages)  # type: ignore[attr-defined]
            raise
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            raise AgentCancelled(
                f"the run was {'interrupted' if isinstance(exc, KeyboardInterrupt) else 'cancelled'} at step "
                f"{self.step}; the conversation so far is in .messages (pass it as history= to go on)",
                self.messages,
            ) from None
        finally:
            if self.transcript is not None:
                self.transcript.close()

    # asking the model -------------------------------------------------------------------------------
    async def _ask_model(self, use_tools: bool) -> AsyncIterator[StreamEvent]:
        client = self.agent.client
        request = _request_messages(self.messages, self.agent.keep_images, self.agent.max_images_per_request)
        options = client.defaults.merged(**self.agent.options)
        # Sync runs (blocking_model) may block this private loop: the in-process model then generates on
        # this thread, and Ctrl-C interrupts it right away.
        events = client.events(request, self.schemas if use_tools else [], options, blocking=self.blocking_model)
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                yield event

    def _count(self, completion: Completion) -> None:
        self.usage.requests += 1
        self.usage.prompt_tokens += completion.usage.prompt_tokens
        self.usage.completion_tokens += completion.usage.completion_tokens
        self.usage.tool_calls += len(completion.tool_calls)

    # running the calls of one answer ----------------------------------------------------------------
    async def _run_calls(self, calls: Sequence[ToolCall]) -> AsyncIterator[AgentEvent]:
        """Check every call in order (and ask for approval), run the approved ones concurrently, then add
        the results in the order the model made the calls."""
        decisions = [await self._decide(call) for call in calls]
        for decision in decisions:
            if decision.result is not None:
                self._record(decision)
                yield ToolFinished(self.step, decision.call, decision.result, decision.error, 0.0)
        ready = [d for d in decisions if d.result is None]
        concurrent = self.agent.parallel_tool_calls and not any(d.tool and d.tool.sequential for d in ready)
        tasks: list[asyncio.Future[_Decision]] = []
        try:
            for decision in ready:
                yield ToolStarted(self.step, decision.call)
                if concurrent:
                    tasks.append(asyncio.ensure_future(self._execute(decision)))
                else:
                    yield self._finished(await self._execute(decision))
            for future in asyncio.as_completed(tasks):
                yield self._finished(await future)
        except (asyncio.CancelledError, KeyboardInterrupt):
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            for decision in ready:
                if decision.result is None:
                    decision.result = _error_result(decision.call, "Cancelled by the user before it finished.")
                    self._record(decision)
            self._add_results(decisions)
            raise
        finally:  # also when the consumer of the events stops early: leave no tool running
            for task in tasks:
                task.cancel()
        self._add_results(decisions)

    def _finished(self, decision: _Decision) -> ToolFinished:
        assert decision.result is not None
        self._record(decision)
        return ToolFinished(self.step, decision.call, decision.result, decision.error, decision.result.duration or 0.0)

    def _record(self, decision: _Decision) -> None:
        """Write a result to the transcript the moment it is known: a process killed later in the step
        resumes without running this call again (``Transcript.load`` puts results back in call order)."""
        if self.transcript is not None and decision.result is not None and not decision.recorded:
            decision.message = decision.result.to_message()
            self.transcript.message(decision.message, self.step)
            decision.recorded = True

    def _add_results(self, decisions: list[_Decision]) -> None:
        """Add the results to the conversation in the order the model made the calls."""
        self.last_results = [d.result for d in decisions if d.result is not None]
        for decision in decisions:
            if decision.result is not None:
                self._record(decision)
                self.messages.append(decision.message or decision.result.to_message())

    async def _decide(self, call: ToolCall) -> _Decision:
        """The rules, in order: cut off, unknown tool, invalid arguments, repeated call, approval."""
        decision = _Decision(call)

        def refuse(text: str) -> _Decision:
            decision.result, decision.error = _error_result(call, text), text
            return decision

        if not call.complete:  # never run a call whose end was not seen: its arguments may be cut short
            return refuse(
                f"The call to {call.name or 'a tool'} was cut off before it was complete (the answer hit the "
                "token limit or ended early), so it was not run. Make the call again, complete and shorter."
            )
        tool = self.tools.get(call.name)
        if tool is None:
            available = ", ".join(self.tools) or "none"
            return refuse(f"There is no tool named {call.name!r}. Available tools: {available}.")
        decision.tool = tool
        try:
            if call.error:
                raise ToolArgumentsError(tool.name, [call.error])
            decision.arguments = tool.validate(dict(call.arguments))
        except ToolArgumentsError as exc:
            self.invalid_in_a_row[tool.name] = self.invalid_in_a_row.get(tool.name, 0) + 1
            schema = json.dumps(tool.parameters, ensure_ascii=False)
            errors = "\n".join(f"- {e}" for e in exc.errors)
            return refuse(
                f"Invalid arguments for {tool.name}:\n{errors}\nThe parameters are:\n{schema}\n"
                "Call the tool again with corrected arguments."
            )
        self.invalid_in_a_row[tool.name] = 0
        if self._is_repeat(call):
            return refuse(
                f"You already called {call.name} with exactly these arguments {self.repeats - 1} times "
                "in a row, so it was not run again. Use the results you have, or do something different."
            )
        if tool.requires_approval:
            try:
                allowed = await self._approve(call)
            except ApprovalError:  # the callback answers with something that is not an answer: a bug to fix
                raise
            except Exception as exc:  # a broken approval callback must not run the tool, nor end the run
                return refuse(f"{call.name} was not run: asking for approval failed ({type(exc).__name__}: {exc}).")
            if not allowed:
                return refuse(f"The user did not allow {call.name} to run, so it was not run.")
        return decision

    def _is_repeat(self, call: ToolCall) -> bool:
        key = (call.name, dumps_exact(call.arguments, sort_keys=True, default=str))
        self.repeats = self.repeats + 1 if key == self.last_call else 1
        self.last_call = key
        limit = self.agent.repeat_limit
        if limit is None or self.repeats < limit:
            return False
        if self.repeats > limit:  # told once and insisting: end the run once this step's results are in
            self.stop = (
                f"the model called {call.name} with the same arguments {self.repeats} times in a row after being "
                "told it already ran; stopping. A different prompt or a larger model may help."
            )
        return True

    async def _approve(self, call: ToolCall) -> bool:
        approval = self.agent.approval
        if approval == "allow":
            return True
        if approval == "deny":
            return False
        if approval == "ask":
            return await run_in_thread(_ask_in_terminal, call) is True
        outcome = approval(call) if inspect.iscoroutinefunction(approval) else await run_in_thread(approval, call)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return _approved(outcome, call, self.messages)

    async def _execute(self, decision: _Decision) -> _Decision:
        tool, call = decision.tool, decision.call
        assert tool is not None
        timeout = tool.timeout if tool.timeout is not None else self.agent.tool_timeout

        async def attempt() -> ToolResult:
            try:
                content = to_content(await tool.acall(decision.arguments, validate=False))
                for part in content:  # a broken image fails here, as this tool's error, not in the next request
                    if isinstance(part, ImagePart) and not part.is_url:
                        part.open()
                return ToolResult(call_id=call.id, name=call.name, content=content)
            except Exception as exc:  # inside, so that a TimeoutError the tool raises is not taken for ours
                decision.error = f"{type(exc).__name__}: {exc}"
                return _error_result(call, f"{call.name} failed: {decision.error}")

        started = time.perf_counter()
        try:
            decision.result = await (attempt() if timeout is None else asyncio.wait_for(attempt(), timeout))
        except asyncio.TimeoutError:
            decision.error = f"{call.name} timed out after {timeout:g} s and was stopped; its result is lost."
            decision.result = _error_result(call, decision.error)
        decision.result.duration = time.perf_counter() - started
        return decision

    def _check_budgets(self) -> None:
        if self.stop is not None:
            raise RepeatedToolCallError(self.stop, self.messages)
        for name, count in self.invalid_in_a_row.items():
            if count > self.agent.tool_retries:
                raise ToolRetriesExceeded(
                    f"the model sent invalid arguments to {name} {count} times in a row (tool_retries="
                    f"{self.agent.tool_retries}); the last errors are in the final tool message. Describe the "
                    "parameters better in the docstring, or raise tool_retries.",
                    self.messages,
                )

    # structured output -----------------------------------------------------------------------------
    def _parse_output(self, text: str) -> tuple[Any, str | None]:
        output_type = self.agent.output_type
        if output_type is None or output_type is str:
            return text, None
        from pydantic import TypeAdapter, ValidationError

        adapter = TypeAdapter(output_type)
        try:
            return adapter.validate_json(_extract_json(text)), None
        except ValidationError as exc:
            errors = "\n".join(f"- {e}" for e in format_validation_error(exc))
            schema = json.dumps(adapter.json_schema(), ensure_ascii=False)
            return None, (
                f"Your answer does not fit the required format:\n{errors}\nAnswer again with only a JSON value "
                f"matching this schema, nothing else:\n{schema}"
            )

    # the conversation and the transcript -----------------------------------------------------------
    def _open(self) -> None:
        system = self.agent.system
        if self.agent.output_type not in (None, str):
            from pydantic import TypeAdapter

            schema = json.dumps(TypeAdapter(self.agent.output_type).json_schema(), ensure_ascii=False)
            instruction = f"Give your final answer as only a JSON value matching this schema:\n{schema}"
            system = f"{system}\n\n{instruction}" if system else instruction
        already_there = self.history_length
        if system and not any(m.role == "system" for m in self.messages):
            self.messages.insert(0, Message("system", system))
            already_there += 1  # the agent adds it on every run: a continued transcript does not record it
        if self.transcript is not None:
            continues = self.history_length > 0 and self.transcript.exists
            self.transcript.start(
                continues=continues,
                model=getattr(self.agent.client, "model", None),
                tools=list(self.tools),
            )
            for message in self.messages[already_there if continues else 0 :]:
                self.transcript.message(message, _step_of(self.messages, message))

    def _append(self, message: Message) -> None:
        self.messages.append(message)
        if self.transcript is not None:
            self.transcript.message(message, self.step)

    def _log_step(self, record: Step) -> None:
        if self.transcript is not None:
            self.transcript.step(
                record.index,
                usage=record.usage.model_dump(exclude_none=True),
                duration=record.duration,
                finish_reason=record.finish_reason,
            )


# ---------------------------------------------------------------------------- helpers


def _error_result(call: ToolCall, text: str) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name or "unknown", content=[TextPart(text)], is_error=True)


def _approved(outcome: Any, call: ToolCall, messages: list[Message]) -> bool:
    """An approval callback's answer: only ``True`` or "y"/"yes" approve; ``False``, ``None`` and other
    strings refuse; anything else is a bug in the callback (``1``, a dict, ...), never taken as a yes."""
    if isinstance(outcome, bool):
        return outcome
    if outcome is None:
        return False
    if isinstance(outcome, str):
        return outcome.strip().lower() in ("y", "yes")
    raise ApprovalError(
        f"the approval callback returned {type(outcome).__name__} for {display_call(call)[:200]}, so it was "
        "not run: return True to allow the call, False to refuse it",
        messages,
    )


def _ask_in_terminal(call: ToolCall) -> bool:
    try:  # control, bidi and zero-width characters are shown escaped: what is shown is what runs
        answer = input(f"Allow {display_call(call)}? [y/N] ")
    except EOFError:  # no terminal to ask: refuse
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in ("y", "yes")


def _unanswered_calls(messages: list[Message]) -> list[ToolCall]:
    """Calls of the last assistant turn that have no result yet (a run stopped between the two)."""
    answered: set[str] = set()
    for message in reversed(messages):
        if message.role == "tool" and message.tool_call_id:
            answered.add(message.tool_call_id)
        elif message.role == "assistant":
            return [c for c in message.tool_calls if c.id not in answered]
        else:
            return []
    return []


def _step_of(messages: list[Message], target: Message) -> int:
    step = 0
    for message in messages:
        if message.role == "assistant":
            step += 1
        if message is target:
            return step
    return step


_OMITTED = "[image from step {} omitted]"


def _request_messages(messages: list[Message], keep_images: int, max_images: int | None) -> list[Message]:
    """What the model is sent: the newest ``keep_images`` tool images (user images always, within
    ``max_images``), older ones as placeholders, then tool images moved into a following user turn."""
    keep: dict[int, set[int]] = {}
    tool_kept = total = 0
    step = sum(1 for m in messages if m.role == "assistant")
    steps: list[int] = [0] * len(messages)
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        steps[index] = step
        if message.role == "assistant":
            step -= 1
        for position in range(len(message.content) - 1, -1, -1):
            if not isinstance(message.content[position], ImagePart):
                continue
            from_tool = message.role == "tool"
            if (not from_tool or tool_kept < keep_images) and (max_images is None or total < max_images):
                keep.setdefault(index, set()).add(position)
                total += 1
                tool_kept += from_tool
    out: list[Message] = []
    for index, message in enumerate(messages):
        images = [i for i, p in enumerate(message.content) if isinstance(p, ImagePart)]
        if not images or set(images) <= keep.get(index, set()):
            out.append(message)
            continue
        kept = keep.get(index, set())
        content = [
            p if not isinstance(p, ImagePart) or i in kept else TextPart(_OMITTED.format(steps[index]))
            for i, p in enumerate(message.content)
        ]
        out.append(message.model_copy(update={"content": content}))
    return move_tool_images(out)


def _extract_json(text: str) -> str:
    """The JSON in an answer: inside a ```json fence if there is one, else from the first { or [."""
    fence = re.search(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.S)
    if fence:
        return fence.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text.strip()
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    return text[start : end + 1] if end > start else text[start:]


def _type_name(output_type: Any) -> str:
    return getattr(output_type, "__name__", repr(output_type))


def _jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
