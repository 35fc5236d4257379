"""Server families' exact reply shapes and every failure, through respx (no such servers run here).

The payloads follow what each server sends (vLLM, SGLang, llama.cpp, Ollama, transformers serve); the
failures are the ones a real deployment produces (503, 429 with Retry-After, timeouts, a connection
dropped mid-stream, a proxy's HTML page). Requests are counted to check what is retried and what is not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
import tenacity
from markup import call

from agentcpm import Client, Completed, ToolCallStarted
from agentcpm.backends.remote import RemoteBackend, retry_after, wait_time
from agentcpm.errors import (
    AuthenticationError,
    BadRequestError,
    ContextTooLong,
    EndpointUnavailable,
    RequestTimeout,
    ResponseError,
    ServerError,
    TooManyImages,
)

URL = "http://gpu-box:8000/v1"
CHAT = f"{URL}/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}
MARKUP = call("get_weather", city="Paris")


def client(dialect: str = "generic", **options: Any) -> Client:
    return Client(backend=RemoteBackend(URL, model="m", dialect=dialect, backoff=0, **options))


def sse(*chunks: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(c) if not isinstance(c, str) else c}\n\n" for c in chunks]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "x", "object": "chat.completion.chunk", "model": "m", "choices": [choice], **extra}


def reply(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    usage = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}
    return {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice], "usage": usage, **extra}


def final(events: list[Any]) -> Any:
    assert isinstance(events[-1], Completed)
    return events[-1].completion


# ---------------------------------------------------------------------------- shapes of each family


@respx.mock
def test_vllm_structured_calls_with_reasoning() -> None:
    call = {
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": "3"}'},
    }
    respx.post(CHAT).respond(
        json=reply({"content": None, "reasoning": "Need weather.", "tool_calls": [call]}, "tool_calls")
    )
    completion = client("vllm").chat("w", tools=[WEATHER])
    assert completion.reasoning == "Need weather." and completion.content == ""
    assert [(c.id, c.arguments) for c in completion.tool_calls] == [("chatcmpl-tool-1", {"city": "Paris", "days": 3})]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (20, 7)


@respx.mock
def test_vllm_streamed_calls_arrive_in_pieces() -> None:
    pieces = [
        chunk({"role": "assistant", "content": ""}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "t2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 30},
        },
    ]
    respx.post(CHAT).respond(content=sse(*pieces), headers={"content-type": "text/event-stream"})
    events = list(client("vllm").stream("w", tools=[WEATHER]))
    started = [(e.index, e.id, e.name) for e in events if isinstance(e, ToolCallStarted)]
    assert started == [(0, "t1", "get_weather"), (1, "t2", "get_weather")]
    arguments = "".join(e.text for e in events if type(e).__name__ == "ToolCallArgumentsDelta" and e.index == 0)
    assert arguments == '{"city": "Rome"}'
    completion = final(events)
    assert [c.arguments for c in completion.tool_calls] == [{"city": "Rome"}, {"city": "Oslo"}]
    assert completion.usage.completion_tokens == 30 and completion.usage.tokens_per_second is not None


@respx.mock
def test_sglang_reasoning_content_streamed() -> None:
    pieces = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "Let me think"}),
        chunk({"reasoning_content": " more."}),
        chunk({"content": "Paris."}),
        chunk({}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 6}),
    ]
    respx.post(CHAT).respond(content=sse(*pieces), headers={"content-type": "text/event-stream"})
    completion = final(list(client("sglang").stream("q", thinking=True)))
    assert (completion.reasoning, completion.content) == ("Let me think more.", "Paris.")


@respx.mock
def test_llamacpp_markup_in_content_with_timings() -> None:
    body = reply({"content": MARKUP}, "stop", timings={"predicted_per_second": 42.5, "prompt_ms": 12.0})
    respx.post(CHAT).respond(json=body)
    completion = client("llamacpp").chat("w", tools=[WEATHER])
    assert completion.tool_calls[0].arguments == {"city": "Paris"}
    assert completion.finish_reason == "tool_calls" and completion.usage.tokens_per_second == 42.5


@respx.mock
def test_ollama_stream_of_markup_ends_with_stop() -> None:
    text = "Sure.\n" + MARKUP
    pieces = [chunk({"role": "assistant", "content": text[i : i + 7]}) for i in range(0, len(text), 7)]
    respx.post(CHAT).respond(content=sse(*pieces, chunk({}, "stop")), headers={"content-type": "text/event-stream"})
    events = list(client("ollama", tool_mode="native").stream("w", tools=[WEATHER]))
    completion = final(events)
    assert completion.content == "Sure." and completion.tool_calls[0].name == "get_weather"
    assert completion.finish_reason == "tool_calls"


@respx.mock
def test_transformers_serve_stream_without_done() -> None:
    pieces = [chunk({"role": "assistant"}), chunk({"content": "Hi"}), chunk({"content": " there"})]
    last = chunk({}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    respx.post(CHAT).respond(content=sse(*pieces, last, done=False), headers={"content-type": "text/event-stream"})
    completion = final(list(client("transformers").stream("hi")))
    assert completion.content == "Hi there" and completion.usage.completion_tokens == 2


# ---------------------------------------------------------------------------- errors that are not retried


@pytest.mark.parametrize("status", [401, 403])
@respx.mock
def test_auth_errors_name_the_variable_and_hide_the_key(status: int) -> None:
    route = respx.post(CHAT).respond(status, json={"error": {"message": "Incorrect API key provided: sk-secret-123"}})
    with pytest.raises(AuthenticationError) as info:
        client(api_key="sk-secret-123").chat("hi")
    assert "AGENTCPM_API_KEY" in str(info.value) and "sk-secret-123" not in str(info.value)
    assert route.call_count == 1


CONTEXT_ERRORS = [
    (  # vLLM
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
            "(4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
            "type": "BadRequestError",
            "code": 400,
        },
        4096,
        5000,
    ),
    (  # SGLang
        {
            "object": "error",
            "message": "Requested token count exceeds the model's maximum context length of 8192 tokens. "
            "You requested a total of 9000 tokens: 8000 tokens from the input messages and "
            "1000 tokens for the completion.",
            "code": 400,
        },
        8192,
        9000,
    ),
    (  # llama.cpp
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5123,
                "n_ctx": 4096,
            }
        },
        4096,
        5123,
    ),
]


@pytest.mark.parametrize(("body", "limit", "requested"), CONTEXT_ERRORS)
@respx.mock
def test_context_too_long_gives_the_numbers(body: dict[str, Any], limit: int, requested: int) -> None:
    route = respx.post(CHAT).respond(400, json=body)
    with pytest.raises(ContextTooLong) as info:
        client().chat("a very long conversation")
    assert (info.value.max_tokens, info.value.requested_tokens) == (limit, requested)
    assert str(limit) in str(info.value) and route.call_count == 1


@respx.mock
def test_too_many_images_names_the_server_flag() -> None:
    message = "At most 1 image(s) may be provided in one prompt."
    route = respx.post(CHAT).respond(400, json={"object": "error", "message": message, "code": 400})
    with pytest.raises(TooManyImages, match="--limit-mm-per-prompt"):
        client("vllm").chat("hi")
    assert route.call_count == 1


@respx.mock
def test_other_4xx_carries_the_server_message() -> None:
    route = respx.post(CHAT).respond(404, json={"detail": "The model `x` does not exist."})
    with pytest.raises(BadRequestError, match="does not exist") as info:
        client().chat("hi")
    assert info.value.status_code == 404 and "/v1" in str(info.value) and route.call_count == 1


@respx.mock
def test_replies_that_make_no_sense() -> None:
    respx.post(CHAT).mock(
        side_effect=[
            httpx.Response(200, text="<html>proxy login</html>", headers={"content-type": "text/html"}),
            httpx.Response(200, json={"id": "x", "choices": []}),
            httpx.Response(200, json={"choices": [{"index": 0, "finish_reason": "stop"}]}),
            httpx.Response(200, content=b"data: {not json\n\n", headers={"content-type": "text/event-stream"}),
            httpx.Response(
                200, content=sse({"error": "CUDA out of memory"}), headers={"content-type": "text/event-stream"}
            ),
            httpx.Response(200, content=b"", headers={"content-type": "text/event-stream"}),
        ]
    )
    c = client(max_retries=0)
    with pytest.raises(ResponseError, match="not JSON"):
        c.chat("hi")
    with pytest.raises(ResponseError, match="no choices"):
        c.chat("hi")
    with pytest.raises(ResponseError, match="no message"):
        c.chat("hi")
    with pytest.raises(ResponseError, match="not JSON"):
        list(c.stream("hi"))
    with pytest.raises(ServerError, match="CUDA out of memory"):
        list(c.stream("hi"))
    with pytest.raises(ResponseError, match="empty stream"):
        list(c.stream("hi"))


# ---------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
@respx.mock
def test_retryable_statuses_are_retried(status: int) -> None:
    route = respx.post(CHAT).mock(
        side_effect=[
            httpx.Response(status, json={"error": {"message": "busy"}}),
            httpx.Response(200, json=reply({"content": "ok"})),
        ]
    )
    assert client().chat("hi").content == "ok"
    assert route.call_count == 2


@respx.mock
def test_retries_give_up_after_max_retries() -> None:
    route = respx.post(CHAT).respond(503, json={"error": {"message": "overloaded"}})
    with pytest.raises(ServerError, match="HTTP 503") as info:
        client(max_retries=3).chat("hi")
    assert route.call_count == 4 and info.value.status_code == 503
    route.reset()
    with pytest.raises(ServerError):
        client(max_retries=0).chat("hi")
    assert route.call_count == 1


@respx.mock
def test_timeouts_and_connection_errors() -> None:
    # A server silent for the whole read timeout is not asked again (that would wait as long again) ...
    route = respx.post(CHAT).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RequestTimeout, match="in time"):
        client(max_retries=2).chat("hi")
    assert route.call_count == 1
    # ... one that could not be reached in time is.
    route.reset()
    route.mock(side_effect=httpx.ConnectTimeout("no route"))
    with pytest.raises(RequestTimeout, match="in time"):
        client(max_retries=2).chat("hi")
    assert route.call_count == 3
    route.reset()
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(EndpointUnavailable, match="gpu-box:8000"):
        client(max_retries=1).chat("hi")
    assert route.call_count == 2


def test_retry_after_is_honoured() -> None:
    assert retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert (retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2065 07:28:00 GMT"})) or 0) > 50
    assert retry_after(httpx.Headers({})) is None
    from agentcpm.backends.remote.errors import StatusError

    response = httpx.Response(429, headers={"retry-after": "2"}, request=httpx.Request("POST", CHAT))
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.set_exception((StatusError, StatusError(response), None))
    assert wait_time(state, backoff=0.5) == 2.0
    state.set_exception((RuntimeError, RuntimeError(), None))
    assert all(0.25 <= wait_time(state, backoff=0.5) <= 0.5 for _ in range(20))  # exponential, with jitter


class Dropping(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends some SSE lines, then the connection breaks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset by peer")


@respx.mock
def test_stream_retried_only_while_nothing_arrived() -> None:
    ok = sse(chunk({"content": "fine"}), chunk({}, "stop"))
    route = respx.post(CHAT).mock(
        side_effect=[
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.Response(503),
            httpx.Response(200, stream=Dropping(b"")),  # headers but no data: nothing received yet
            httpx.Response(200, content=ok, headers={"content-type": "text/event-stream"}),
        ]
    )
    assert final(list(client(max_retries=3).stream("hi"))).content == "fine"
    assert route.call_count == 4
    route.reset()
    route.mock(
        side_effect=None, return_value=httpx.Response(200, stream=Dropping(sse(chunk({"content": "par"}), done=False)))
    )
    events: list[Any] = []
    with pytest.raises(ResponseError, match="dropped mid-answer"):
        events.extend(client(max_retries=3).stream("hi"))
    assert route.call_count == 1 and [type(e).__name__ for e in events] == ["ContentDelta"]


@respx.mock
def test_async_paths_retry_and_fail_the_same_way() -> None:
    route = respx.post(CHAT).mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(200, json=reply({"content": "ok"})),
            httpx.Response(200, stream=Dropping(sse(chunk({"content": "par"}), done=False))),
            httpx.Response(400, json={"error": {"message": "At most 2 image(s) may be provided in one prompt."}}),
        ]
    )

    async def main() -> None:
        async with client() as c:
            assert (await c.achat("hi")).content == "ok"
            with pytest.raises(ResponseError, match="dropped mid-answer"):
                [e async for e in c.astream("hi")]
            with pytest.raises(TooManyImages):
                await c.achat("hi")

    asyncio.run(main())
    assert route.call_count == 4


# ---------------------------------------------------------------------------- telling servers apart

MODELS_REPLIES = [
    (
        "vllm",
        {"object": "list", "data": [{"id": "openbmb/MiniCPM-V-4.6", "owned_by": "vllm", "max_model_len": 32768}]},
        {},
    ),
    ("sglang", {"object": "list", "data": [{"id": "openbmb/MiniCPM-V-4.6", "owned_by": "sglang", "root": "x"}]}, {}),
    (
        "llamacpp",
        {"object": "list", "data": [{"id": "MiniCPM-V-4.6-Q4_K_M.gguf", "owned_by": "llamacpp", "meta": {}}]},
        {},
    ),
    ("ollama", {"object": "list", "data": [{"id": "minicpm-v-4.6:latest", "owned_by": "library"}]}, {}),
    (
        "transformers",
        {"object": "list", "data": [{"id": "openbmb/MiniCPM-V-4.6", "owned_by": "openbmb"}]},
        {"server": "uvicorn", "x-request-id": "0b1c"},
    ),
    ("generic", {"object": "list", "data": [{"id": "minicpm", "owned_by": "openai"}]}, {}),
]


@pytest.mark.parametrize(("family", "models", "headers"), MODELS_REPLIES)
@respx.mock
def test_dialect_and_model_from_get_models(family: str, models: dict[str, Any], headers: dict[str, str]) -> None:
    respx.get(f"{URL}/models").respond(json=models, headers=headers)
    route = respx.post(CHAT).respond(json=reply({"content": "ok"}))
    c = Client(backend=RemoteBackend(URL, backoff=0))
    assert c.chat("hi").content == "ok"
    assert c.backend.dialect.name == family  # type: ignore[attr-defined]
    assert c.model == models["data"][0]["id"] == json.loads(route.calls[0].request.content)["model"]


def test_bad_configuration_is_refused_early() -> None:
    from agentcpm.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="http://"):
        RemoteBackend("localhost:8000/v1")
    with pytest.raises(ConfigurationError, match="vllm, sglang"):
        RemoteBackend(URL, dialect="tgi")
    with pytest.raises(ConfigurationError, match="tool_mode"):
        RemoteBackend(URL, tool_mode="json")  # type: ignore[arg-type]
    assert RemoteBackend(URL, dialect="llama.cpp").dialect.name == "llamacpp"  # type: ignore[union-attr]


@respx.mock
def test_streamed_calls_without_indexes() -> None:
    pieces = [
        chunk({"tool_calls": [{"id": "a", "function": {"name": "get_weather", "arguments": '{"city"'}}]}),
        chunk({"tool_calls": [{"function": {"arguments": ': "Lima"}'}}]}),
        chunk({"tool_calls": [{"id": "b", "function": {"name": "get_weather", "arguments": '{"city": "Kyiv"}'}}]}),
        chunk({}, "tool_calls"),
    ]
    respx.post(CHAT).respond(content=sse(*pieces), headers={"content-type": "text/event-stream"})
    completion = final(list(client().stream("w", tools=[WEATHER])))
    assert [(c.id, c.arguments) for c in completion.tool_calls] == [("a", {"city": "Lima"}), ("b", {"city": "Kyiv"})]


@respx.mock
def test_cached_prompt_tokens_and_llamacpp_speed_in_a_stream() -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 24}}
    pieces = [
        chunk({"content": "Hi"}),
        chunk({}, "stop"),
        {"id": "x", "choices": [], "usage": usage},
        {"id": "x", "choices": [], "timings": {"predicted_per_second": 99.0}},
    ]
    respx.post(CHAT).respond(content=sse(*pieces), headers={"content-type": "text/event-stream"})
    completion = final(list(client("llamacpp").stream("hi")))
    assert (completion.usage.prompt_tokens, completion.usage.cached_tokens) == (30, 24)
    assert completion.usage.tokens_per_second == 99.0  # the server's figure, not the client's estimate
    respx.post(CHAT).respond(json=reply({"content": "Hi"}, usage=usage))
    assert client("vllm").chat("hi").usage.cached_tokens == 24
