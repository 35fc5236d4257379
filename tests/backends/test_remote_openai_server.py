"""The scripted OpenAI test server itself, checked with the plain openai client and httpx."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from markup import call
from openai_server import OpenAIServer, ServerReply, error_reply


def bare_client(server: OpenAIServer, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_models_and_plain_reply(openai_server: OpenAIServer) -> None:
    openai_server.push("Hello <b>there</b>")
    client = bare_client(openai_server)
    assert [m.id for m in client.models.list()] == [openai_server.model]
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello <b>there</b>"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert openai_server.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert ("GET", "/v1/models") in openai_server.log
    client.close()


def test_structured_tool_calls_and_reasoning(openai_server: OpenAIServer) -> None:
    openai_server.push(ServerReply(tool_calls=[{"name": "add", "arguments": {"a": 1}}], reasoning="think"))
    client = bare_client(openai_server)
    message = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices[0]
    assert message.finish_reason == "tool_calls"
    call = message.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 1}  # type: ignore[union-attr]
    assert message.message.model_extra["reasoning_content"] == "think"  # type: ignore[index]


def test_streaming_with_tool_calls_usage_and_done(openai_server: OpenAIServer) -> None:
    text = call("add")
    openai_server.push(ServerReply(text=text, tool_calls=[{"name": "add", "arguments": '{"a": 1}'}]))
    client = bare_client(openai_server)
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(
        tc.function.arguments or ""  # type: ignore[union-attr]
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
    )
    assert content == text and json.loads(arguments) == {"a": 1}
    assert chunks[-1].usage is not None and not chunks[-1].choices


def test_stream_without_done_and_drop(openai_server: OpenAIServer) -> None:
    openai_server.push(ServerReply("abcdefgh", chunk_size=2, done=False), ServerReply("abcdefgh", drop_after=2))
    body = {"model": "m", "messages": [], "stream": True}
    with httpx.Client() as http:
        lines = http.post(f"{openai_server.base_url}/chat/completions", json=body).text.splitlines()
        assert "data: [DONE]" not in lines and sum(line.startswith("data: ") for line in lines) == 6
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(f"{openai_server.base_url}/chat/completions", json=body).read()


def test_errors_default_callable_and_auth() -> None:
    replies = [error_reply(503, "busy", Retry_After="0"), lambda body: f"echo {body['messages'][0]['content']}"]
    with OpenAIServer(replies, api_key="secret", default="again", headers={"Server": "uvicorn"}) as server:
        with httpx.Client(base_url=server.base_url) as http:
            assert http.get("/models").status_code == 401
            auth = {"Authorization": "Bearer secret"}
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            first = http.post("/chat/completions", json=body, headers=auth)
            assert first.status_code == 503 and first.headers["retry-after"] == "0"
            assert first.headers["server"] == "uvicorn"
            second = http.post("/chat/completions", json=body, headers=auth).json()
            assert second["choices"][0]["message"]["content"] == "echo x"
            third = http.post("/chat/completions", json=body, headers=auth).json()
            assert third["choices"][0]["message"]["content"] == "again"
        assert server.connections_total == 1  # keep-alive: one connection for all five requests
    with OpenAIServer(models=ServerReply(status=500, body="hub cache missing")) as server:
        assert httpx.get(f"{server.base_url}/models").status_code == 500
        assert httpx.post(f"{server.base_url}/chat/completions", json={}).status_code == 500  # script exhausted
