"""The agent's key scenarios through a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import json

from markup import call
from openai_server import OpenAIServer, ServerReply
from PIL import Image

from agentcpm import Agent, Client, ContentDelta, RunFinished, ToolFinished, tool
from agentcpm.transcript import Transcript

CALL = call("get_weather", location="Paris")
SECRET = "sk-test-never-write-me"

asked: list[str] = []


@tool
def get_weather(location: str) -> str:
    """Get the current weather.

    Args:
        location: City name.
    """
    asked.append(location)
    return f"Sunny in {location}, 21 C"


@tool
def screenshot() -> list:
    """Take a screenshot."""
    return ["The screen:", Image.new("RGB", (40, 30), "blue")]


def client_for(server: OpenAIServer, **kwargs) -> Client:
    return Client(base_url=server.base_url, model=server.model, **kwargs)


def test_tool_loop_with_markup_in_content_streamed_over_sse(openai_server):
    asked.clear()
    openai_server.push(CALL, "It is sunny in Paris.")
    agent = Agent(client_for(openai_server), tools=[get_weather], system="Be brief.")
    events = list(agent.stream("What's the weather in Paris?"))

    result = events[-1].result
    assert isinstance(events[-1], RunFinished) and result.output == "It is sunny in Paris."
    assert asked == ["Paris"]
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "It is sunny in Paris."
    assert result.usage.requests == 2 and result.usage.prompt_tokens > 0
    first, second = openai_server.requests
    assert first["tools"][0]["function"]["name"] == "get_weather"
    sent = second["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[-1]["content"] == "Sunny in Paris, 21 C"
    assert sent[-1]["tool_call_id"] == sent[2]["tool_calls"][0]["id"]


def test_structured_tool_calls_like_vllm_and_arun(openai_server):
    asked.clear()
    openai_server.push(
        ServerReply(tool_calls=[{"name": "get_weather", "arguments": {"location": "Oslo"}}]),
        ServerReply(tool_calls=[{"name": "get_weather", "arguments": '{"place": "Oslo"}'}]),
        "Cold in Oslo.",
    )
    agent = Agent(client_for(openai_server), tools=[get_weather])
    result = asyncio.run(agent.arun("Weather in Oslo?"))
    assert result.output == "Cold in Oslo."
    assert asked == ["Oslo"]
    invalid = openai_server.requests[2]["messages"][-1]["content"]
    assert "Invalid arguments for get_weather" in invalid and "place: unknown parameter" in invalid


def test_a_tool_image_reaches_the_server_in_the_next_request(openai_server):
    openai_server.push(call("screenshot"), "A blue screen.")
    result = Agent(client_for(openai_server), tools=[screenshot]).run("What is on screen?")
    assert result.output == "A blue screen."
    sent = openai_server.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[2]["content"] == "The screen:"
    parts = sent[3]["content"]
    image_urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(image_urls) == 1 and image_urls[0].startswith("data:image/")


def test_transcript_over_http_never_holds_the_api_key(tmp_path):
    path = tmp_path / "run.jsonl"
    with OpenAIServer([CALL, "Sunny."], api_key=SECRET) as server:
        agent = Agent(client_for(server, api_key=SECRET), tools=[get_weather])
        events = list(agent.stream("Weather?", transcript=path))
    assert any(isinstance(e, ToolFinished) and e.error is None for e in events)
    text = path.read_text()
    assert SECRET not in text
    assert all(json.loads(line)["type"] for line in text.splitlines())
    assert [m.role for m in Transcript.load(path)] == ["user", "assistant", "tool", "assistant"]


def test_a_5000_digit_integer_argument_goes_through_a_real_server_exactly(openai_server, tmp_path):
    from agentcpm.tools import int_text

    huge = 10**5000 + 1
    seen: list[int] = []

    @tool
    def count(n: int) -> str:
        """Count."""
        seen.append(n)
        return "counted"

    text = call("count", n=huge)  # all 5001 digits, as the model would write them
    structured = ServerReply(tool_calls=[{"name": "count", "arguments": '{"n": ' + int_text(huge) + "}"}])
    openai_server.push(text, "one", structured, "two")
    agent = Agent(client_for(openai_server), tools=[count])
    assert agent.run("go", transcript=tmp_path / "t.jsonl").output == "one"  # was: ValueError in the next request
    assert agent.run("again").output == "two"  # structured tool_calls from the server: was a ValueError too
    assert len(seen) == 2 and seen[0] == huge and seen[1] == huge
    sent = openai_server.requests[1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent == '{"n": ' + int_text(huge) + "}"  # the history sent back holds the exact number


def test_an_answer_cut_off_by_the_server_is_not_taken_as_the_final_answer(openai_server):
    import pytest

    from agentcpm.errors import IncompleteAnswerError, ResponseError

    asked.clear()
    openai_server.push(CALL, ServerReply("It is sunny in Paris, and tomorrow", chunk_size=4, cut_after=3))
    agent = Agent(client_for(openai_server), tools=[get_weather])
    with pytest.raises(IncompleteAnswerError, match="broke off") as caught:
        agent.run("Weather in Paris?")
    assert isinstance(caught.value, ResponseError)
    assert asked == ["Paris"]  # the first step ran; the broken answer is the last message, not an output
    messages = caught.value.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[-1].text and "It is sunny in Paris, and tomorrow".startswith(messages[-1].text)


def test_a_call_cut_off_by_the_server_is_refused_with_a_generic_reason(openai_server):
    asked.clear()
    openai_server.push(ServerReply(CALL, chunk_size=8, cut_after=4), "I could not check.")
    result = Agent(client_for(openai_server), tools=[get_weather]).run("Weather in Paris?")
    assert asked == [] and result.output == "I could not check."
    refusal = result.messages[2].text
    assert "was cut off before it was complete (the answer ended before the call did)" in refusal
    assert "token limit" not in refusal
