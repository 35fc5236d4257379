"""The Client's remote backend end to end, against a real HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import os
import threading
import time
from typing import Any

import markup
import pytest
from openai_server import OpenAIServer, ServerReply, error_reply
from PIL import Image

from agentcpm import Client, Completed, ContentDelta, ReasoningDelta, ToolCall, ToolCallStarted, ToolResult
from agentcpm.backends.remote import RemoteBackend, prompt_mode_messages
from agentcpm.errors import AuthenticationError, ConfigurationError, EndpointUnavailable, ResponseError
from agentcpm.types import Message, ToolCallFinished

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CALL = markup.call("get_weather", city="Paris", days=2)
VLLM_MODELS = [{"id": "openbmb/MiniCPM-V-4.6", "object": "model", "owned_by": "vllm", "max_model_len": 32768}]


def client_for(server: OpenAIServer, **options: Any) -> Client:
    backend_options = {k: options.pop(k) for k in ("dialect", "tool_mode", "max_retries", "model") if k in options}
    backend_options.setdefault("model", server.model)
    return Client(backend=RemoteBackend(server.base_url, backoff=0, **backend_options), **options)


def last(events: list[Any]) -> Any:
    assert isinstance(events[-1], Completed)
    return events[-1].completion


# ---------------------------------------------------------------------------- answers, every shape


def test_plain_answer_discovers_model_and_dialect() -> None:
    with OpenAIServer(["Hello!"], models=VLLM_MODELS) as server, Client(base_url=server.base_url) as client:
        completion = client.chat("hi", max_tokens=5, temperature=0.2, seed=1)
        backend = client.backend
        assert isinstance(backend, RemoteBackend)
        assert (backend.model, backend.dialect and backend.dialect.name) == ("openbmb/MiniCPM-V-4.6", "vllm")
        assert completion.content == "Hello!" and completion.finish_reason == "stop"
        assert client.model == "openbmb/MiniCPM-V-4.6"
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
        body = server.requests[0]
        assert body["model"] == "openbmb/MiniCPM-V-4.6" and body["messages"] == [{"role": "user", "content": "hi"}]
        assert (body["max_tokens"], body["temperature"], body["seed"]) == (5, 0.2, 1)
        assert body["stop_token_ids"] == [248044, 248046]
        assert server.log.count(("GET", "/v1/models")) == 1
        server.push("Again.")
        client.chat("again")
        assert server.log.count(("GET", "/v1/models")) == 1  # discovered once


@pytest.mark.parametrize("stream", [False, True])
def test_markup_in_content_is_parsed(openai_server: OpenAIServer, stream: bool) -> None:
    openai_server.push(ServerReply("Let me check.\n" + CALL))  # Ollama / llama.cpp: finish_reason "stop"
    client = client_for(openai_server, dialect="generic")
    if stream:
        events = list(client.stream("Weather?", tools=[WEATHER]))
        completion = last(events)
        assert [type(e).__name__ for e in events].count("ToolCallStarted") == 1
    else:
        completion = client.chat("Weather?", tools=[WEATHER])
    assert completion.content == "Let me check."
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("get_weather", {"city": "Paris", "days": 2})]
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_structured_tool_calls_use_the_schema(openai_server: OpenAIServer, stream: bool) -> None:
    reply = ServerReply(
        tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "days": "2"}'}]
    )
    openai_server.push(reply)
    client = client_for(openai_server, dialect="vllm")
    completion = last(list(client.stream("w", tools=[WEATHER]))) if stream else client.chat("w", tools=[WEATHER])
    (call,) = completion.tool_calls
    assert (call.id, call.name, call.arguments, call.error) == (
        "call_1",
        "get_weather",
        {"city": "Paris", "days": 2},
        None,
    )
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_both_structured_and_markup_never_count_twice(openai_server: OpenAIServer, stream: bool) -> None:
    reply = ServerReply(CALL, tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}])
    openai_server.push(reply)
    client = client_for(openai_server)
    if stream:
        events = list(client.stream("w", tools=[WEATHER]))
        assert sum(isinstance(e, ToolCallStarted) for e in events) == 1
        assert sum(isinstance(e, ToolCallFinished) for e in events) == 1
        completion = last(events)
    else:
        completion = client.chat("w", tools=[WEATHER])
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("get_weather", {"city": "Paris", "days": 2})]
    assert completion.content == ""


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_fields(openai_server: OpenAIServer, field: str, stream: bool) -> None:
    openai_server.push(ServerReply("The answer.", reasoning="Thinking hard.", reasoning_field=field))
    client = client_for(openai_server)
    if stream:
        events = list(client.stream("q", thinking=True))
        assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Thinking hard."
        assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "The answer."
        completion = last(events)
    else:
        completion = client.chat("q", thinking=True)
    assert (completion.reasoning, completion.content) == ("Thinking hard.", "The answer.")
    assert openai_server.requests[0]["chat_template_kwargs"] == {"enable_thinking": True}


@pytest.mark.parametrize("stream", [False, True])
def test_think_markup_in_content(openai_server: OpenAIServer, stream: bool) -> None:
    # With thinking on, the prompt ends inside <think>: a server without a reasoning parser returns the rest.
    openai_server.push(ServerReply("Hmm, Paris.\n</think>\n\nIt is sunny.", chunk_size=3))
    client = client_for(openai_server, dialect="ollama")
    completion = last(list(client.stream("q", thinking=True))) if stream else client.chat("q", thinking=True)
    assert (completion.reasoning, completion.content) == ("Hmm, Paris.", "It is sunny.")
    assert "chat_template_kwargs" not in openai_server.requests[0]  # Ollama reads no such field


def test_stream_without_done_and_usage(openai_server: OpenAIServer) -> None:
    openai_server.push(ServerReply("Hello there, friend.", done=False, chunk_size=2))
    events = list(client_for(openai_server, dialect="vllm").stream("hi"))
    completion = last(events)
    assert completion.content == "Hello there, friend."
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "Hello there, friend."
    assert openai_server.requests[0]["stream_options"] == {"include_usage": True}
    assert completion.usage.completion_tokens > 0 and completion.usage.time_to_first_token is not None


@pytest.mark.parametrize("structured", [False, True])
def test_tool_call_started_as_soon_as_the_name_is_known(openai_server: OpenAIServer, structured: bool) -> None:
    # The connection drops right after the function name: ToolCallStarted must already have been yielded.
    if structured:
        reply = ServerReply(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}], drop_after=2)
    else:
        # The first chunk ends where the first parameter starts: the name is known, the arguments are not.
        reply = ServerReply(CALL, chunk_size=CALL.index("<parameter="), drop_after=2)
    openai_server.push(reply)
    events: list[Any] = []
    with pytest.raises(ResponseError, match="dropped mid-answer"):
        for event in client_for(openai_server, max_retries=0).stream("w", tools=[WEATHER]):
            events.append(event)
    assert [(type(e).__name__, e.name) for e in events] == [("ToolCallStarted", "get_weather")]
    assert len(openai_server.requests) == 1  # a stream that already delivered data is not retried


# ---------------------------------------------------------------------------- what goes out


def png_bytes(size: tuple[int, int] = (64, 48), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_go_as_data_urls_and_urls_pass_through(openai_server: OpenAIServer, tmp_path: Any) -> None:
    path = tmp_path / "shot.png"
    path.write_bytes(png_bytes())
    openai_server.push("Two images.", "Still two.")
    client = client_for(openai_server, dialect="vllm")
    first = client.chat("Compare.", images=[path, "https://example.com/cat.jpg"], downsample_mode="4x")
    history = [Message.user("Compare.", images=[path, "https://example.com/cat.jpg"]), first.to_message()]
    client.chat([*history, Message.user("And now?", images=[png_bytes(color="blue")])], max_slice_nums=4)
    first_body, second_body = openai_server.requests
    parts = first_body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    header, data = parts[0]["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 48)
    assert parts[1]["image_url"]["url"] == "https://example.com/cat.jpg"
    assert first_body["mm_processor_kwargs"] == {"downsample_mode": "4x"}
    assert second_body["mm_processor_kwargs"] == {"max_slice_nums": 4}
    assert (
        sum(p["type"] == "image_url" for m in second_body["messages"] for p in m["content"] if isinstance(p, dict)) == 3
    )


def test_history_tool_calls_and_tool_images(openai_server: OpenAIServer) -> None:
    openai_server.push("Done.")
    call = ToolCall(id="call_9", name="get_weather", arguments={"city": "Paris"})
    result = ToolResult(call_id="call_9", name="get_weather", content=["Sunny.", png_bytes()])
    history = [Message.user("Weather?"), Message.assistant("", [call]), result.to_message()]
    client_for(openai_server).chat(history, tools=[WEATHER])
    messages = openai_server.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[1]["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    assert messages[2] == {"role": "tool", "content": "Sunny.", "tool_call_id": "call_9", "name": "get_weather"}
    image_turn = messages[3]["content"]
    assert image_turn[0] == {"type": "text", "text": "Image returned by the get_weather tool:"}
    assert image_turn[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert openai_server.requests[0]["tools"] == [WEATHER]


# ---------------------------------------------------------------------------- tool modes


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    from tiny_model import CHAT_TEMPLATE
    from transformers.utils.chat_template_utils import render_jinja_template

    for message in messages:  # servers hand the template mappings, as they decode JSON arguments first
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    rendered, _ = render_jinja_template(
        [messages], tools=tools, chat_template=CHAT_TEMPLATE, add_generation_prompt=True
    )
    return rendered[0]


def test_prompt_mode_renders_exactly_like_the_template_with_tools() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments={"city": "Paris", "days": 2})
    conversation = [
        Message.system("Be brief."),
        Message.user("Weather in Paris and Rome?"),
        Message.assistant("Checking.", [call, ToolCall(id="c2", name="get_weather", arguments={"city": "Rome"})]),
        Message("tool", "Sunny.", tool_call_id="c1", name="get_weather"),
        Message("tool", "Rain.", tool_call_id="c2", name="get_weather"),
        Message.user("Thanks. And tomorrow?"),
    ]
    native = render([m.to_openai() for m in conversation], [WEATHER])
    in_prompt = render([m.to_openai() for m in prompt_mode_messages(conversation, [WEATHER])], None)
    assert in_prompt == native
    no_system = conversation[1:2]
    assert render([m.to_openai() for m in prompt_mode_messages(no_system, [WEATHER])], None) == render(
        [m.to_openai() for m in no_system], [WEATHER]
    )


def test_ollama_gets_tools_in_the_prompt(openai_server: OpenAIServer) -> None:
    openai_server.models = [{"id": "minicpm-v-4.6:latest", "object": "model", "owned_by": "library"}]
    openai_server.push(CALL)
    with Client(backend=RemoteBackend(openai_server.base_url)) as client:
        completion = client.chat("Weather?", tools=[WEATHER])
        assert client.backend.dialect.name == "ollama"  # type: ignore[attr-defined]
    body = openai_server.requests[0]
    assert body["model"] == "minicpm-v-4.6:latest"
    assert "tools" not in body and "stop_token_ids" not in body
    assert body["messages"][0]["role"] == "system" and '"name": "get_weather"' in body["messages"][0]["content"]
    assert completion.tool_calls[0].arguments == {"city": "Paris", "days": 2}


def test_auto_switches_to_prompt_mode_when_tools_are_refused(openai_server: OpenAIServer) -> None:
    openai_server.push(
        error_reply(400, "registry.ollama.ai/library/minicpm-v:latest does not support tools"), CALL, CALL
    )
    client = client_for(openai_server, dialect="generic")
    assert client.chat("w", tools=[WEATHER]).tool_calls[0].name == "get_weather"
    client.chat("w", tools=[WEATHER])
    first, second, third = openai_server.requests
    assert "tools" in first and "tools" not in second and "tools" not in third  # remembered
    assert second["messages"][0]["content"].startswith("# Tools\n\nYou have access to the following functions:")


def test_native_mode_never_switches(openai_server: OpenAIServer) -> None:
    openai_server.push(error_reply(400, "this model does not support tools"))
    from agentcpm.errors import BadRequestError

    with pytest.raises(BadRequestError, match="does not support tools"):
        client_for(openai_server, tool_mode="native").chat("w", tools=[WEATHER])
    assert len(openai_server.requests) == 1


# ---------------------------------------------------------------------------- dialects and discovery


def test_refused_field_is_dropped_remembered_and_retried_once(openai_server: OpenAIServer) -> None:
    # transformers serve's answer to a field it does not know.
    openai_server.push(error_reply(422, "Unexpected fields in the request: {'stop_token_ids'}"), "ok", "ok again")
    client = client_for(openai_server, dialect="generic")
    assert client.chat("hi").content == "ok"
    assert client.chat("hi").content == "ok again"
    assert ["stop_token_ids" in body for body in openai_server.requests] == [True, False, False]


@pytest.mark.parametrize(
    ("dialect", "present", "absent"),
    [
        ("vllm", {"chat_template_kwargs", "mm_processor_kwargs", "stop_token_ids", "stream_options"}, set()),
        ("sglang", {"chat_template_kwargs", "stop_token_ids", "stream_options"}, {"mm_processor_kwargs"}),
        ("llamacpp", {"chat_template_kwargs", "stream_options"}, {"stop_token_ids", "mm_processor_kwargs"}),
        ("ollama", {"stream_options"}, {"chat_template_kwargs", "stop_token_ids", "mm_processor_kwargs"}),
        ("transformers", {"chat_template_kwargs"}, {"stop_token_ids", "stream_options", "mm_processor_kwargs"}),
    ],
)
def test_knobs_go_where_each_server_reads_them(
    openai_server: OpenAIServer, dialect: str, present: set[str], absent: set[str]
) -> None:
    openai_server.push("ok")
    client = client_for(openai_server, dialect=dialect)
    list(client.stream("hi", thinking=False, downsample_mode="16x", max_slice_nums=36, use_image_id=True))
    body = openai_server.requests[0]
    assert present <= body.keys() and not absent & body.keys()
    if "mm_processor_kwargs" in present:
        assert body["mm_processor_kwargs"] == {"downsample_mode": "16x", "max_slice_nums": 36, "use_image_id": True}


def test_discovery_failures_are_clear() -> None:
    two = [{"id": "a", "owned_by": "vllm"}, {"id": "b", "owned_by": "vllm"}]
    with OpenAIServer(models=two) as server, pytest.raises(ConfigurationError, match="several models"):
        Client(base_url=server.base_url).chat("hi")
    broken = ServerReply(status=500, body="Internal Server Error", headers={"Server": "uvicorn"})
    with OpenAIServer(["ok"], models=broken) as server:
        with pytest.raises(ConfigurationError, match="model="):
            Client(base_url=server.base_url).chat("hi")
        client = Client(base_url=server.base_url, model="m")
        assert client.chat("hi").content == "ok"
        assert client.backend.dialect.name == "generic"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- failures over a real socket


def test_nothing_listening() -> None:
    with OpenAIServer() as server:
        url = server.base_url
    client = Client(backend=RemoteBackend(url, model="m", max_retries=1, backoff=0))
    with pytest.raises(EndpointUnavailable, match=r"nothing answers at http://127\.0\.0\.1") as info:
        client.chat("hi")
    assert "docs/servers.md" in str(info.value)


def test_api_key_sent_and_never_printed() -> None:
    with OpenAIServer(["ok"], api_key="sk-right") as server:
        assert Client(base_url=server.base_url, model="m", api_key="sk-right").chat("hi").content == "ok"
        with pytest.raises(AuthenticationError) as info:
            Client(base_url=server.base_url, model="m", api_key="sk-wrong-secret").chat("hi")
    assert "AGENTCPM_API_KEY" in str(info.value) and "sk-wrong-secret" not in str(info.value)
    assert server.request_headers[0]["authorization"] == "Bearer sk-right"


def test_dropped_connection_is_retried_then_reported() -> None:
    with OpenAIServer([ServerReply(drop_after=0), "ok"]) as server:
        assert client_for(server).chat("hi").content == "ok"
        assert len(server.requests) == 2


# ---------------------------------------------------------------------------- concurrency and lifetime


def test_threads_share_one_client(openai_server: OpenAIServer) -> None:
    openai_server.default = lambda body: f"echo {body['messages'][0]['content']}"
    client = client_for(openai_server)
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        results[i] = client.chat(f"q{i}").content if i % 2 else last(list(client.stream(f"q{i}"))).content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: f"echo q{i}" for i in range(16)}
    client.close()


def test_async_calls_and_context_manager(openai_server: OpenAIServer) -> None:
    openai_server.default = lambda body: f"echo {body['messages'][0]['content']}"

    async def main() -> list[str]:
        async with client_for(openai_server) as client:
            answers = await asyncio.gather(*(client.achat(f"q{i}") for i in range(20)))
            streamed = [e async for e in client.astream("s")]
            return [a.content for a in answers] + [last(streamed).content]

    assert asyncio.run(main()) == [f"echo q{i}" for i in range(20)] + ["echo s"]
    assert asyncio.run(main())[-1] == "echo s"  # a new event loop gets its own connections
    deadline = time.monotonic() + 5
    while openai_server.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert openai_server.open_connections == 0  # closed with the client: nothing leaked


def test_abandoned_stream_closes_its_connection(openai_server: OpenAIServer) -> None:
    # What Ctrl-C in the middle of a long answer does: the generator is closed, the connection with it.
    openai_server.push(ServerReply("word " * 400, chunk_size=5, chunk_delay=0.01))
    client = client_for(openai_server)
    stream = client.stream("Tell me a long story.")
    assert isinstance(next(stream), ContentDelta)
    stream.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while openai_server.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert openai_server.open_connections == 0
    openai_server.push("next")
    assert client.chat("hi").content == "next"
    client.close()


def test_stream_body_is_valid_json_for_every_request(openai_server: OpenAIServer) -> None:
    openai_server.push("ok")
    list(client_for(openai_server).stream([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]))
    assert json.dumps(openai_server.requests[0])  # recorded as parsed JSON
    assert openai_server.requests[0]["stream"] is True


def test_images_are_encoded_once_per_conversation(openai_server: OpenAIServer) -> None:
    from unittest import mock

    from agentcpm import ImagePart

    screenshot = ImagePart(png_bytes((800, 600), "green"))
    openai_server.push("one", "two")
    client = client_for(openai_server)
    history = [Message.user("What is on screen?", images=[screenshot])]
    with mock.patch.object(ImagePart, "data_url", autospec=True, side_effect=ImagePart.data_url) as encode:
        history.append(client.chat(history).to_message())
        client.chat([*history, Message.user("And now?")])
    assert encode.call_count == 1  # the second request reuses the first encoding
    first, second = (body["messages"][0]["content"][0]["image_url"]["url"] for body in openai_server.requests)
    assert first == second and first.startswith("data:image/")


def test_timeout_option(openai_server: OpenAIServer) -> None:
    from agentcpm.errors import ServerError

    openai_server.push(ServerReply("late", delay=2.0), ServerReply("late", delay=2.0))
    with pytest.raises(ServerError, match="in time"):
        client_for(openai_server, max_retries=0).chat("hi", timeout=0.3)
    with pytest.raises(ServerError, match="in time"):
        list(client_for(openai_server, max_retries=0, timeout=0.3).stream("hi"))


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer(["ok", "ok"], api_key="sk-env") as server:
        monkeypatch.setenv("AGENTCPM_BASE_URL", server.base_url)
        monkeypatch.setenv("AGENTCPM_MODEL", "my-model")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        monkeypatch.delenv("AGENTCPM_API_KEY", raising=False)
        with Client() as client:
            assert client.chat("hi").content == "ok"
        monkeypatch.setenv("AGENTCPM_API_KEY", "sk-wrong")  # AGENTCPM_API_KEY wins over OPENAI_API_KEY
        with Client() as client, pytest.raises(AuthenticationError):
            client.chat("hi")
    assert server.requests[0]["model"] == "my-model"
    assert server.request_headers[0]["authorization"] == "Bearer sk-env"


# ---------------------------------------------------------------------------- faults: cut streams, deadlines
REMOVE_CALL = markup.call("remove", path="/home/user/project")
REMOVE_SCHEMA = {
    "type": "function",
    "function": {
        "name": "remove",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
}


def cut_markup_reply(cut_eof: bool) -> ServerReply:
    # chunk 0 is the role; each later chunk 19 characters: stop right after "/home/user", inside the call.
    sent = REMOVE_CALL.index("/project")
    assert sent % 19 == 0
    return ServerReply(REMOVE_CALL, chunk_size=19, cut_after=1 + sent // 19, cut_eof=cut_eof)


@pytest.mark.parametrize("cut_eof", [False, True], ids=["chunked-end", "eof"])
def test_a_stream_cut_inside_a_tool_call_is_incomplete(openai_server: OpenAIServer, cut_eof: bool) -> None:
    openai_server.push(cut_markup_reply(cut_eof), cut_markup_reply(cut_eof))
    client = client_for(openai_server)
    completion = last(list(client.stream("clean up", tools=[REMOVE_SCHEMA])))
    assert completion.finish_reason == "incomplete"
    (call,) = completion.tool_calls
    assert call.name == "remove" and not call.complete
    assert "stream ended before the server said the answer was finished" in (call.error or "")

    async def run() -> Any:
        async with client_for(openai_server) as aclient:
            return last([e async for e in aclient.astream("clean up", tools=[REMOVE_SCHEMA])])

    completion = asyncio.run(run())
    assert completion.finish_reason == "incomplete" and not completion.tool_calls[0].complete


def test_a_cut_stream_never_runs_the_cut_call(openai_server: OpenAIServer) -> None:
    from agentcpm import Agent

    removed: list[str] = []

    def remove(path: str) -> str:
        """Delete a file or folder."""
        removed.append(path)
        return "removed"

    openai_server.push(cut_markup_reply(False), "I could not finish the call.")
    result = Agent(client_for(openai_server), tools=[remove]).run("clean up /home/user/project")
    assert removed == []
    assert result.output == "I could not finish the call."
    tool_turn = openai_server.requests[1]["messages"][-1]
    assert "cut off" in json.dumps(tool_turn)  # the model is told the call was not run


def test_structured_calls_of_a_cut_stream_are_incomplete(openai_server: OpenAIServer) -> None:
    arguments = json.dumps({"path": "/home/user/project"})
    whole = 2 + -(-len(arguments) // 4)  # role, name, then the arguments 4 characters a chunk
    calls = [{"name": "remove", "arguments": arguments}]
    for cut in (whole - 3, whole):  # inside the arguments; after all of them, before the finish_reason
        openai_server.push(ServerReply(tool_calls=calls, chunk_size=4, cut_after=cut))
        completion = last(list(client_for(openai_server).stream("clean up", tools=[REMOVE_SCHEMA])))
        assert completion.finish_reason == "incomplete"
        (call,) = completion.tool_calls
        assert call.name == "remove" and not call.complete and call.error
    # The same stream with its finish_reason (and no [DONE], like transformers serve) is complete.
    openai_server.push(ServerReply(tool_calls=calls, chunk_size=4, done=False))
    completion = last(list(client_for(openai_server).stream("clean up", tools=[REMOVE_SCHEMA])))
    assert completion.finish_reason == "tool_calls" and completion.tool_calls[0].complete
    assert completion.tool_calls[0].arguments == {"path": "/home/user/project"}


def test_timeout_is_a_deadline_for_a_stream_that_only_pings(openai_server: OpenAIServer) -> None:
    from agentcpm.errors import RequestTimeout

    # Alive but never answering: a ": ping" comment every 0.1 s for 20 s. The deadline is 1 s.
    openai_server.push(*[ServerReply("late", delay=20, ping_every=0.1)] * 2)
    client = client_for(openai_server, max_retries=0, timeout=1)
    with pytest.raises(RequestTimeout, match="in time"):
        list(client.stream("hi"))

    async def run() -> None:
        async with client_for(openai_server, max_retries=0) as aclient:
            async for _ in aclient.astream("hi", timeout=1):
                pass

    with pytest.raises(RequestTimeout, match="in time"):
        asyncio.run(run())


def test_timeout_is_a_deadline_for_a_trickling_body(openai_server: OpenAIServer) -> None:
    from agentcpm.errors import RequestTimeout

    # A 300-byte answer, one byte every 0.05 s (15 s); the deadline is 1 s.
    openai_server.push(*[ServerReply("x" * 100, trickle=0.05)] * 2)
    with pytest.raises(RequestTimeout, match="in time"):
        client_for(openai_server, max_retries=0).chat("hi", timeout=1)

    async def run() -> None:
        async with client_for(openai_server, max_retries=0) as aclient:
            await aclient.achat("hi", timeout=1)

    with pytest.raises(RequestTimeout, match="in time"):
        asyncio.run(run())


def test_timeout_covers_the_retries(openai_server: OpenAIServer) -> None:
    from agentcpm.errors import ServerError

    # Each 503 asks for a 5 s wait: none fits in a 1 s deadline, so the first answer is the last.
    openai_server.push(*[error_reply(503, "busy", retry_after="5")] * 4)
    with pytest.raises(ServerError, match="HTTP 503"):
        client_for(openai_server, max_retries=3).chat("hi", timeout=1)
    assert len(openai_server.requests) == 1


# ---------------------------------------------------------------------------- resources
def client_sockets(port: int) -> int:
    """TCP sockets of this process connected to ``port`` (the client side of connections to the server)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes and fields[3] != "06":
                    count += 1  # (06: TIME_WAIT, no longer a socket of ours)
    return count


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="counts sockets through /proc (Linux)")
def test_async_clients_are_closed_with_their_event_loops(openai_server: OpenAIServer) -> None:
    openai_server.default = "ok"
    client = client_for(openai_server)

    async def burst() -> None:
        assert [c.content for c in await asyncio.gather(*(client.achat("hi") for _ in range(5)))] == ["ok"] * 5

    for _ in range(5):  # asyncio.run closes each loop's client as the loop shuts down
        asyncio.run(burst())
        assert client_sockets(openai_server.port) == 0
    loop = asyncio.new_event_loop()  # a loop still open: close() closes its client on it
    loop.run_until_complete(burst())
    assert client_sockets(openai_server.port) > 0
    client.close()
    assert client_sockets(openai_server.port) == 0
    loop.close()
    loop = asyncio.new_event_loop()  # a loop closed without shutting down: the next loop's first call drops it
    loop.run_until_complete(burst())
    loop.close()
    asyncio.run(burst())
    gc.collect()
    assert client_sockets(openai_server.port) == 0
    client.close()


