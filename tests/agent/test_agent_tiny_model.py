"""The agent's key scenarios through the in-process backend on the tiny MiniCPM-V 4.6 (tests/tiny_model.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image
from tiny_model import FINAL_ANSWER, WEATHER_CALL, WEATHER_QUESTION, build_tiny_model

from agentcpm import Agent, Client, ContentDelta, RunFinished, StepFinished, ToolFinished, ToolStarted, tool
from agentcpm.transcript import Transcript

pytestmark = pytest.mark.slow

FINAL_PROMPT = "Answer now."
IMAGE_ANSWER = "I saw a blue picture."
MAX_TOKENS = 112  # the byte-level tiny tokenizer: one token per character of the scripted call
PICTURE = Image.new("RGB", (64, 48), "blue")


@pytest.fixture(scope="module")
def client(scripted_model_path: Path) -> Client:
    return Client(model=str(scripted_model_path), device="cpu")


@pytest.fixture(scope="module")
def image_client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    """The weather question gets a call; the final prompt (asked after the tool's image) gets an answer."""
    replies = {WEATHER_QUESTION: WEATHER_CALL, FINAL_PROMPT: IMAGE_ANSWER}
    return Client(model=str(build_tiny_model(tmp_path_factory.mktemp("image_agent"), replies=replies)), device="cpu")


def weather_tool(log: list[str], with_image: bool):
    @tool
    def get_weather(city: str) -> list:
        """Get the weather.

        Args:
            city: City name.
        """
        log.append(city)
        parts: list = ["sunny, 21 C"]
        if with_image:
            parts.append(PICTURE)
        return parts

    return get_weather


def test_tool_loop_on_the_tiny_model(client, tmp_path):
    log: list[str] = []
    agent = Agent(client, tools=[weather_tool(log, with_image=False)], options={"max_tokens": MAX_TOKENS})

    async def collect() -> list:
        return [event async for event in agent.astream(WEATHER_QUESTION, transcript=tmp_path / "t.jsonl")]

    events = asyncio.run(collect())
    result = events[-1].result
    assert isinstance(events[-1], RunFinished)
    assert log == ["Paris"]
    assert result.output == FINAL_ANSWER
    kinds = [type(e) for e in events]
    assert kinds.index(ToolStarted) < kinds.index(ToolFinished) < kinds.index(StepFinished)
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == FINAL_ANSWER
    assert result.usage.requests == 2 and result.usage.completion_tokens > 0
    assert [m.role for m in Transcript.load(tmp_path / "t.jsonl")] == ["user", "assistant", "tool", "assistant"]


def test_a_tool_image_reaches_the_tiny_model(image_client):
    log: list[str] = []
    agent = Agent(
        image_client,
        tools=[weather_tool(log, with_image=True)],
        max_steps=1,
        final_prompt=FINAL_PROMPT,
        options={"max_tokens": MAX_TOKENS},
    )
    result = agent.run(WEATHER_QUESTION)
    assert log == ["Paris"]
    assert result.output == IMAGE_ANSWER
    # The final request carried the image: the same conversation without it is shorter by at least the
    # image's own tokens.
    sent = result.messages[:-1]
    without_image = [m.model_copy(update={"content": [p for p in m.content if p.type != "image"]}) for m in sent]
    text_only = image_client.chat(without_image, max_tokens=1).usage.prompt_tokens
    image_only = image_client.chat([{"role": "user", "content": [{"type": "image", "image": PICTURE}]}], max_tokens=1)
    bare = image_client.chat("", max_tokens=1)
    image_tokens = image_only.usage.prompt_tokens - bare.usage.prompt_tokens
    assert image_tokens > 0
    assert result.steps[-1].usage.prompt_tokens - text_only >= image_tokens
