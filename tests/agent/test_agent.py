"""The agent loop, rule by rule, on a ScriptedBackend (raw model texts through the real parser)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Annotated, Literal

import pytest
from markup import call
from PIL import Image
from pydantic import BaseModel, Field

from agentcpm import (
    Agent,
    Client,
    Completed,
    Completion,
    ContentDelta,
    ImagePart,
    Message,
    Reply,
    RunFinished,
    ScriptedBackend,
    StepFinished,
    ToolCall,
    ToolFinished,
    ToolStarted,
    tool,
)
from agentcpm.agent import DEFAULT_FINAL_PROMPT
from agentcpm.errors import (
    AgentCancelled,
    ApprovalError,
    ConfigurationError,
    MaxStepsExceeded,
    OutputValidationError,
    RepeatedToolCallError,
    ToolRetriesExceeded,
)
from agentcpm.tools import DEFAULT_THREAD_LIMIT, int_text, set_thread_limit


def async_test(fn):
    """Run an async test on a fresh event loop."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def make(script: list, tools: list, **options) -> tuple[Agent, ScriptedBackend]:
    backend = ScriptedBackend(script)
    options.setdefault("approval", "allow")
    return Agent(Client(backend=backend), tools=tools, **options), backend


@tool
def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the current weather for a location.

    Args:
        location: City name.
        unit: Temperature unit.
    """
    return f"Sunny, 22 degrees {unit.upper()} in {location}"


def test_a_tool_call_then_an_answer():
    agent, backend = make([call("get_weather", location="Beijing"), "It is sunny in Beijing."], [get_weather])
    result = agent.run("What's the weather in Beijing?")

    assert result.output == "It is sunny in Beijing."
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    assert result.messages[2].text == "Sunny, 22 degrees C in Beijing"
    assert result.messages[2].tool_call_id == result.messages[1].tool_calls[0].id
    assert [s.index for s in result.steps] == [1, 2]
    assert result.steps[0].tool_results[0].text == "Sunny, 22 degrees C in Beijing"
    # The model saw the tools, then the tool result.
    assert backend.requests[0].tools[0]["function"]["name"] == "get_weather"
    assert backend.requests[1].messages[-1].role == "tool"
    usage = result.usage
    assert (usage.requests, usage.tool_calls) == (2, 1)
    assert usage.prompt_tokens == sum(s.usage.prompt_tokens for s in result.steps) > 0
    assert usage.completion_tokens == sum(s.usage.completion_tokens for s in result.steps) > 0
    assert usage.duration > 0


def test_system_prompt_and_options_reach_the_model():
    agent, backend = make(["Hi."], [], system="Be brief.", options={"max_tokens": 7})
    agent.run("Hello")
    request = backend.requests[0]
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[0].text == "Be brief."
    assert request.options.max_tokens == 7
    assert request.tools == []


def test_unknown_tool_gets_a_result_listing_the_available_ones():
    agent, _ = make([call("get_wether", location="Paris"), "Sorry."], [get_weather])
    result = agent.run("Weather in Paris?")
    tool_message = result.messages[2]
    assert "There is no tool named 'get_wether'" in tool_message.text
    assert "Available tools: get_weather." in tool_message.text
    assert result.steps[0].tool_results[0].is_error


def test_invalid_arguments_get_the_errors_and_the_schema_then_the_model_fixes_them():
    agent, _ = make(
        [call("get_weather", location="Paris", unit="kelvin"), call("get_weather", location="Paris"), "Done."],
        [get_weather],
    )
    result = agent.run("Weather in Paris?")
    first = result.messages[2].text
    assert "Invalid arguments for get_weather" in first
    assert "unit: Input should be 'c' or 'f'" in first
    assert '"enum": ["c", "f"]' in first  # the parameter schema, so the model can fix the call
    assert result.messages[4].text == "Sunny, 22 degrees C in Paris"
    assert result.output == "Done."


def test_retry_budget_per_tool_ends_the_run_with_a_clear_error():
    bad = call("get_weather", unit="kelvin")
    agent, _ = make([bad, bad, bad, "never reached"], [get_weather])
    with pytest.raises(ToolRetriesExceeded, match="get_weather 3 times in a row") as info:
        agent.run("Weather?")
    # The messages so far are on the error, ending with the last validation error.
    assert info.value.messages[-1].role == "tool"
    assert "Invalid arguments" in info.value.messages[-1].text


def test_retry_budget_resets_after_a_valid_call():
    bad, good = call("get_weather", unit="kelvin"), call("get_weather", location="Rome")
    agent, _ = make([bad, bad, good, bad, bad, "Fine."], [get_weather], tool_retries=2)
    assert agent.run("Weather?").output == "Fine."


def test_a_cut_off_call_is_never_executed():
    ran = []

    @tool
    def delete_everything(path: str) -> str:
        """Delete."""
        ran.append(path)
        return "deleted"

    cut = ToolCall(name="delete_everything", arguments={"path": "/"}, complete=False)
    agent, _ = make(
        [Completion(tool_calls=[cut], finish_reason="length"), "I stopped."],
        [delete_everything],
    )
    result = agent.run("Clean up")
    assert ran == []
    assert "was cut off before it was complete" in result.messages[2].text
    assert result.output == "I stopped."


@tool(requires_approval=True)
def transfer(amount: int) -> str:
    """Transfer money."""
    return f"sent {amount}"


@pytest.mark.parametrize(("approval", "expected"), [("allow", "sent 5"), ("deny", "did not allow transfer")])
def test_approval_allow_and_deny(approval, expected):
    agent, _ = make([call("transfer", amount=5), "ok"], [transfer], approval=approval)
    assert expected in agent.run("pay").messages[2].text


def test_approval_callable_sees_each_call_and_the_model_cannot_switch_it_off():
    asked: list[ToolCall] = []

    def approve(c: ToolCall) -> bool:
        asked.append(c)
        return c.arguments.get("amount") in (1, "1")

    script = [
        call("transfer", amount=1),
        call("transfer", amount=500),
        call("transfer", amount=2, requires_approval="false"),  # an attempt to opt out
        "done",
    ]
    agent, _ = make(script, [transfer], approval=approve)
    result = agent.run("pay")
    texts = [m.text for m in result.messages if m.role == "tool"]
    assert texts[0] == "sent 1"
    assert "did not allow" in texts[1]
    assert "requires_approval: unknown parameter" in texts[2]  # rejected, never executed
    assert [c.arguments["amount"] for c in asked] == ["1", "500"] or [c.arguments["amount"] for c in asked] == [1, 500]


@async_test
async def test_async_approval_callable():
    async def approve(c: ToolCall) -> bool:
        await asyncio.sleep(0)
        return False

    agent, _ = make([call("transfer", amount=1), "ok"], [transfer], approval=approve)
    result = await agent.arun("pay")
    assert "did not allow" in result.messages[2].text


def _record(log: dict[str, tuple[float, float]], name: str, start: float) -> None:
    log[name] = (start, time.perf_counter())


def test_async_tools_overlap_and_results_keep_call_order():
    log: dict[str, tuple[float, float]] = {}

    @tool
    async def slow(label: str, seconds: float) -> str:
        """Wait."""
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        _record(log, label, start)
        return label

    both = call("slow", label="a", seconds=0.3) + "\n" + call("slow", label="b", seconds=0.05)
    agent, _ = make([both, "ok"], [slow])
    events = list(agent.stream("go"))
    (a_start, a_end), (b_start, b_end) = log["a"], log["b"]
    assert b_start < a_end and a_start < b_end  # the two ran at the same time
    finished = [e.call.arguments["label"] for e in events if isinstance(e, ToolFinished)]
    assert finished == ["b", "a"]  # events as they finish...
    result = events[-1].result
    assert [m.text for m in result.messages if m.role == "tool"] == ["a", "b"]  # ...results in call order


def test_sync_tools_run_in_threads_concurrently():
    first_running = threading.Event()
    threads: dict[str, str] = {}

    @tool
    def first() -> str:
        """Waits for second to start."""
        threads["first"] = threading.current_thread().name
        first_running.set()
        return "first"

    @tool
    def second() -> str:
        """Runs only while first runs too."""
        threads["second"] = threading.current_thread().name
        return "second" if first_running.wait(5) else "alone"

    agent, _ = make([call("second") + call("first"), "ok"], [first, second])
    result = agent.run("go")
    assert [m.text for m in result.messages if m.role == "tool"] == ["second", "first"]
    assert threading.current_thread().name not in threads.values()


def test_parallel_tool_calls_off_runs_them_one_by_one():
    log: dict[str, tuple[float, float]] = {}

    @tool
    async def slow(label: str) -> str:
        """Wait."""
        start = time.perf_counter()
        await asyncio.sleep(0.05)
        _record(log, label, start)
        return label

    agent, _ = make([call("slow", label="a") + call("slow", label="b"), "ok"], [slow], parallel_tool_calls=False)
    agent.run("go")
    assert log["a"][1] <= log["b"][0]


@pytest.mark.parametrize("option", [{"sequential": True}, {"requires_approval": True}])
def test_sequential_tools_keep_the_order_of_the_calls(option):
    log: dict[str, tuple[float, float]] = {}

    @tool(**option)
    async def act(label: str, seconds: float) -> str:
        """An action on the world."""
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        _record(log, label, start)
        return label

    @tool
    async def look(label: str) -> str:
        """Read-only."""
        start = time.perf_counter()
        await asyncio.sleep(0)
        _record(log, label, start)
        return label

    answer = call("act", label="click", seconds=0.1) + call("act", label="type", seconds=0) + call("look", label="see")
    agent, _ = make([answer, "ok"], [act, look])
    events = list(agent.stream("go"))
    assert log["click"][1] <= log["type"][0] <= log["type"][1] <= log["see"][0]
    assert [e.call.arguments["label"] for e in events if isinstance(e, ToolFinished)] == ["click", "type", "see"]


def test_max_steps_ends_with_one_request_without_tools():
    loop_forever = [call("get_weather", location=f"city{i}") for i in range(3)]
    agent, backend = make([*loop_forever, "Best guess: sunny."], [get_weather], max_steps=3)
    result = agent.run("Weather?")
    assert result.output == "Best guess: sunny."
    assert len(backend.requests) == 4
    final = backend.requests[-1]
    assert final.tools == []
    assert final.messages[-1].role == "user" and final.messages[-1].text == DEFAULT_FINAL_PROMPT
    assert len(result.steps) == 4


def test_max_steps_final_prompt_is_configurable_or_off():
    agent, backend = make(
        [call("get_weather", location="x"), "Short."], [get_weather], max_steps=1, final_prompt="Now!"
    )
    assert agent.run("w").output == "Short."
    assert backend.requests[-1].messages[-1].text == "Now!"

    agent, _ = make([call("get_weather", location="x")], [get_weather], max_steps=1, final_prompt=None)
    with pytest.raises(MaxStepsExceeded, match="max_steps=1"):
        agent.run("w")


def test_the_same_call_three_times_in_a_row_is_not_run_and_insisting_ends_the_run():
    runs = []

    @tool
    def search(query: str) -> str:
        """Search."""
        runs.append(query)
        return "nothing"

    same = call("search", query="cats")
    agent, _ = make([same, same, same, "Giving up: nothing found."], [search])
    result = agent.run("find cats")
    assert runs == ["cats", "cats"]
    assert "already called search with exactly these arguments 2 times" in result.messages[6].text
    assert result.output == "Giving up: nothing found."

    runs.clear()
    agent, _ = make([same, same, same, same, "never"], [search])
    with pytest.raises(RepeatedToolCallError) as info:
        agent.run("find cats")
    assert runs == ["cats", "cats"]
    assert info.value.messages[-1].role == "tool"  # the step's results are in before the run ends


def test_repeat_limit_can_be_raised_or_disabled():
    @tool
    def scroll(direction: str) -> str:
        """Scroll."""
        return "scrolled"

    same = call("scroll", direction="down")
    agent, _ = make([same] * 5 + ["bottom"], [scroll], repeat_limit=None)
    result = agent.run("scroll to the bottom")
    assert [m.text for m in result.messages if m.role == "tool"] == ["scrolled"] * 5


def test_a_tool_that_raises_becomes_an_error_result_and_the_run_goes_on():
    @tool
    def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    agent, _ = make([call("divide", a=1, b=0), "Cannot divide by zero."], [divide])
    events = list(agent.stream("1/0?"))
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert finished.error == "ZeroDivisionError: division by zero"
    assert finished.result.is_error
    result = events[-1].result
    assert result.messages[2].text == "divide failed: ZeroDivisionError: division by zero"
    assert result.output == "Cannot divide by zero."


def test_a_timeout_error_raised_by_the_tool_is_its_own_error():
    @tool
    def fetch(url: str) -> str:
        """Fetch."""
        raise TimeoutError("the server did not answer")

    agent, _ = make([call("fetch", url="http://x"), "It timed out."], [fetch])
    result = agent.run("go")
    assert result.messages[2].text == "fetch failed: TimeoutError: the server did not answer"


def test_an_approval_callback_that_raises_refuses_the_call():
    def approve(c: ToolCall) -> bool:
        raise RuntimeError("no approver configured")

    agent, _ = make([call("transfer", amount=1), "ok"], [transfer], approval=approve)
    result = agent.run("pay")
    assert "asking for approval failed (RuntimeError: no approver configured)" in result.messages[2].text
    assert result.output == "ok"


def test_tool_timeout_for_async_and_sync_tools():
    @tool
    async def hang_async() -> str:
        """Never ends."""
        await asyncio.sleep(60)
        return "late"

    @tool(timeout=0.05)
    def hang_sync() -> str:
        """Ends too late."""
        time.sleep(0.5)
        return "late"

    agent, _ = make(
        [call("hang_async") + call("hang_sync"), "Both timed out."], [hang_async, hang_sync], tool_timeout=0.1
    )
    result = agent.run("go")
    texts = [m.text for m in result.messages if m.role == "tool"]
    assert texts == [
        "hang_async timed out after 0.1 s and was stopped; its result is lost.",
        "hang_sync timed out after 0.05 s and was stopped; its result is lost.",
    ]


@async_test
async def test_cancelling_the_task_cancels_tools_in_flight_and_keeps_the_messages():
    started, cancelled = asyncio.Event(), []

    @tool
    async def long_job() -> str:
        """Takes forever."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "done"

    agent, _ = make([call("long_job"), "never"], [long_job])
    task = asyncio.create_task(agent.arun("go"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(AgentCancelled) as info:
        await task
    assert cancelled == [True]
    messages = info.value.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[-1].text == "Cancelled by the user before it finished."


@async_test
async def test_cancelling_while_the_model_streams():
    agent, _ = make([Reply("a long answer " * 50, chunk_delay=0.05)], [])
    seen = asyncio.Event()

    async def consume() -> None:
        async for event in agent.astream("talk"):
            if isinstance(event, ContentDelta):
                seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 5)
    task.cancel()
    with pytest.raises(AgentCancelled) as info:
        await task
    assert [m.role for m in info.value.messages] == ["user"]


def test_a_tool_image_reaches_the_model_in_a_user_message_after_the_results():
    @tool
    def screenshot() -> list:
        """Take a screenshot."""
        return ["The screen:", Image.new("RGB", (64, 48), "blue")]

    agent, backend = make([call("screenshot"), "A blue screen."], [screenshot])
    result = agent.run("What is on screen?")
    sent = backend.requests[1].messages
    assert [m.role for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[2].text == "The screen:" and not sent[2].images  # no images inside the tool turn
    (image,) = sent[3].images
    assert image.open().size == (64, 48)
    assert "screenshot" in sent[3].text
    assert result.messages[2].images  # the full history keeps the image where the tool returned it


def test_keep_images_replaces_older_tool_images_with_placeholders():
    colors = ["red", "green", "blue", "white", "black"]
    shots = iter(colors)

    @tool
    def screenshot() -> Image.Image:
        """Take a screenshot."""
        return Image.new("RGB", (8, 8), next(shots))

    user_image = Image.new("RGB", (8, 8), "yellow")
    agent, backend = make([call("screenshot")] * 5 + ["done"], [screenshot], keep_images=2, repeat_limit=None)
    result = agent.run("watch", images=[user_image])

    last = backend.requests[-1].messages
    sent_images = [p for m in last for p in m.images]
    assert len(sent_images) == 3  # the user's image and the two newest screenshots
    assert [img.open().getpixel((0, 0)) for img in sent_images] == [(255, 255, 0), (255, 255, 255), (0, 0, 0)]
    # each dropped screenshot's placeholder is where it would have been: the user turn after the tool's results
    # (the tool's own text is unchanged, so a prefix cache keeps everything before that turn)
    assert all(m.text == "" for m in last if m.role == "tool")
    after_tools = [last[i + 1] for i, m in enumerate(last[:-1]) if m.role == "tool"]
    assert [m.text for m in after_tools] == [
        *(f"Image returned by the screenshot tool:\n[image from step {n} omitted]" for n in (1, 2, 3)),
        "Image returned by the screenshot tool:",
        "Image returned by the screenshot tool:",
    ]
    assert [len(m.images) for m in after_tools] == [0, 0, 0, 1, 1]
    # result.messages keeps every image
    assert sum(len(m.images) for m in result.messages) == 6


def test_max_images_per_request_caps_every_request():
    @tool
    def photos() -> list:
        """Three photos."""
        return [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]

    agent, backend = make([call("photos"), "ok"], [photos], keep_images=10, max_images_per_request=2)
    agent.run("look", images=[Image.new("RGB", (8, 8), "yellow")])
    sent = backend.requests[1].messages
    assert sum(len(m.images) for m in sent) == 2
    assert "[image from step 0 omitted]" in sent[0].text  # the oldest went first


class Weather(BaseModel):
    city: str
    temperature: float


def test_structured_output_tolerates_fences_and_re_asks_on_errors():
    agent, backend = make(
        ['{"city": "Paris"}', 'Here you go:\n```json\n{"city": "Paris", "temperature": 21.5}\n```'],
        [],
        output_type=Weather,
    )
    result = agent.run("Weather in Paris as JSON")
    assert result.output == Weather(city="Paris", temperature=21.5)
    assert '"temperature"' in backend.requests[0].messages[0].text  # the schema is in the system prompt
    re_ask = backend.requests[1].messages[-1]
    assert re_ask.role == "user" and "- temperature: field required" in re_ask.text
    assert "errors.pydantic.dev" not in re_ask.text


def test_structured_output_gives_up_after_output_retries():
    agent, _ = make(["not json", "still not", "nope"], [], output_type=Weather, output_retries=2)
    with pytest.raises(OutputValidationError, match="Weather"):
        agent.run("Weather?")


def test_stream_events_and_callbacks():
    seen = []
    agent, _ = make([call("get_weather", location="Oslo"), "Cold."], [get_weather], on_event=seen.append)
    events = list(agent.stream("Weather in Oslo?"))
    kinds = [e.type for e in events]
    assert kinds.index("tool.started") < kinds.index("tool.finished") < kinds.index("step.finished")
    assert kinds[-1] == "run.finished" and kinds.count("step.finished") == 2
    assert "content.delta" in kinds and "response.completed" in kinds and "tool_call.finished" in kinds
    assert seen == events
    started = next(e for e in events if isinstance(e, ToolStarted))
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert started.call.name == "get_weather" and finished.error is None and finished.duration >= 0
    step = next(e for e in events if isinstance(e, StepFinished))
    assert step.usage.prompt_tokens > 0 and step.record.tool_results[0].text.startswith("Sunny")
    assert isinstance(events[-1], RunFinished) and events[-1].result.output == "Cold."


@async_test
async def test_astream_and_arun_with_async_callbacks():
    seen = []

    async def record(event):
        seen.append(event.type)

    agent, _ = make([call("get_weather", location="Oslo"), "Cold."], [get_weather], on_event=record)
    events = [e.type async for e in agent.astream("Weather in Oslo?")]
    assert events == seen and events[-1] == "run.finished"
    agent, _ = make(["Hi."], [])
    assert (await agent.arun("hello")).output == "Hi."


def test_history_continues_a_conversation():
    agent, backend = make(
        [call("get_weather", location="Oslo"), "Cold.", "Yes, bring a coat."], [get_weather], system="S"
    )
    first = agent.run("Weather in Oslo?")
    second = agent.run("Should I bring a coat?", history=first.messages)
    assert second.output == "Yes, bring a coat."
    sent = backend.requests[-1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert second.steps[0].index == 3  # steps count the whole conversation


def test_unanswered_calls_in_history_run_first():
    pending = Message.assistant("", [ToolCall(id="call_1", name="get_weather", arguments={"location": "Lima"})])
    agent, backend = make(["Warm in Lima."], [get_weather])
    result = agent.run(history=[Message("user", "Weather in Lima?"), pending])
    assert result.messages[2].role == "tool" and result.messages[2].tool_call_id == "call_1"
    assert backend.requests[0].messages[-1].text == "Sunny, 22 degrees C in Lima"
    assert result.output == "Warm in Lima."


@async_test
async def test_sync_run_and_stream_work_inside_a_running_event_loop():
    agent, _ = make(["Hi.", "Hi again."], [])
    assert agent.run("hello").output == "Hi."
    events = list(agent.stream("hello"))  # driven on a worker thread with its own loop, as Client.stream
    assert events[-1].type == "run.finished" and events[-1].result.output == "Hi again."


def test_plain_functions_are_wrapped_and_bad_configuration_is_refused():
    def now() -> str:
        """The time."""
        return "noon"

    agent, _ = make([call("now"), "It is noon."], [now])
    assert agent.run("time?").messages[2].text == "noon"
    with pytest.raises(ConfigurationError):
        make([], [], max_steps=0)
    with pytest.raises(ConfigurationError):
        make([], [], approval="maybe")
    with pytest.raises(ConfigurationError, match="nothing to run"):
        make([], [])[0].run()


def test_a_tool_returning_a_broken_image_is_an_error_result():
    @tool
    def broken() -> ImagePart:
        """A corrupt image."""
        return ImagePart(b"not an image")

    agent, _ = make([call("broken"), "It failed."], [broken])
    result = agent.run("go")
    assert result.messages[2].text.startswith("broken failed: ImageError")


def test_a_backend_failure_mid_run_keeps_its_type_and_carries_the_messages():
    from agentcpm.errors import ServerError

    agent, _ = make([call("get_weather", location="Rome"), ServerError("503 from the server", 503)], [get_weather])
    with pytest.raises(ServerError) as info:
        agent.run("Weather in Rome?")
    assert [m.role for m in info.value.messages] == ["user", "assistant", "tool"]


def test_model_events_come_from_the_client():
    agent, _ = make([Reply("Hello there.", chunk_size=3)], [])
    events = list(agent.stream("hi"))
    text = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert text == "Hello there."
    assert sum(isinstance(e, Completed) for e in events) == 1


# ---------------------------------------------------------------------------- hardening (issue 10)


@pytest.mark.parametrize("finish_reason", ["tool_calls", None, "stop"])
def test_a_call_marked_incomplete_is_never_executed_whatever_the_finish_reason(finish_reason):
    """A stream cut before the call's closing markup (the remote backend marks such calls complete=False)."""
    ran = []

    @tool
    def remove(path: str) -> str:
        """Remove a path."""
        ran.append(path)
        return "removed"

    cut = ToolCall(name="remove", arguments={"path": "/home/user"}, complete=False)
    whole = ToolCall(name="remove", arguments={"path": "/tmp/x"})
    agent, _ = make([Completion(tool_calls=[cut, whole], finish_reason=finish_reason), "I stopped."], [remove])
    result = agent.run("Clean up")
    assert ran == ["/tmp/x"]
    assert "cut off before it was complete" in result.messages[2].text
    assert result.messages[3].text == "removed"


def test_an_incomplete_call_left_unanswered_in_history_is_not_executed_on_resume():
    ran = []

    @tool
    def remove(path: str) -> str:
        """Remove a path."""
        ran.append(path)
        return "removed"

    cut = ToolCall(name="remove", arguments={"path": "/home/us"}, complete=False)
    history = [Message("user", "Clean up"), Message("assistant", "", tool_calls=[cut])]
    agent, _ = make(["Stopped."], [remove])
    result = agent.run(history=history)
    assert ran == []
    assert "cut off before it was complete" in result.messages[2].text


@pytest.mark.parametrize(
    ("answer", "runs"),
    [
        (True, True),
        ("y", True),
        ("yes", True),
        (" YES\n", True),
        (False, False),
        (None, False),
        ("no", False),
        ("n", False),
        ("", False),
        ("false", False),
        ("not yes", False),
        ("yes please", False),  # not an explicit yes: never run on an ambiguous answer
    ],
)
def test_approval_runs_only_on_an_explicit_yes(answer, runs):
    ran = []

    @tool(requires_approval=True)
    def pay(amount: int) -> str:
        """Pay."""
        ran.append(amount)
        return f"sent {amount}"

    agent, _ = make([call("pay", amount=5), "ok"], [pay], approval=lambda c: answer)
    result = agent.run("pay")
    assert ran == ([5] if runs else [])
    assert ("sent 5" if runs else "did not allow pay") in result.messages[2].text


@pytest.mark.parametrize("answer", [1, 0, {"ok": True}, ["yes"], object()])
def test_an_approval_answer_that_is_neither_bool_nor_string_raises_approval_error(answer):
    ran = []

    @tool(requires_approval=True)
    def pay(amount: int) -> str:
        """Pay."""
        ran.append(amount)
        return "sent"

    async def approve(c: ToolCall):
        return answer

    agent, _ = make([call("pay", amount=5), "ok"], [pay], approval=approve)
    with pytest.raises(ApprovalError, match="return True to allow") as caught:
        agent.run("pay")
    assert ran == []
    assert caught.value.messages[-1].tool_calls[0].name == "pay"


def test_the_terminal_approval_prompt_escapes_bidi_and_zero_width_characters(monkeypatch):
    prompts: list[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        return "n"

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr("agentcpm.agent.approval._stdin_is_a_terminal", lambda: True)

    @tool(requires_approval=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        return "deleted"

    hostile = "notes\u202etxt.exe\u200b\u2066\x1b[2J\u3164\ufe0f"
    agent, _ = make([call("delete_file", path=hostile), "ok"], [delete_file], approval="ask")
    result = agent.run("tidy up")
    assert "did not allow" in result.messages[2].text
    (prompt,) = prompts
    assert prompt.startswith("Allow delete_file(path='notes") and prompt.endswith("? [y/N] ")
    for char in "\u202e\u200b\u2066\x1b\u3164\ufe0f":
        assert char not in prompt
    for escape in ("\\u202e", "\\u200b", "\\u2066", "\\x1b", "\\u3164", "\\ufe0f"):
        assert escape in prompt


def test_a_5000_digit_integer_argument_never_crashes_the_run():
    huge = 10**5000 + 3
    seen = []

    @tool
    def square(n: int) -> str:
        """Square a number."""
        seen.append(n)
        return "squared"

    @tool
    def small(n: Annotated[int, Field(le=10)]) -> str:
        """At most ten."""
        return "small"

    script = [call("square", n=int_text(huge)), call("small", n=int_text(huge)), "done"]
    agent, _ = make(script, [square, small])
    result = agent.run("go")
    assert result.output == "done"
    assert len(seen) == 1 and seen[0] == huge  # accepted exactly
    refused = result.messages[4].text  # a normal validation error fed back to the model
    assert "Invalid arguments for small" in refused and "less than or equal to 10" in refused
    assert "characters)" in refused and len(refused) < 2000  # the echoed input is shortened


def test_600_parallel_sync_calls_use_a_bounded_pool_of_threads():
    before = threading.active_count()
    peak = [0]
    lock = threading.Lock()

    @tool
    def work(i: int) -> int:
        """Work."""
        with lock:
            peak[0] = max(peak[0], threading.active_count())
        time.sleep(0.002)
        return i

    many = "".join(call("work", i=i) for i in range(600))
    agent, _ = make([many, "done"], [work])
    result = agent.run("go")
    assert [m.text for m in result.messages if m.role == "tool"] == [str(i) for i in range(600)]
    assert peak[0] <= before + DEFAULT_THREAD_LIMIT  # was 484 new threads
    set_thread_limit(4)
    try:
        peak[0] = 0
        before = threading.active_count()
        agent, _ = make([many, "done"], [work])
        assert agent.run("go").output == "done"
        assert peak[0] <= before + 4
    finally:
        set_thread_limit(None)


def test_approval_ask_without_a_terminal_refuses_and_never_reads_stdin(monkeypatch):
    def fake_input(prompt: str) -> str:
        raise AssertionError("library code read stdin")

    monkeypatch.setattr("builtins.input", fake_input)  # pytest's stdin is not a TTY
    ran = []

    @tool(requires_approval=True)
    def pay(amount: int) -> str:
        """Pay."""
        ran.append(amount)
        return "paid"

    agent, _ = make([call("pay", amount=5), "ok"], [pay], approval="ask")
    result = agent.run("pay")
    assert ran == [] and result.output == "ok"
    refusal = result.messages[2].text
    assert "no terminal to ask" in refusal and 'approval="allow"' in refusal
