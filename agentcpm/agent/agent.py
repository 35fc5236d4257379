"""The agent: :class:`Agent` is plain configuration; each run is a :class:`~agentcpm.agent.run.Run`.

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

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _sync
from ..errors import ConfigurationError
from ..tools import Tool, as_tools
from ..types import Message, MessageInput
from .approval import Approval, Approvals
from .events import AgentEvent, RunFinished, RunResult
from .limits import UsageLimits
from .run import Run

if TYPE_CHECKING:
    from ..client import Client

DEFAULT_FINAL_PROMPT = (
    "You have used all the steps you were given. Do not call any more tools: answer now, as well as you can, "
    "with what you have found so far."
)

EventCallback = Callable[[AgentEvent], Any]
History = Sequence[Message | dict[str, Any]]


class Agent:
    """An agent: a client, tools and the rules of the loop. Configuration only; each run is independent,
    so one Agent can serve many runs at once.

    >>> agent = Agent(client, tools=[get_weather], system="Be brief.", max_steps=20)   # doctest: +SKIP
    >>> agent.run("What's the weather in Beijing?").output                             # doctest: +SKIP

    ``tools``: functions, :class:`~agentcpm.tools.Tool` objects and MCP servers (anything with ``atools()``,
    listed again at the start of each run; the caller starts and closes them). ``approval``: for tools marked
    ``requires_approval``: ``"ask"`` (a y/N prompt, only when stdin is a terminal; otherwise the call is
    refused with a message saying so), ``"allow"``, ``"deny"`` or a callable ``approve(call)`` (may be async)
    that approves only by returning ``True`` or ``"y"``/``"yes"``; ``False``, ``None`` or any other string
    refuse, and any other value raises :class:`~agentcpm.errors.ApprovalError` (the call is never run);
    ``"later"`` asks nobody: the run ends with ``result.pending`` (saved in the transcript) and a later run
    decides them with ``approvals={call_id: True | False | Rejected("why")}``. A tool's own ``approval`` (an
    MCP server's) is asked first. ``limits``: a :class:`UsageLimits` budget for each run (a run's
    ``limits=`` replaces it). ``tool_timeout``: seconds per call unless the
    tool sets its own. ``tool_retries``: invalid-argument attempts allowed per tool in a row before the run
    ends. ``repeat_limit``: the same call with the same arguments this many times in a row is refused (None:
    never). ``keep_images``: images from tools kept in what the model sees (older ones become
    ``[image from step N omitted]``). ``max_images_per_request``: a hard cap on images per request.
    ``output_type``: parse the final answer as JSON into this type, re-asking up to ``output_retries`` times.
    ``final_prompt``: asked without tools when ``max_steps`` is used up (None: raise
    :class:`~agentcpm.errors.MaxStepsExceeded` instead). ``options``: generation options for every request
    (``max_tokens``, ``temperature``, ...). ``on_event``: callbacks that get every event.
    """

    def __init__(
        self,
        client: Client,
        tools: Sequence[Tool | Callable[..., Any] | Any] = (),
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
        limits: UsageLimits | None = None,
    ) -> None:
        if max_steps < 1:
            raise ConfigurationError(f"max_steps must be at least 1, got {max_steps}")
        if approval not in ("ask", "allow", "deny", "later") and not callable(approval):
            raise ConfigurationError(
                f'approval must be "ask", "allow", "deny", "later" or a callable, got {approval!r}'
            )
        if limits is not None and not isinstance(limits, UsageLimits):
            raise ConfigurationError(f"limits must be a UsageLimits, got {type(limits).__name__}")
        if keep_images < 0 or (max_images_per_request is not None and max_images_per_request < 0):
            raise ConfigurationError("keep_images and max_images_per_request must be 0 or more")
        if repeat_limit is not None and repeat_limit < 2:
            raise ConfigurationError(f"repeat_limit must be at least 2 (or None), got {repeat_limit}")
        self.client = client
        self.servers: list[Any] = [t for t in tools if _is_server(t)]
        self.tools: list[Tool] = as_tools([t for t in tools if not _is_server(t)])
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
        self.limits = limits
        self.on_event: list[EventCallback] = (
            [] if on_event is None else [on_event] if callable(on_event) else list(on_event)
        )

    def __repr__(self) -> str:
        servers = f", servers={[getattr(s, 'name', s) for s in self.servers]}" if self.servers else ""
        return f"Agent(tools={[t.name for t in self.tools]}{servers}, max_steps={self.max_steps})"

    async def all_tools(self) -> list[Tool]:
        """The Python tools and, listed now, the MCP servers' tools (a clash gets the server's name)."""
        if not self.servers:
            return list(self.tools)
        from ..mcp import amcp_tools

        return [*self.tools, *await amcp_tools(self.servers, reserved=[t.name for t in self.tools])]

    # ------------------------------------------------------------------------------------------------
    def run(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: History | None = None,
        transcript: str | Path | None = None,
        limits: UsageLimits | None = None,
        approvals: Approvals | None = None,
    ) -> RunResult:
        """Run until the model answers without tool calls; returns a :class:`RunResult`.

        ``history``: earlier messages to continue from (``result.messages`` or ``Transcript.load(path)``;
        calls left unanswered there run first). ``transcript``: a JSONL path to append the run to.
        ``limits``: this run's budget (else the agent's). ``approvals``: decisions on the calls left pending
        by ``approval="later"``, by call id: ``True`` runs it, ``False`` or ``Rejected(message)`` refuses it.
        Ctrl-C stops the run cleanly and raises :class:`~agentcpm.errors.AgentCancelled` with the messages.
        """
        return _sync.run(
            lambda: _last_result(self._events(input, images, history, transcript, limits, approvals, blocking=True))
        )

    async def arun(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: History | None = None,
        transcript: str | Path | None = None,
        limits: UsageLimits | None = None,
        approvals: Approvals | None = None,
    ) -> RunResult:
        """The async form of :meth:`run`. Cancelling its task raises :class:`~agentcpm.errors.AgentCancelled`
        (not ``CancelledError``), carrying the messages so far."""
        return await _last_result(self._events(input, images, history, transcript, limits, approvals, blocking=False))

    def stream(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: History | None = None,
        transcript: str | Path | None = None,
        limits: UsageLimits | None = None,
        approvals: Approvals | None = None,
    ) -> Iterator[AgentEvent]:
        """Run, yielding the client's text, reasoning and tool-call events, then ``ToolRunStarted``,
        ``ToolRunFinished``, ``StepFinished`` and finally ``RunFinished(result)``. Each event has a ``type``.

        >>> for event in agent.stream("Weather in Paris?"):             # doctest: +SKIP
        ...     if event.type == "content.delta": print(event.text, end="")
        """
        return _sync.iterate(lambda: self._events(input, images, history, transcript, limits, approvals, blocking=True))

    def astream(
        self,
        input: MessageInput | None = None,
        *,
        images: Sequence[Any] | None = None,
        history: History | None = None,
        transcript: str | Path | None = None,
        limits: UsageLimits | None = None,
        approvals: Approvals | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """The async form of :meth:`stream`."""
        return self._events(input, images, history, transcript, limits, approvals, blocking=False)

    def _events(
        self,
        input: MessageInput | None,
        images: Sequence[Any] | None,
        history: History | None,
        transcript: str | Path | None,
        limits: UsageLimits | None,
        approvals: Approvals | None,
        *,
        blocking: bool,
    ) -> AsyncGenerator[AgentEvent, None]:
        events = Run(self, input, images, history, transcript, blocking, limits, approvals).loop()
        return _with_callbacks(events, self.on_event) if self.on_event else events


def _is_server(tool: Any) -> bool:
    """An MCP server (anything with ``atools()``) among the tools, not a tool itself."""
    return not isinstance(tool, Tool) and callable(getattr(tool, "atools", None))


async def _with_callbacks(
    run: AsyncGenerator[AgentEvent, None], callbacks: list[EventCallback]
) -> AsyncGenerator[AgentEvent, None]:
    """Each event to every callback, then to the caller. What is thrown in (a Ctrl-C from the sync driver)
    goes on into the run, which ends with AgentCancelled."""
    thrown: BaseException | None = None
    try:
        while True:
            try:
                event = await (run.athrow(thrown) if thrown is not None else run.__anext__())
            except StopAsyncIteration:
                return
            thrown = None
            for callback in callbacks:
                outcome = callback(event)
                if inspect.isawaitable(outcome):
                    await outcome
            try:
                yield event
            except GeneratorExit:
                raise
            except BaseException as exc:
                thrown = exc
    finally:
        await run.aclose()


async def _last_result(events: AsyncGenerator[AgentEvent, None]) -> RunResult:
    try:
        async for event in events:
            if isinstance(event, RunFinished):
                return event.result
    finally:
        await events.aclose()
    raise AssertionError("a run always ends with RunFinished or an exception")