def test_sync_calls_reuse_one_warm_connection(openai_server: OpenAIServer) -> None:
    # Sync calls run on this thread's private event loop: its client (and connection) outlives each call.
    openai_server.default = "ok"
    with client_for(openai_server) as client:
        assert [client.chat("hi").content for _ in range(5)] == ["ok"] * 5
        assert last(list(client.stream("hi"))).content == "ok"
        assert openai_server.connections_total == 1


def test_clients_of_ended_threads_are_dropped(openai_server: OpenAIServer) -> None:
    openai_server.default = "ok"
    client = client_for(openai_server)
    answered = threading.Barrier(5)
    release = threading.Event()

    def ask() -> None:
        client.chat("hi")
        answered.wait()
        release.wait()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    answered.wait()
    clients = client.backend._clients._clients  # type: ignore[attr-defined]
    assert len(clients) == 4  # one per thread's loop while the threads live
    release.set()
    for thread in threads:
        thread.join()
    assert client.chat("hi").content == "ok"
    assert len(clients) == 1  # the ended threads' clients went with the next new loop's client
    client.close()
    assert not clients


# ---------------------------------------------------------------------------- credentials
def test_credentials_in_base_url_are_never_shown(openai_server: OpenAIServer, caplog: pytest.LogCaptureFixture) -> None:
    from agentcpm.errors import BadRequestError

    url = openai_server.base_url.replace("http://", "http://admin:s3cr3t-pw@")
    client = Client(url, model=openai_server.model, api_key="sk-secret-key", max_retries=1)
    assert "s3cr3t" not in repr(client) and "s3cr3t" not in repr(client.backend)
    assert "***@127.0.0.1" in repr(client)
    # An error that quotes the URL and the key, after a retry (logged).
    openai_server.push(
        error_reply(503, "busy", retry_after="0"), error_reply(400, f"bad request to {url} sk-secret-key")
    )
    with caplog.at_level("DEBUG", logger="agentcpm"), pytest.raises(BadRequestError) as info:
        client.chat("hi")
    assert "s3cr3t" not in str(info.value) and "sk-secret-key" not in str(info.value)
    assert "***@127.0.0.1" in str(info.value)
    assert caplog.records and "s3cr3t" not in caplog.text
    client.close()
    dead = Client("http://admin:s3cr3t-pw@127.0.0.1:9/v1", model="m", max_retries=0)
    with pytest.raises(EndpointUnavailable) as unreachable:
        dead.chat("hi")
    assert "s3cr3t" not in str(unreachable.value) and "127.0.0.1:9" in str(unreachable.value)
    with pytest.raises(ConfigurationError) as bad:
        Client("ftp://admin:s3cr3t-pw@host/v1")
    assert "s3cr3t" not in str(bad.value)
