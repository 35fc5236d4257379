"""agentcpm serve: a real server process on 127.0.0.1, on the tiny in-process model and in front of the
scripted OpenAI-compatible server (markup in ``content``, as Ollama answers), driven by the openai client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai_server import OpenAIServer, ServerReply
from serve_process import ServeProcess
from tiny_model import (
    FINAL_ANSWER,
    THINK_ANSWER,
    THINK_QUESTION,
    THINK_REASONING,
    WEATHER_CALL,
    WEATHER_QUESTION,
    WEATHER_TOOL,
)

pytestmark = pytest.mark.slow
KEY = "sk-serve-test-secret-123"
ARGS = '{"city": "Paris"}'
OTHER_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def inproc(scripted_model_path: Path) -> Iterator[ServeProcess]:
    args = ["--model", str(scripted_model_path), "--served-model-name", "tiny", "--max-queue", "4"]
    args += ["--max-body-mb", "1", "--max-image-pixels", "250000", "--max-messages", "50"]
    with ServeProcess(args) as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream: OpenAIServer) -> Iterator[ServeProcess]:
    args = ["--upstream", upstream.base_url, "--model", upstream.model, "--api-key", KEY]
    with ServeProcess(args) as server:
        yield server


def sync_client(server: ServeProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def async_client(server: ServeProcess, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def weather(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": WEATHER_QUESTION}], "tools": [WEATHER_TOOL], **extra}


def collect_stream(chunks: Any) -> dict[str, Any]:
    """The deltas of a streamed answer put together as an OpenAI client would."""
    out: dict[str, Any] = {"content": "", "reasoning": "", "calls": {}, "finish": None, "usage": None}
    for chunk in chunks:
        if chunk.usage is not None:
            out["usage"] = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            out["content"] += delta.content or ""
            out["reasoning"] += getattr(delta, "reasoning_content", None) or ""
            for call in delta.tool_calls or []:
                slot = out["calls"].setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                assert call.id is None or slot["id"] is None, "a call is sent once"
                slot["id"] = slot["id"] or call.id
                slot["name"] += (call.function.name or "") if call.function else ""
                slot["arguments"] += (call.function.arguments or "") if call.function else ""
            out["finish"] = choice.finish_reason or out["finish"]
    return out


# ---------------------------------------------------------------------------- in-process: the openai client


def test_sync_non_streaming_tool_call(inproc: ServeProcess) -> None:
    reply = sync_client(inproc).chat.completions.create(model="tiny", **weather())
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_streaming_tool_round_trip(inproc: ServeProcess) -> None:
    client = sync_client(inproc)
    streamed = collect_stream(client.chat.completions.create(model="tiny", stream=True, **weather()))
    assert streamed["finish"] == "tool_calls" and streamed["content"] == ""
    call = streamed["calls"][0]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    messages = [
        {"role": "user", "content": WEATHER_QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
        ]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
    ]  # fmt: skip
    answer = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == FINAL_ANSWER
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls


def test_async_reasoning_streaming_and_not(inproc: ServeProcess) -> None:
    async def main() -> tuple[Any, dict[str, Any]]:
        client = async_client(inproc)
        body: dict[str, Any] = {
            "model": "tiny",
            "messages": [{"role": "user", "content": THINK_QUESTION}],
            "extra_body": {"chat_template_kwargs": {"enable_thinking": True}},
        }
        whole = await client.chat.completions.create(**body)
        parts = [chunk async for chunk in await client.chat.completions.create(stream=True, **body)]
        return whole, collect_stream(parts)

    whole, streamed = asyncio.run(main())
    message = whole.choices[0].message
    assert message.content == THINK_ANSWER and message.reasoning_content.strip() == THINK_REASONING
    assert streamed["content"] == THINK_ANSWER and streamed["reasoning"].strip() == THINK_REASONING


def test_async_tool_call_streaming(inproc: ServeProcess) -> None:
    async def main() -> dict[str, Any]:
        stream = await async_client(inproc).chat.completions.create(model="tiny", stream=True, **weather())
        return collect_stream([chunk async for chunk in stream])

    streamed = asyncio.run(main())
    assert streamed["calls"][0]["name"] == "get_weather" and streamed["finish"] == "tool_calls"


def test_raw_sse_matches_openai_chunks(inproc: ServeProcess) -> None:
    body = {"model": "tiny", "stream": True, "stream_options": {"include_usage": True}, **weather()}
    with httpx.stream("POST", inproc.base_url + "/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == "tiny"
        assert isinstance(chunk["created"], int)
    *answer, last = chunks
    assert answer[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in answer if c["choices"][0]["delta"].get("tool_calls")]
    head, tail = deltas[0]["tool_calls"][0], deltas[1]["tool_calls"][0]
    assert head == {
        "index": 0,
        "id": head["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert tail == {"index": 0, "function": {"arguments": tail["function"]["arguments"]}}
    assert json.loads(tail["function"]["arguments"]) == {"city": "Paris"}
    assert answer[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert all(c["usage"] is None for c in answer)
    assert last["choices"] == [] and last["usage"]["total_tokens"] == (
        last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    )


def test_truncated_call_is_not_sent(inproc: ServeProcess) -> None:
    # max_tokens cuts the scripted call mid-way: finish "length", no tool call (streaming or not).
    client = sync_client(inproc)
    reply = client.chat.completions.create(model="tiny", max_tokens=20, **weather())
    assert reply.choices[0].finish_reason == "length" and not reply.choices[0].message.tool_calls
    streamed = collect_stream(client.chat.completions.create(model="tiny", max_tokens=20, stream=True, **weather()))
    assert streamed["finish"] == "length" and streamed["calls"] == {}


# ---------------------------------------------------------------------------- errors


def post(server: ServeProcess, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", json=body, timeout=120, **kwargs)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text
    return error


def png_data_url(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}
    ]


def test_400_names_the_field(inproc: ServeProcess) -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert error_of(post(inproc, {"messages": messages, "n": 2}), 400)["param"] == "n"
    assert error_of(post(inproc, {"messages": messages, "best_of": 3}), 400)["param"] == "best_of"
    assert error_of(post(inproc, {"messages": []}), 400)["param"] == "messages"
    assert error_of(post(inproc, {"messages": messages, "temperature": "hot"}), 400)["param"] == "temperature"
    bad_choice = {"type": "function", "function": {"name": "nope"}}
    assert error_of(post(inproc, {**weather(), "tool_choice": bad_choice}), 400)["param"] == "tool_choice"
    assert error_of(post(inproc, {"messages": [{"role": "user"}] * 51}), 400)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        sync_client(inproc).chat.completions.create(model="tiny", messages=messages, n=2)  # type: ignore[arg-type]
    assert caught.value.status_code == 400


def test_local_paths_and_file_urls_refused(inproc: ServeProcess, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(base64.b64decode(png_data_url(8, 8).split(",", 1)[1]))
    for url in (f"file://{secret}", str(secret)):
        error = error_of(post(inproc, {"messages": image_message(url)}), 400)
        assert "file://" in error["message"] and error["param"] == "messages"


def test_404_unknown_model_and_route(inproc: ServeProcess) -> None:
    error = error_of(post(inproc, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}), 404)
    assert error["code"] == "model_not_found" and "tiny" in error["message"]
    assert error_of(httpx.get(inproc.root + "/v1/nothing"), 404)["code"] == "not_found"
    models = sync_client(inproc).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_413_body_and_image_too_large(inproc: ServeProcess) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 1_100_000}]}
    assert error_of(post(inproc, big), 413)["code"] == "request_too_large"
    error = error_of(post(inproc, {"messages": image_message(png_data_url(600, 600)), "max_tokens": 2}), 413)
    assert "250,000" in error["message"]
    small = post(inproc, {"messages": image_message(png_data_url(64, 64)), "max_tokens": 2})
    assert small.status_code == 200, small.text


class _ImageHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_http_image_url_is_fetched(inproc: ServeProcess) -> None:
    _ImageHandler.body = base64.b64decode(png_data_url(32, 32).split(",", 1)[1])
    host = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{host.server_address[1]}/cat.png"
        assert post(inproc, {"messages": image_message(url), "max_tokens": 2}).status_code == 200
        missing = f"http://127.0.0.1:{host.server_address[1] + 1 if host.server_address[1] < 65535 else 1}/x.png"
        assert error_of(post(inproc, {"messages": image_message(missing), "max_tokens": 2}), 400)["param"] == "messages"
    finally:
        host.shutdown()


# ---------------------------------------------------------------------------- load


def test_disconnect_mid_stream_cancels_generation(inproc: ServeProcess) -> None:
    # Unscripted text never stops by itself: only the disconnect can end this generation.
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 1_000_000, "stream": True}
    with httpx.stream("POST", inproc.base_url + "/chat/completions", json=body, timeout=120) as response:
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(6)]
        assert any('"content"' in line for line in seen)
        health = httpx.get(inproc.root + "/health").json()  # /health answers while the model generates
        assert health["status"] == "ok" and health["active"] == 1
    while httpx.get(inproc.root + "/health").json()["active"]:
        time.sleep(0.05)
    # The model is free again: the next request is answered (it would wait for the model lock otherwise).
    reply = sync_client(inproc).chat.completions.create(model="tiny", **weather())
    assert reply.choices[0].finish_reason == "tool_calls"
    while "finish=client_disconnected" not in inproc.text:
        time.sleep(0.05)


def test_50_concurrent_clients_answered_or_503(inproc: ServeProcess) -> None:
    async def one(client: httpx.AsyncClient, index: int) -> httpx.Response:
        body = {"messages": [{"role": "user", "content": f"Count to {index}."}], "max_tokens": 8}
        return await client.post(inproc.base_url + "/chat/completions", json=body)

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            return list(await asyncio.gather(*(one(client, i) for i in range(50))))

    responses = asyncio.run(main())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 5 and statuses.count(503) >= 1  # one at work + 4 queued at the least
    for response in responses:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1" and error_of(response, 503)["code"] == "server_overloaded"
        else:
            assert response.json()["choices"][0]["finish_reason"] == "length"
    assert httpx.get(inproc.root + "/health").json() == {"status": "ok", "model": "tiny", "active": 0, "queued": 0}


# ---------------------------------------------------------------------------- in front of an upstream server


def test_upstream_markup_becomes_structured_calls(front: ServeProcess, upstream: OpenAIServer) -> None:
    client = sync_client(front, KEY)
    upstream.push(WEATHER_CALL, WEATHER_CALL)
    reply = client.chat.completions.create(model=upstream.model, **weather())
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls" and not reply.choices[0].message.content
    streamed = collect_stream(client.chat.completions.create(model=upstream.model, stream=True, **weather()))
    assert streamed["calls"][0]["name"] == "get_weather" and streamed["content"] == ""
    assert streamed["finish"] == "tool_calls"


def test_upstream_reasoning_and_round_trip_async(front: ServeProcess, upstream: OpenAIServer) -> None:
    upstream.push(ServerReply(text=FINAL_ANSWER, reasoning="It said sunny."))

    async def main() -> dict[str, Any]:
        messages = [
            {"role": "user", "content": WEATHER_QUESTION},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]  # fmt: skip
        stream = await async_client(front, KEY).chat.completions.create(
            model=upstream.model,
            messages=messages,
            tools=[WEATHER_TOOL],
            stream=True,  # type: ignore[arg-type]
        )
        return collect_stream([chunk async for chunk in stream])

    streamed = asyncio.run(main())
    assert streamed["content"] == FINAL_ANSWER and streamed["reasoning"] == "It said sunny."
    sent = upstream.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather" and sent[2]["role"] == "tool"


def test_401_and_the_key_never_logged(front: ServeProcess, upstream: OpenAIServer) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert error_of(post(front, body), 401)["code"] == "invalid_api_key"
    assert error_of(post(front, body, headers={"Authorization": "Bearer wrong"}), 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sync_client(front, "wrong").models.list()
    assert httpx.get(front.root + "/health").status_code == 200  # probes need no key
    upstream.push("hello")
    assert post(front, body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    while '"POST /v1/chat/completions" 200' not in front.text:
        time.sleep(0.05)
    assert KEY not in front.text and '"POST /v1/chat/completions" 401' in front.text


def test_upstream_failures_have_status_and_no_traceback(front: ServeProcess, upstream: OpenAIServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    upstream.push(ServerReply(status=400, body={"error": {"message": "context too long for this model"}}))
    assert "context too long" in error_of(post(front, body, headers=auth), 400)["message"]
    upstream.push(ServerReply(status=200, body="this is not JSON"))
    assert error_of(post(front, body, headers=auth), 502)["type"] == "upstream_error"


def test_tool_choice_none_required_and_named(front: ServeProcess, upstream: OpenAIServer) -> None:
    client = sync_client(front, KEY)
    tools = [WEATHER_TOOL, OTHER_TOOL]
    question = [{"role": "user", "content": WEATHER_QUESTION}]
    upstream.push("No tools here.")
    reply = client.chat.completions.create(model=upstream.model, messages=question, tools=tools, tool_choice="none")  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "No tools here." and not upstream.requests[-1].get("tools")
    # named: only that tool goes up, with an instruction; no call -> asked once more
    before = len(upstream.requests)
    upstream.push("I think it is sunny.", WEATHER_CALL)
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(model=upstream.model, messages=question, tools=tools, tool_choice=named)  # type: ignore[arg-type]
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    first, second = upstream.requests[before:]
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert "get_weather" in json.dumps(first["messages"][0]) and len(second["messages"]) == len(first["messages"]) + 2
    # required, streamed: still no call after the re-ask -> the answer as it is
    upstream.push("Sunny.", "Still sunny.")
    streamed = collect_stream(
        client.chat.completions.create(
            model=upstream.model, messages=question, tools=tools, tool_choice="required", stream=True
        )  # type: ignore[arg-type]
    )
    assert streamed["content"] == "Still sunny." and streamed["calls"] == {} and streamed["finish"] == "stop"


def test_response_format_json_schema_reasks_once(front: ServeProcess, upstream: OpenAIServer) -> None:
    client = sync_client(front, KEY)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    question = [{"role": "user", "content": "Which city?"}]
    before = len(upstream.requests)
    upstream.push('{"town": "Paris"}', '```json\n{"city": "Paris"}\n```')
    reply = client.chat.completions.create(model=upstream.model, messages=question, response_format=fmt)  # type: ignore[arg-type]
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris"}
    first, second = upstream.requests[before:]
    assert '"required"' in first["messages"][0]["content"] and "city" in second["messages"][-1]["content"]
    upstream.push("Paris", "Paris!")
    reply = client.chat.completions.create(model=upstream.model, messages=question, response_format=fmt)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Paris!"  # returned as it is after one re-ask
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    response = post(front, {"messages": question, "response_format": bad}, headers={"Authorization": f"Bearer {KEY}"})
    assert error_of(response, 400)["param"] == "response_format"


# ---------------------------------------------------------------------------- startup


def test_warns_on_a_public_bind_without_key(upstream: OpenAIServer) -> None:
    with ServeProcess(["--upstream", upstream.base_url, "--model", "m", "--host", "0.0.0.0"]) as server:
        assert "without an API key" in server.text


def test_import_agentcpm_does_not_import_the_server_stack() -> None:
    code = "import agentcpm, agentcpm.serve, sys; print(sorted({'starlette', 'uvicorn'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


class _BrokenBackend:
    """A backend with a bug: the 500 path (a real server cannot be made to fail this way on purpose)."""

    async def generate(self, request: Any) -> Any:
        raise RuntimeError("internal detail /home/secret")
        yield  # an async generator

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("stream", [False, True])
def test_500_is_openai_json_without_traceback(stream: bool) -> None:
    from agentcpm import Client
    from agentcpm.serve import ServeConfig, create_app

    app = create_app(Client(backend=_BrokenBackend()), ServeConfig(model_names=["m"]))  # type: ignore[arg-type]

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
            return await client.post("/v1/chat/completions", json=body)

    response = asyncio.run(main())
    error = error_of(response, 500)
    assert error["type"] == "server_error" and "secret" not in response.text


def test_the_listening_socket_is_tcp_so_responses_are_not_held_back() -> None:
    """asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP; without it each response
    (headers and body are separate writes) waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from agentcpm.serve.main import bind

    listener = bind("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            done.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        try:
            return await asyncio.wait_for(done, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1
