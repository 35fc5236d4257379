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
from ..client import attach_images
from ..errors import AgentCancelled, ApprovalError, BackendError, ConfigurationError, OutputValidationError
from ..tools import Tool
from ..transcript import Transcript
from ..types import Completed, Completion, Message, MessageInput, ToolCall, ToolResult, to_messages
from . import approval, policy
from .events import AgentEvent, RunFinished, RunResult, RunUsage, Step, StepFinished
from .execution import run_calls
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
        try:
            if self.agent.servers:  # MCP servers: list their tools now (a list_changed is picked up per run)
                self.set_tools(await self.agent.all_tools())
            self.open()
            pending = policy.unanswered_calls(self.messages)
            if pending:  # a run cut off mid-step (a transcript of a killed process): finish that step
                async with contextlib.aclosing(self.run_calls(pending)) as events:
                    async for event in events:
                        yield event
            for message in self.new_input:
                self.append(message)
            output_retries, finishing = 0, False
            for steps_taken in itertools.count():
                if steps_taken >= self.agent.max_steps and not finishing:
                    finishing = True
                    self.append(policy.out_of_steps(self.agent.max_steps, self.agent.final_prompt, self.messages))
                completion: Completion | None = None
                async with contextlib.aclosing(self.take_step(use_tools=not finishing)) as events:
                    async for event in events:
                        if isinstance(event, Completed):
                            completion = event.completion
                        yield event
                assert completion is not None
                if completion.tool_calls and not finishing:
                    continue
                policy.check_final(completion, self.messages)
                output, problem = policy.parse_output(self.agent.output_type, completion.content)
                if problem is None:
                    break
                if output_retries >= self.agent.output_retries:
                    raise OutputValidationError(
                        f"the final answer does not fit {policy.type_name(self.agent.output_type)} after "
                        f"{output_retries} re-asks: {problem}",
                        self.messages,
                    )
                output_retries += 1
                self.append(Message("user", problem))
            yield RunFinished(self.finish(output, started))
        except BackendError as exc:  # the server failed mid-run: the error stays what it is, with the messages
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

    async def take_step(self, use_tools: bool) -> AsyncGenerator[AgentEvent, None]:
        """One model request and the calls it makes; ends with StepFinished (the Completed event before it)."""
        self.step += 1
        started = time.perf_counter()
        completion: Completion | None = None
        async with contextlib.aclosing(self.ask_model(use_tools)) as events:
            async for event in events:
                if isinstance(event, Completed):
                    completion = event.completion
                yield event
        assert completion is not None
        self.usage.requests += 1
        self.usage.prompt_tokens += completion.usage.prompt_tokens
        self.usage.completion_tokens += completion.usage.completion_tokens
        self.usage.tool_calls += len(completion.tool_calls)
        message = completion.to_message()
        self.append(message)
        results: list[ToolResult] = []
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

    async def ask_model(self, use_tools: bool) -> AsyncGenerator[AgentEvent, None]:
        agent, client = self.agent, self.agent.client
        request = policy.request_messages(self.messages, agent.keep_images, agent.max_images_per_request)
        options = client.defaults.merged(**agent.options)
        events = client.events(request, self.schemas if use_tools else [], options, blocking=self.blocking_model)
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                yield event

    # the calls of one answer ------------------------------------------------------------------------
    async def run_calls(self, calls: Sequence[ToolCall]) -> AsyncGenerator[AgentEvent, None]:
        """Check every call in order (and ask for approval), run the approved ones, then add the results
        to the conversation in the order the model made the calls."""
        decisions = [await self.decide(call) for call in calls]
        parallel, timeout = self.agent.parallel_tool_calls, self.agent.tool_timeout
        try:
            events = run_calls(self.step, decisions, parallel=parallel, default_timeout=timeout, record=self.record)
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
        result = RunResult(output, list(self.messages), self.steps, self.usage)
        if self.transcript is not None:
            self.transcript.end(output=policy.jsonable(output), usage=self.usage.__dict__)
        return result
