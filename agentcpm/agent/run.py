"""One run of an agent: the loop. Ask the model, check and run its calls, repeat until it answers.

The rules it applies are in :mod:`.policy`, approval in :mod:`.approval`, running the calls in
:mod:`.execution`. Everything the run adds to the conversation goes through :meth:`Run.append`, which also
writes the transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import tracing
from .._sync import is_interruption
from ..client import attach_images
from ..errors import (
    AgentCancelled,
    ApprovalError,
    BackendError,
    ConfigurationError,
    OutputValidationError,
    RequestTimeout,
)
from ..tools import Tool
from ..transcript import Transcript
from ..types import Completed, Completion, Message, MessageInput, ToolCall, ToolResult, to_messages
from . import approval, policy
from .approval import Approvals, Rejected
from .events import AgentEvent, PendingCall, RunFinished, RunResult, RunUsage, Step, StepFinished
from .execution import run_calls
from .limits import Budget, UsageLimits, count_images, not_run
from .policy import Decision

if TYPE_CHECKING:
    from .agent import Agent


class Run:
    """The state of one run; :meth:`loop` is the run."""

    def __init__(
        self,
        agent: Agent,
        input: MessageInput | None,
        images: Sequence[Any] | None,
        history: Sequence[Message | dict[str, Any]] | None,
        transcript: str | Path | None,
        blocking_model: bool,
        limits: UsageLimits | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self.agent = agent
        self.blocking_model = blocking_model  # a sync run: the model may block this private loop
        self.messages: list[Message] = [Message.from_openai(m) for m in history or ()]
        self.history_length = len(self.messages)
        self.new_input = attach_images([] if input is None else to_messages(input), images)
        if not self.messages and not self.new_input:
            raise ConfigurationError("nothing to run: give an input or a history to continue")
        self.steps: list[Step] = []
        self.usage = RunUsage()
        self.step = sum(1 for m in self.messages if m.role == "assistant")
        self.transcript = Transcript(transcript) if transcript is not None else None
        self.limits = limits if limits is not None else agent.limits
        self.approvals: dict[str, bool | Rejected] = dict(approvals or {})
        self.deferred: list[PendingCall] = []  # calls waiting for a later decision (approval="later")
        self.limit: str | None = None  # the limit reached, when a final answer is asked for
        self.output: Any = None  # the final answer, parsed (output_type)
        self.set_tools(agent.tools)

    def set_tools(self, tools: list[Tool]) -> None:
        self.tools = list(tools)
        self.rules = policy.CallRules({t.name: t for t in tools}, self.agent.tool_retries, self.agent.repeat_limit)
        self.schemas = [t.to_openai() for t in tools]

    # the loop ---------------------------------------------------------------------------------------
    def loop(self) -> AsyncGenerator[AgentEvent, None]:
        """The run's events (inside an ``invoke_agent`` span when tracing is on: :mod:`agentcpm.tracing`)."""
        events = self._loop()
        return events if tracing.tracer is None else tracing.agent_run(events, self.agent)

    async def _loop(self) -> AsyncGenerator[AgentEvent, None]:
        started = time.perf_counter()
        self.budget = Budget(self.limits, time.monotonic())
        try:
            if self.agent.servers:  # MCP servers: list their tools now (a list_changed is picked up per run)
                self.set_tools(await self.agent.all_tools())
            self.open()
            async with contextlib.aclosing(self._resume()) as events:
                async for event in events:
                    yield event
            if self.deferred:  # calls still wait for a decision: the run ends here, its state in the transcript
                yield RunFinished(self.finish(None, started))
                return
            self.approvals = {}  # decisions are for the pending calls only
            for message in self.new_input:
                self.append(message)
            async with contextlib.aclosing(self._steps()) as events:
                async for event in events:
                    yield event
            yield RunFinished(self.finish(None if self.deferred else self.output, started))
        except BackendError as exc:  # the server failed mid-run: the error stays what it is, with the messages
            exc.messages = list(self.messages)  # type: ignore[attr-defined]
            raise
        except BaseException as exc:
            if not is_interruption(exc):
                raise
            raise AgentCancelled(
                f"the run was {'cancelled' if isinstance(exc, asyncio.CancelledError) else 'interrupted'} at step "
                f"{self.step}; the conversation so far is in .messages (pass it as history= to go on)",
                self.messages,
            ) from None
        finally:
            if self.transcript is not None:
                self.transcript.close()

    async def _resume(self) -> AsyncGenerator[AgentEvent, None]:
        """Calls left pending (approve later), or a run cut off mid-step (a killed process): finish that step."""
        pending = policy.unanswered_calls(self.messages)
        self.check_approvals(pending)
        if pending:
            async with contextlib.aclosing(self.run_calls(pending, resuming=True)) as events:
                async for event in events:
                    yield event

    async def _steps(self) -> AsyncGenerator[AgentEvent, None]:
        """Ask, run the calls, repeat, until an answer fits (``self.output``) or calls wait for approval."""
        output_retries, finishing, last_request = 0, False, False
        for steps_taken in itertools.count():
            if steps_taken >= self.agent.max_steps and not finishing:
                finishing = True
                self.append(policy.out_of_steps(self.agent.max_steps, self.agent.final_prompt, self.messages))
            completion: Completion | None = None
            async with contextlib.aclosing(self.take_step(use_tools=not finishing, final=last_request)) as events:
                async for event in events:
                    if isinstance(event, Completed):
                        completion = event.completion
                    yield event
            if self.deferred:  # calls wait for a decision
                return
            unanswered = completion is None or (not finishing and bool(completion.tool_calls))
            if self.limit is not None and not last_request and unanswered:
                # a limit reached before the run had an answer: one last request, without tools
                finishing = last_request = True
                self.append(self.budget.final_prompt(self.limit))
                continue
            assert completion is not None
            if completion.tool_calls and not finishing:
                continue
            policy.check_final(completion, self.messages)
            self.output, problem = policy.parse_output(self.agent.output_type, completion.content)
            if problem is None:
                return
            if output_retries >= self.agent.output_retries:
                raise OutputValidationError(
                    f"the final answer does not fit {policy.type_name(self.agent.output_type)} after "
                    f"{output_retries} re-asks: {problem}",
                    self.messages,
                )
            output_retries += 1
            self.append(Message("user", problem))

    async def take_step(self, use_tools: bool, final: bool = False) -> AsyncGenerator[AgentEvent, None]:
        """One model request and the calls it makes; ends with StepFinished (the Completed event before it).
        A limit reached before the request ends the step at once (no events); ``final``: the last request,
        after a limit or ``max_steps``, is not checked again."""
        request = self.request_messages(final)
        if not final and self.reach(self.budget.before_request(self.usage, count_images(request))):
            return
        self.step += 1
        started = time.perf_counter()
        completion: Completion | None = None
        async with contextlib.aclosing(self.ask_model(request, use_tools)) as events:
            async for event in events:
                if isinstance(event, Completed):
                    completion = event.completion
                yield event
        assert completion is not None
        self.usage.requests += 1
        self.usage.images += count_images(request)
        self.usage.prompt_tokens += completion.usage.prompt_tokens
        self.usage.completion_tokens += completion.usage.completion_tokens
        self.usage.tool_calls += len(completion.tool_calls) if use_tools else 0
        message = completion.to_message()
        self.append(message)
        results: list[ToolResult] = []
        limit = None if final else self.budget.after_answer(self.usage)
        if limit is not None:
            if completion.tool_calls and use_tools:  # over budget: its calls are not run
                results = [self.answer_unrun(call, limit) for call in completion.tool_calls]
            self.reach(limit)
            use_tools = False
        if completion.tool_calls and use_tools:
            async with contextlib.aclosing(self.run_calls(completion.tool_calls)) as calls:
                async for event in calls:
                    yield event
            results = self.last_results
        record = Step(self.step, message, results, completion.usage, time.perf_counter() - started)
        record.finish_reason = completion.finish_reason
        self.steps.append(record)
        if self.transcript is not None:
            usage = record.usage.model_dump(exclude_none=True)
            self.transcript.step(
                record.index, usage=usage, duration=record.duration, finish_reason=record.finish_reason
            )
        yield StepFinished(self.step, completion.usage, record)
        self.rules.check_budgets(self.messages)

    def request_messages(self, final: bool) -> list[Message]:
        """What the model is sent (the image window); a final request carries only the images left in budget."""
        limit = self.agent.max_images_per_request
        left = self.budget.images_left(self.usage) if final else None
        if left is not None:
            limit = left if limit is None else min(limit, left)
        return policy.request_messages(self.messages, self.agent.keep_images, limit)

    async def ask_model(self, request: list[Message], use_tools: bool) -> AsyncGenerator[AgentEvent, None]:
        agent, client = self.agent, self.agent.client
        options = client.defaults.merged(**agent.options)
        if self.budget.deadline is not None:  # the run's time limit bounds the request too
            options = options.merged(timeout=self.budget.request_timeout(options.timeout))
        events = client.events(request, self.schemas if use_tools else [], options, blocking=self.blocking_model)
        try:
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    yield event
        except RequestTimeout:
            if self.budget.expired():
                raise self.budget.exceeded("seconds", self.usage, self.messages) from None
            raise

    # budgets and pending calls -----------------------------------------------------------------------
    def reach(self, limit: str | None) -> bool:
        """A limit was reached: raise, or (``final_answer``) remember it for one last answer. False: none."""
        if limit is None:
            return False
        if not self.budget.final_answer or limit == "seconds":
            raise self.budget.exceeded(limit, self.usage, self.messages)
        self.limit = limit
        return True

    def answer_unrun(self, call: ToolCall, limit: str) -> ToolResult:
        """A call the budget does not allow: answered as not run (so no later process runs it either)."""
        decision = Decision(call).refuse(not_run(limit))
        self.record(decision)
        self.messages.append(decision.message or decision.result.to_message())  # type: ignore[union-attr]
        assert decision.result is not None
        return decision.result

    def check_approvals(self, pending: list[ToolCall]) -> None:
        ids = [call.id for call in pending]
        for call_id, verdict in self.approvals.items():
            if call_id not in ids:
                raise ConfigurationError(
                    f"no pending call with id {call_id!r} (pending: {', '.join(ids) or 'none'}); a call is decided "
                    "once: one that has run or been rejected is in the transcript already"
                )
            if not isinstance(verdict, (bool, Rejected)):
                raise ConfigurationError(
                    f"the decision for {call_id!r} must be True, False or Rejected(message), got {verdict!r}"
                )

    # the calls of one answer ------------------------------------------------------------------------
    async def run_calls(self, calls: Sequence[ToolCall], resuming: bool = False) -> AsyncGenerator[AgentEvent, None]:
        """Check every call in order (and ask for approval), run the approved ones, then add the results
        to the conversation in the order the model made the calls. Deferred calls stay unanswered."""
        decisions = [await self.decide(call) for call in calls]
        if self.deferred:
            if resuming and self.new_input:
                raise ConfigurationError(
                    f"calls are still pending ({', '.join(p.id for p in self.deferred)}): decide each with "
                    "approvals= before giving a new input (nothing was run)"
                )
            waiting = {p.id for p in self.deferred}
            decisions = [d for d in decisions if d.call.id not in waiting]
        parallel, timeout = self.agent.parallel_tool_calls, self.agent.tool_timeout
        try:
            events = run_calls(
                self.step,
                decisions,
                parallel=parallel,
                default_timeout=timeout,
                record=self.record,
                deadline=self.budget.deadline,
            )
            async with contextlib.aclosing(events) as running:
                async for event in running:
                    yield event
        finally:
            self.last_results = [d.result for d in decisions if d.result is not None]
            for decision in decisions:
                if decision.result is not None:
                    self.record(decision)
                    self.messages.append(decision.message or decision.result.to_message())

    async def decide(self, call: ToolCall) -> Decision:
        decision = self.rules.check(call)
        if decision.result is not None or decision.tool is None:
            return decision
        if call.id in self.approvals:  # decided by the user since the run stopped (approval="later")
            verdict = self.approvals[call.id]
            return decision if verdict is True else decision.refuse(approval.rejection(call, verdict))
        reason = approval.deferral(decision.tool, self.agent.approval)
        if reason is not None:
            self.deferred.append(PendingCall(call.id, call.name, dict(call.arguments), reason, self.step))
            return decision
        try:
            refused = await approval.decide(decision.tool, call, self.agent.approval, self.messages)
        except ApprovalError:  # the callback answers with something that is not an answer: a bug to fix
            raise
        except Exception as exc:  # a broken approval callback must not run the tool, nor end the run
            refused = f"{call.name} was not run: asking for approval failed ({type(exc).__name__}: {exc})."
        return decision if refused is None else decision.refuse(refused)

    def record(self, decision: Decision) -> None:
        """Write a result to the transcript the moment it is known: a process killed later in the step
        resumes without running this call again (``Transcript.load`` puts results back in call order)."""
        if self.transcript is not None and decision.result is not None and not decision.recorded:
            decision.message = decision.result.to_message()
            self.transcript.message(decision.message, self.step)
            decision.recorded = True

    # the conversation and the transcript -----------------------------------------------------------
    def open(self) -> None:
        system = policy.output_instruction(self.agent.system, self.agent.output_type)
        already_there = self.history_length
        if system and not any(m.role == "system" for m in self.messages):
            self.messages.insert(0, Message("system", system))
            already_there += 1  # the agent adds it on every run: a continued transcript does not record it
        if self.transcript is not None:
            continues = self.history_length > 0 and self.transcript.exists
            model = getattr(self.agent.client, "model", None)
            self.transcript.start(continues=continues, model=model, tools=list(self.tools))
            for message in self.messages[already_there if continues else 0 :]:
                self.transcript.message(message, policy.step_of(self.messages, message))

    def append(self, message: Message) -> None:
        self.messages.append(message)
        if self.transcript is not None:
            self.transcript.message(message, self.step)

    def finish(self, output: Any, started: float) -> RunResult:
        self.usage.duration = time.perf_counter() - started
        result = RunResult(output, list(self.messages), self.steps, self.usage, list(self.deferred), self.limit)
        if self.transcript is not None:
            if self.deferred:
                self.transcript.pending([p.to_dict() for p in self.deferred], self.step)
            info: dict[str, Any] = {"pending": [p.id for p in self.deferred]} if self.deferred else {}
            if self.limit is not None:
                info["limit"] = self.limit
            self.transcript.end(output=policy.jsonable(output), usage=self.usage.__dict__, **info)
        return result
