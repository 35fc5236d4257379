"""The Client against a real ``transformers serve`` on 127.0.0.1, running the tiny scripted MiniCPM-V 4.6.

The server starts once for this module (tests/transformers_serve.py patches its processor loading, as
there is no torchvision here). Its model is scripted (tests/tiny_model.py): the weather question gets a
``get_weather`` call in markup inside ``content`` (transformers serve has no tool parser for this model),
a tool result gets the final answer, the thinking question gets reasoning then an answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tiny_model import FINAL_ANSWER, THINK_ANSWER, THINK_QUESTION, THINK_REASONING, WEATHER_QUESTION

from agentcpm import Client, Completed, ToolCallFinished, ToolCallStarted, ToolResult

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parents[1]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MAX_TOKENS = 200  # the tiny tokenizer is byte-level: the scripted call is about 90 tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(scripted_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base_url, model) of a running transformers serve."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # One torch thread: the tiny model's ops are microseconds, and on a busy CPU several threads per op
    # spend far longer waiting for each other (about 8x slower generation here).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(log.parent / "hf"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(HERE / "transformers_serve.py"), str(scripted_model_path)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start in 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1", str(scripted_model_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_tool_call_then_final_answer(served: tuple[str, str]) -> None:
    base_url, model = served
    with Client(base_url=base_url, model=model, max_tokens=MAX_TOKENS) as client:
        completion = client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL])
        assert client.backend.dialect is not None and client.backend.dialect.name == "transformers"  # type: ignore[attr-defined]
        assert [(c.name, c.arguments, c.complete, c.error) for c in completion.tool_calls] == [
            ("get_weather", {"city": "Paris"}, True, None)
        ]
        assert completion.finish_reason == "tool_calls"
        assert completion.content == ""
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0

        # The history goes back with the call as OpenAI tool_calls and the result as a tool message.
        call = completion.tool_calls[0]
        result = ToolResult(call_id=call.id, name=call.name, content="Sunny, 21 degrees.")
        history = [{"role": "user", "content": WEATHER_QUESTION}, completion.to_message(), result.to_message()]
        events = list(client.stream(history, tools=[WEATHER_TOOL]))
        final = events[-1]
        assert isinstance(final, Completed)
        assert final.completion.content == FINAL_ANSWER and not final.completion.tool_calls


def test_streamed_tool_call(served: tuple[str, str]) -> None:
    base_url, model = served
    with Client(base_url=base_url, model=model, dialect="transformers", max_tokens=MAX_TOKENS) as client:
        events = list(client.stream(WEATHER_QUESTION, tools=[WEATHER_TOOL]))
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCallStarted") < kinds.index("ToolCallFinished") < kinds.index(Completed.__name__)
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    finished = next(e for e in events if isinstance(e, ToolCallFinished))
    assert started.name == "get_weather" and finished.call.id == started.id
    completion = events[-1].completion  # type: ignore[union-attr]
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert completion.usage.time_to_first_token is not None


def test_thinking_async(served: tuple[str, str]) -> None:
    base_url, model = served

    async def ask() -> object:
        async with Client(base_url=base_url, model=model, max_tokens=MAX_TOKENS) as client:
            return await client.achat(THINK_QUESTION, thinking=True)

    completion = asyncio.run(ask())
    assert completion.reasoning == THINK_REASONING  # type: ignore[attr-defined]
    assert completion.content == THINK_ANSWER  # type: ignore[attr-defined]
