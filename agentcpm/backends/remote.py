"""MiniCPM-V 4.6 on an OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, transformers serve.

Requests go out through the ``openai`` package (its own retries off: tenacity retries here, in one
place), over one pooled HTTP client per backend for sync calls and one per event loop for async calls.
Whatever shape the server answers in (structured ``tool_calls``, tool-call markup in ``content``, both;
reasoning in ``reasoning_content``, ``reasoning`` or ``<think>``), the answer goes through
:mod:`agentcpm.parsing` and comes back as the same :class:`~agentcpm.types.Completion`.

>>> backend = RemoteBackend("http://localhost:8000/v1", dialect="vllm")  # doctest: +SKIP
>>> Client(backend=backend).chat("hi").content  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import re
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any, Literal, TypeVar, cast, overload

import httpx
import openai
import tenacity

from .._redact import redact, redact_url
from ..errors import (
    AgentCPMError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextTooLong,
    EndpointUnavailable,
    RequestTimeout,
    ResponseError,
    ServerError,
    TooManyImages,
)
from ..parsing import ParsedOutput, StreamParser, convert_arguments, render_tool_calls
from ..types import (
    Completed,
    Completion,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallFinished,
    ToolCallStarted,
    Usage,
    new_call_id,
)
from .base import DownsampleMode, GenerationOptions, final_completion, move_tool_images
from .dialects import DIALECTS, STOP_TOKEN_IDS, Dialect, detect_dialect, get_dialect, tools_system_prompt

log = logging.getLogger("agentcpm.remote")

ToolMode = Literal["auto", "native", "prompt"]
T = TypeVar("T")

#: Fields only some servers accept: when a server rejects one, it is dropped for that server from then on.
OPTIONAL_FIELDS = ("chat_template_kwargs", "mm_processor_kwargs", "stop_token_ids", "stream_options")
RETRY_STATUSES = frozenset({408, 409, 429})
MAX_RETRY_AFTER = 60.0  # seconds; a longer Retry-After is capped
DUMMY_API_KEY = "sk-no-key-needed"  # local servers ignore the key, the openai package wants one
KEY_VARIABLES = "AGENTCPM_API_KEY (or OPENAI_API_KEY)"
#: Seconds to open a connection, and seconds a server may stay silent (no byte at all) before the request
#: fails, when no ``timeout=`` is given. With ``timeout=`` the whole request has that deadline instead.
CONNECT_TIMEOUT = 10.0
SILENCE_TIMEOUT = 120.0
#: ``finish_reason`` of a streamed answer that ended without the server saying it was finished (no
#: ``finish_reason``, no ``data: [DONE]``): its unfinished tool calls are ``complete=False``, never run.
INCOMPLETE = "incomplete"


@dataclass
class _Request:
    messages: list[Message]
    tools: list[dict[str, Any]]
    options: GenerationOptions
    stream: bool


class RemoteBackend:
    """A MiniCPM-V 4.6 server that speaks the OpenAI chat API.

    ``model``: the served model's id (None: ask ``GET /models`` and take the only one). ``dialect``:
    vllm, sglang, llamacpp, ollama, transformers or generic (None: detected from ``GET /models``).
    ``tool_mode``: ``native`` sends ``tools`` to the server, ``prompt`` writes them into the system prompt
    in the model's own format, ``auto`` uses native tools unless the server family ignores them or the
    server rejects them. ``max_retries``: retries of connection errors, 408/409/429/5xx (not of a server
    that stayed silent until the timeout). ``timeout``: a deadline in seconds for each whole request:
    connecting, waiting, reading the answer or the stream to its end, retries included; past it
    :class:`~agentcpm.errors.RequestTimeout` (None: no deadline, but a connection must open within 10 s
    and the server may not stay silent for 120 s). ``backoff``: first retry delay in seconds.

    >>> RemoteBackend("http://localhost:8000/v1", model="openbmb/MiniCPM-V-4.6").model
    'openbmb/MiniCPM-V-4.6'
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        dialect: str | Dialect | None = None,
        tool_mode: ToolMode = "auto",
        max_retries: int = 3,
        timeout: float | None = None,
        backoff: float = 0.5,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://, got {redact_url(base_url)!r}")
        if tool_mode not in ("auto", "native", "prompt"):
            raise ConfigurationError(f"tool_mode must be 'auto', 'native' or 'prompt', got {tool_mode!r}")
        self.base_url = base_url.rstrip("/")
        self._url = redact_url(self.base_url)  # what messages and logs show: never the URL's credentials
        self.model = model
        self.dialect: Dialect | None = get_dialect(dialect) if isinstance(dialect, str) else dialect
        self.tool_mode: ToolMode = tool_mode
        self.max_retries = max(0, max_retries)
        self.timeout = timeout
        self.backoff = backoff
        self._api_key = api_key or DUMMY_API_KEY
        self._rejected: set[str] = set()  # optional fields this server refused
        self._tools_rejected = False  # the server refused native tools: write them into the prompt
        self._server_reasoning = False  # the server separates reasoning itself (reasoning_content)
        self._lock = threading.Lock()
        self._images = _ImageCache()
        self._sync: openai.OpenAI = self._openai(openai.OpenAI, httpx.Client)
        # One async client per event loop (httpx async connections belong to the loop that opened them).
        self._async: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._closing: set[Any] = set()  # close tasks scheduled on running loops

    def __repr__(self) -> str:
        dialect = self.dialect.name if self.dialect else None
        return f"RemoteBackend({self._url!r}, model={self.model!r}, dialect={dialect!r})"

    # ---------------------------------------------------------------------------------- HTTP clients
    def _deadline(self, options: GenerationOptions | None = None) -> float | None:
        """When this request must be over (monotonic clock), from ``timeout=`` of the call or the backend."""
        seconds = options.timeout if options is not None and options.timeout is not None else self.timeout
        return time.monotonic() + seconds if seconds is not None else None

    def _openai(self, openai_class: Any, http_class: Any) -> Any:
        # A plain httpx client (which the openai package accepts) keeps respx usable in tests.
        http = http_class(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        return openai_class(
            base_url=self.base_url, api_key=self._api_key, max_retries=0, timeout=_http_timeout(None), http_client=http
        )

    def _async_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            with self._lock:
                entry = self._async.get(loop)
                if entry is None:
                    for old_loop in [old for old in self._async if old.is_closed()]:
                        self._close_loop_client(old_loop, self._async.pop(old_loop))
                    entry = self._async[loop] = _LoopClient(self._openai(openai.AsyncOpenAI, httpx.AsyncClient))
        return entry

    def _close_loop_client(self, loop: asyncio.AbstractEventLoop, entry: _LoopClient) -> None:
        """Close one loop's async client from outside that loop, whatever state the loop is in."""
        if entry.closed:
            return
        if loop.is_closed():  # closed without shutdown_asyncgens: its sockets go with the client
            entry.abandon()
        elif not loop.is_running():
            loop.run_until_complete(entry.aclose())
        elif asyncio._get_running_loop() is loop:  # close() called from a coroutine of that loop
            task = loop.create_task(entry.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        else:
            asyncio.run_coroutine_threadsafe(entry.aclose(), loop)

    def close(self) -> None:
        """Close every pooled connection: the sync client's and each event loop's async client."""
        self._sync.close()
        with self._lock:
            entries = list(self._async.items())
            self._async.clear()
        for loop, entry in entries:
            self._close_loop_client(loop, entry)

    async def aclose(self) -> None:
        """The async form of :meth:`close` (this loop's client is closed before it returns)."""
        with self._lock:
            entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.aclose()
        self.close()

    # ---------------------------------------------------------------------------------- discovery
    def _needs_discovery(self) -> bool:
        return self.model is None or self.dialect is None

    def _discovered(self, status: int, data: Any, headers: dict[str, str]) -> None:
        if self.dialect is None:
            self.dialect = detect_dialect(data, headers, status)
            log.debug("%s speaks the %s dialect", self._url, self.dialect.name)
        if self.model is None:
            entries = data.get("data") if isinstance(data, dict) else None
            ids = [str(e["id"]) for e in entries or [] if isinstance(e, dict) and e.get("id")]
            if len(ids) == 1:
                self.model = ids[0]
            elif ids:
                raise ConfigurationError(
                    f"the server at {self._url} serves several models ({', '.join(ids)}): "
                    "choose one with model=... or AGENTCPM_MODEL"
                )
            else:
                raise ConfigurationError(
                    f"could not learn the model name from {self._url}/models (HTTP {status}): "
                    "pass model=... or set AGENTCPM_MODEL"
                )

    def _ensure_ready(self, deadline: float | None) -> None:
        if not self._needs_discovery():
            return
        with self._lock:
            if self._needs_discovery():
                self._discovered(*self._with_retries(partial(self._get_models, deadline), deadline, statuses=False))

    async def _aensure_ready(self, deadline: float | None) -> None:
        if not self._needs_discovery():
            return
        entry = self._async_client()
        async with entry.lock:
            if self._needs_discovery():

                async def get_models() -> tuple[int, Any, dict[str, str]]:
                    try:
                        options: Any = {"timeout": _http_timeout(deadline)}
                        response: Any = await entry.client.get("/models", cast_to=httpx.Response, options=options)
                    except openai.APIStatusError as exc:
                        response = exc.response
                    return _models_answer(response)

                self._discovered(*await self._awith_retries(get_models, deadline, statuses=False))

    def _get_models(self, deadline: float | None) -> tuple[int, Any, dict[str, str]]:
        try:
            options: Any = {"timeout": _http_timeout(deadline)}
            response: Any = self._sync.get("/models", cast_to=httpx.Response, options=options)
        except openai.APIStatusError as exc:
            response = exc.response
        return _models_answer(response)

    # ---------------------------------------------------------------------------------- request bodies
    def _prompt_tools(self, dialect: Dialect) -> bool:
        if self.tool_mode != "auto":
            return self.tool_mode == "prompt"
        return self._tools_rejected or not dialect.native_tools

    def _body(self, request: _Request) -> dict[str, Any]:
        dialect = self.dialect or DIALECTS["generic"]
        options, tools = request.options, request.tools
        messages = self._images.encode(
            move_tool_images(request.messages), options.max_slice_nums, options.downsample_mode
        )
        in_prompt = bool(tools) and self._prompt_tools(dialect)
        if in_prompt:
            messages = prompt_mode_messages(messages, tools)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],  # images are URLs by now
        }
        if tools and not in_prompt:
            body["tools"] = tools
        for name in ("max_tokens", "temperature", "top_p", "stop", "seed"):
            value = getattr(options, name)
            if value is not None:
                body[name] = value
        if request.stream:
            body["stream"] = True
            if dialect.stream_usage:
                body["stream_options"] = {"include_usage": True}
        if dialect.chat_template_kwargs and options.thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": options.thinking}
        if dialect.mm_processor_kwargs:
            knobs = {
                name: getattr(options, name)
                for name in ("downsample_mode", "max_slice_nums", "use_image_id")
                if getattr(options, name) is not None
            }
            if knobs:
                body["mm_processor_kwargs"] = knobs
        if dialect.stop_token_ids:
            body["stop_token_ids"] = STOP_TOKEN_IDS
        for name in self._rejected:  # replaced, never changed in place: safe while other threads read it
            body.pop(name, None)
        return body

    def _adapt(self, body: dict[str, Any], exc: openai.APIStatusError) -> bool:
        """After a 4xx: drop what the server refused (an optional field, native tools) and say whether to retry."""
        if exc.status_code not in (400, 404, 415, 422) or _special_error(exc) is not None:
            return False
        message = _server_message(exc.response).lower()
        refused = {name for name in OPTIONAL_FIELDS if name in body and name in message}
        if refused:
            log.info("%s refused %s; not sending it again", self._url, ", ".join(sorted(refused)))
            self._rejected = self._rejected | refused
            return True
        if "tools" in body and self.tool_mode == "auto" and "tool" in message:
            log.info("%s refused native tools; writing them into the system prompt", self._url)
            self._tools_rejected = True
            return True
        if "unexpected fields in the request" in message and self.dialect is DIALECTS["generic"]:
            self.dialect = DIALECTS["transformers"]
            return True
        return False

    # ---------------------------------------------------------------------------------- retries
    def _retrying(self, statuses: bool, deadline: float | None) -> dict[str, Any]:
        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, openai.APIStatusError):
                return statuses and (exc.status_code in RETRY_STATUSES or exc.status_code >= 500)
            cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) else exc
            if isinstance(cause, (httpx.ReadTimeout, httpx.WriteTimeout)):
                return False  # silent for the whole timeout: asking again would only wait as long again
            return isinstance(exc, (openai.APIConnectionError, httpx.TransportError))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: %s; retry %d of %d",
                self._url,
                self._redact(_describe(exc)),
                state.attempt_number,
                self.max_retries,
            )

        def past_deadline(state: tenacity.RetryCallState) -> bool:
            # No retry that could not start before the deadline.
            return deadline is not None and time.monotonic() + (state.upcoming_sleep or 0.0) >= deadline

        return {
            "stop": tenacity.stop_after_attempt(self.max_retries + 1) | tenacity.stop_any(cast(Any, past_deadline)),
            "wait": self._wait,
            "retry": tenacity.retry_if_exception(retryable),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            after = _retry_after(exc.response.headers)
            if after is not None:
                return min(max(after, 0.0), MAX_RETRY_AFTER)
        return min(self.backoff * 2 ** (state.attempt_number - 1), 30.0) * random.uniform(0.5, 1.0)

    def _with_retries(self, attempt: Callable[[], T], deadline: float | None, *, statuses: bool = True) -> T:
        try:
            for retry in tenacity.Retrying(**self._retrying(statuses, deadline)):
                with retry:
                    return attempt()
        except (openai.APIConnectionError, httpx.TransportError) as exc:
            raise self._error(exc, deadline) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _awith_retries(
        self, attempt: Callable[[], Awaitable[T]], deadline: float | None, *, statuses: bool = True
    ) -> T:
        try:
            async for retry in tenacity.AsyncRetrying(**self._retrying(statuses, deadline)):
                with retry:
                    return await _within(attempt(), deadline, partial(self._timed_out, deadline))
        except (openai.APIConnectionError, httpx.TransportError) as exc:
            raise self._error(exc, deadline) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, request: _Request, attempt: Callable[[dict[str, Any]], T], deadline: float | None) -> T:
        """Build the body, send it with retries; when the server refuses a field, drop it and send again."""
        for _ in range(len(OPTIONAL_FIELDS) + 2):
            body = self._body(request)
            try:
                return self._with_retries(partial(attempt, body), deadline)
            except openai.APIStatusError as exc:
                if not self._adapt(body, exc):
                    raise self._error(exc) from None
        raise BadRequestError(f"the server at {self._url} kept refusing the request")

    async def _asend(
        self, request: _Request, attempt: Callable[[dict[str, Any]], Awaitable[T]], deadline: float | None
    ) -> T:
        for _ in range(len(OPTIONAL_FIELDS) + 2):
            body = await self._abody(request)
            try:
                return await self._awith_retries(partial(attempt, body), deadline)
            except openai.APIStatusError as exc:
                if not self._adapt(body, exc):
                    raise self._error(exc) from None
        raise BadRequestError(f"the server at {self._url} kept refusing the request")

    async def _abody(self, request: _Request) -> dict[str, Any]:
        # Encoding local images is CPU work: keep it off the event loop.
        if any(_needs_encoding(p) for m in request.messages for p in m.content):
            return await asyncio.to_thread(self._body, request)
        return self._body(request)

    # ---------------------------------------------------------------------------------- errors
    def _timed_out(self, deadline: float | None) -> RequestTimeout:
        if deadline is None:
            return RequestTimeout(
                f"no answer from {self._url} in time (silent for {SILENCE_TIMEOUT:g} s): check the server's load, "
                "or pass timeout= (seconds for the whole request) for answers that take longer"
            )
        return RequestTimeout(
            f"no complete answer from {self._url} in time (the timeout= deadline passed): "
            "raise timeout= or check the server's load"
        )

    def _error(self, exc: BaseException, deadline: float | None = None) -> AgentCPMError:
        """An openai/httpx exception -> the typed agentcpm error, with what to do (never the key)."""
        url = self._url
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = self._redact(_server_message(exc.response))
            special = _special_error(exc)
            if special is not None:
                return special
            if status in (401, 403):
                return AuthenticationError(
                    f"the server at {url} refused the API key (HTTP {status}: {message}): "
                    f"set {KEY_VARIABLES} to a key it accepts"
                )
            if status in RETRY_STATUSES or status >= 500:
                tries = self.max_retries + 1
                return ServerError(f"the server at {url} failed with HTTP {status} ({tries} tries): {message}", status)
            hint = "; check model= and that base_url ends in /v1" if status == 404 else ""
            return BadRequestError(f"the server at {url} refused the request (HTTP {status}): {message}{hint}", status)
        if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
            return self._timed_out(deadline)
        cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) else exc
        if isinstance(cause, httpx.ConnectError):
            return EndpointUnavailable(
                f"nothing answers at {url}: start a server (for example `vllm serve openbmb/MiniCPM-V-4.6`, "
                "see docs/servers.md), fix base_url / AGENTCPM_BASE_URL, or leave base_url out to run the "
                "model in this process"
            )
        return ServerError(f"the connection to {url} failed: {self._redact(_describe(cause))}")

    def _redact(self, text: str) -> str:
        """``text`` without the API key or the credentials of the base URL."""
        return redact(text, self.base_url, self._api_key if self._api_key != DUMMY_API_KEY else None)

    # ---------------------------------------------------------------------------------- Backend protocol
    def _request(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions, stream: bool
    ) -> _Request:
        return _Request(list(messages), list(tools), options, stream)

    def _assembler(self, request: _Request, started: float) -> _Assembler:
        return _Assembler(request.tools, bool(request.options.thinking), started, self._server_reasoning)

    def _finish(self, assembler: _Assembler) -> list[StreamEvent]:
        events = assembler.finish()
        if assembler.server_reasoning:
            self._server_reasoning = True
        return events

    def complete(self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions) -> Completion:
        """Send the conversation and return the whole answer."""
        deadline = self._deadline(options)
        self._ensure_ready(deadline)
        request = self._request(messages, tools, options, stream=False)
        started = time.perf_counter()

        def attempt(body: dict[str, Any]) -> Any:
            # Read as a stream, so that a body trickling in past the deadline is stopped.
            response = _post(self._sync, body, {"timeout": _http_timeout(deadline)}, stream=True)
            try:
                if deadline is None:
                    return _json(response.read(), response, self._url)
                chunks = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise self._timed_out(deadline)
                return _json(b"".join(chunks), response, self._url)
            finally:
                response.close()

        data = self._send(request, attempt, deadline)
        assembler = self._assembler(request, started)
        assembler.reply(data)
        return final_completion(iter(self._finish(assembler)))

    async def acomplete(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Completion:
        """The async form of :meth:`complete`."""
        deadline = self._deadline(options)
        await self._aensure_ready(deadline)
        client = self._async_client().client
        request = self._request(messages, tools, options, stream=False)
        started = time.perf_counter()

        async def attempt(body: dict[str, Any]) -> Any:
            # Each attempt runs under the deadline (_awith_retries), the body's reading included.
            response = await _post(client, body, {"timeout": _http_timeout(deadline)}, stream=True)
            try:
                return _json(await response.aread(), response, self._url)
            finally:
                await response.aclose()

        data = await self._asend(request, attempt, deadline)
        assembler = self._assembler(request, started)
        assembler.reply(data)
        return final_completion(iter(self._finish(assembler)))

    def stream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Iterator[StreamEvent]:
        """Send the conversation and yield parser events as the answer arrives, then ``Completed``."""
        deadline = self._deadline(options)
        self._ensure_ready(deadline)
        request = self._request(messages, tools, options, stream=True)
        started = time.perf_counter()
        timed_out = partial(self._timed_out, deadline)

        def attempt(body: dict[str, Any]) -> tuple[httpx.Response, Iterator[str], str]:
            # The first SSE line is read inside the retry: a stream is retried only while nothing arrived.
            response = _post(self._sync, body, {"timeout": _http_timeout(deadline)}, stream=True)
            try:
                payloads = _payloads(response.iter_lines(), deadline, timed_out)
                return response, payloads, next(payloads)
            except StopIteration:
                response.close()
                raise ResponseError(f"the server at {self._url} sent an empty stream") from None
            except BaseException:
                response.close()
                raise

        response, payloads, first = self._send(request, attempt, deadline)
        assembler = self._assembler(request, started)
        done = False
        try:
            for payload in chain((first,), payloads):
                if payload == "[DONE]":
                    done = True
                    break
                yield from assembler.chunk(_decode(payload, self._url))
        except httpx.TimeoutException:
            raise timed_out() from None
        except httpx.TransportError as exc:
            raise ResponseError(f"the connection to {self._url} dropped mid-answer: {_describe(exc)}") from None
        finally:
            response.close()
        assembler.ended(done)
        yield from self._finish(assembler)

    async def astream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> AsyncIterator[StreamEvent]:
        """The async form of :meth:`stream`."""
        deadline = self._deadline(options)
        await self._aensure_ready(deadline)
        client = self._async_client().client
        request = self._request(messages, tools, options, stream=True)
        started = time.perf_counter()
        timed_out = partial(self._timed_out, deadline)

        async def attempt(body: dict[str, Any]) -> tuple[httpx.Response, AsyncIterator[str], str]:
            response = await _post(client, body, {"timeout": _http_timeout(deadline)}, stream=True)
            try:
                payloads = _apayloads(response.aiter_lines())
                return response, payloads, await payloads.__anext__()
            except StopAsyncIteration:
                await response.aclose()
                raise ResponseError(f"the server at {self._url} sent an empty stream") from None
            except BaseException:
                await response.aclose()
                raise

        response, payloads, first = await self._asend(request, attempt, deadline)
        assembler = self._assembler(request, started)
        done = False
        try:
            payload = first
            while True:
                if payload == "[DONE]":
                    done = True
                    break
                for event in assembler.chunk(_decode(payload, self._url)):
                    yield event
                try:
                    if deadline is None:
                        payload = await payloads.__anext__()
                    else:
                        payload = await _within(payloads.__anext__(), deadline, timed_out)
                except StopAsyncIteration:
                    break
        except httpx.TimeoutException:
            raise timed_out() from None
        except httpx.TransportError as exc:
            raise ResponseError(f"the connection to {self._url} dropped mid-answer: {_describe(exc)}") from None
        finally:
            await response.aclose()
        assembler.ended(done)
        for event in self._finish(assembler):
            yield event


# ---------------------------------------------------------------------------------------- prompt mode


def prompt_mode_messages(messages: list[Message], tools: list[dict[str, Any]]) -> list[Message]:
    """The conversation as MiniCPM-V's chat template would write it, for servers without tool support.

    Tool definitions go into the system turn, assistant tool calls become markup in the text, and each
    run of tool results becomes one user turn of ``<tool_response>`` blocks.
    """
    system = ""
    if messages and messages[0].role == "system":
        system, messages = messages[0].text, messages[1:]
    out = [Message("system", tools_system_prompt(tools, system))]
    results: list[str] = []
    for message in messages:
        if message.role == "tool":
            results.append(f"<tool_response>\n{message.text.strip()}\n</tool_response>")
            continue
        if results:
            out.append(Message("user", "\n".join(results)))
            results = []
        if message.role == "assistant" and message.tool_calls:
            text = message.text.strip()
            markup = render_tool_calls(message.tool_calls)
            content = f"{text}\n\n{markup}" if text else markup
            message = message.model_copy(update={"content": [TextPart(content)], "tool_calls": []})
        out.append(message)
    if results:
        out.append(Message("user", "\n".join(results)))
    return out


# ---------------------------------------------------------------------------------------- answers


@dataclass
class _StructuredCall:
    position: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    started: bool = False


class _Assembler:
    """Turns a server's answer (SSE deltas, or the one message of a plain reply) into events and a Completion.

    Structured ``tool_calls`` and markup in ``content`` are both understood; whichever shows a call first
    owns the calls of this answer, so a server that sends both never reports a call twice. In a plain
    reply, the structured calls come first.
    """

    def __init__(self, tools: list[dict[str, Any]], thinking: bool, started: float, server_reasoning: bool) -> None:
        self.tools = tools
        self.thinking = thinking
        self.started = started
        self.server_reasoning = server_reasoning
        self.parser: StreamParser | None = None
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls: dict[Any, _StructuredCall] = {}
        self.owner: str | None = None  # "structured" or "markup"
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.first_token: float | None = None
        self.streamed = False
        self.incomplete = False  # the stream ended without the server saying the answer was finished

    # input ---------------------------------------------------------------------------------------------
    def reply(self, data: Any) -> None:
        """A whole non-streaming reply."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ResponseError(f"the server's reply has no choices: {_short(data)}")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise ResponseError(f"the server's reply has no message: {_short(data)}")
        self._usage(data)
        self.feed(message)
        self.finish_reason = choices[0].get("finish_reason") or None

    def chunk(self, data: Any) -> list[StreamEvent]:
        """One SSE chunk of a streaming reply."""
        self.streamed = True
        if not isinstance(data, dict):
            raise ResponseError(f"the server sent a stream chunk that is not an object: {_short(data)}")
        if data.get("error") and not data.get("choices"):
            raise ServerError(f"the server failed mid-answer: {_message_of(data) or _short(data)}")
        self._usage(data)
        events: list[StreamEvent] = []
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            if isinstance(delta, dict):
                events += self.feed(delta)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def ended(self, done: bool) -> None:
        """The stream is over; ``done``: it ended with ``data: [DONE]``. Without that and without a
        ``finish_reason`` the answer may be cut anywhere (a proxy, a crashed worker): it is incomplete."""
        if not done and self.finish_reason is None:
            self.incomplete = True

    def _usage(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        if isinstance(data.get("timings"), dict):  # llama.cpp
            self.timings = data["timings"]

    def feed(self, delta: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.server_reasoning = True
            self.reasoning.append(reasoning)
            events.append(ReasoningDelta(reasoning))
        for position, item in enumerate(delta.get("tool_calls") or ()):
            if isinstance(item, dict):
                events += self._structured(item, position)
        content = delta.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str) and content:
            self.content.append(content)
            if self.parser is None:
                # A server that separates reasoning itself sends content without the <think> part.
                self.parser = StreamParser(self.tools, thinking=self.thinking and not self.server_reasoning)
            events += self._markup(self.parser.feed(content))
        if self.first_token is None and (reasoning or content or delta.get("tool_calls")):
            self.first_token = time.perf_counter() - self.started
        return events

    def _markup(self, events: list[Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for event in events:
            if isinstance(event, (ToolCallStarted, ToolCallArgumentsDelta, ToolCallFinished)):
                if self.owner is None:
                    self.owner = "markup"
                if self.owner != "markup":
                    continue
            out.append(event)
        return out

    def _structured(self, item: dict[str, Any], position: int) -> list[StreamEvent]:
        key = item.get("index")
        if key is None:  # plain replies list whole calls; a stream without indexes continues the last call
            key = item.get("id") or (next(reversed(self.calls), 0) if self.streamed else position)
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = _StructuredCall(len(self.calls))
        function: dict[str, Any] = item["function"] if isinstance(item.get("function"), dict) else {}
        if item.get("id") and not call.id:
            call.id = str(item["id"])
        name = function.get("name")
        if isinstance(name, str) and name and name != call.name:
            call.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
        if self.owner == "markup" or not call.name:
            return []
        self.owner = "structured"
        call.id = call.id or new_call_id()
        if not call.started:
            call.started = True
            events: list[StreamEvent] = [ToolCallStarted(call.position, call.id, call.name)]
            if call.arguments:
                events.append(ToolCallArgumentsDelta(call.position, call.id, None, "".join(call.arguments)))
            return events
        if isinstance(arguments, str) and arguments:
            return [ToolCallArgumentsDelta(call.position, call.id, None, arguments)]
        return []

    # output --------------------------------------------------------------------------------------------
    def _tool_call(self, call: _StructuredCall) -> ToolCall:
        raw = "".join(call.arguments)
        parsed = ToolCall.from_openai({"id": call.id, "function": {"name": call.name, "arguments": raw}})
        if not call.name:
            return parsed.model_copy(update={"error": "the server sent a tool call without a function name"})
        if self.incomplete:  # its arguments (or its name) may be cut anywhere
            cut = f"{parsed.error}; {_CUT_OFF}" if parsed.error else _CUT_OFF
            return parsed.model_copy(update={"complete": False, "error": cut})
        if parsed.error is not None:
            return parsed.model_copy(update={"complete": self.finish_reason != "length"})
        arguments, error = convert_arguments(parsed.name, parsed.arguments, self.tools)
        return parsed.model_copy(update={"arguments": arguments, "error": error})

    def finish(self) -> list[StreamEvent]:
        """The closing events, ending with ``Completed``."""
        events: list[StreamEvent] = []
        parsed = ParsedOutput()
        if self.parser is not None:
            # An incomplete answer is cut like one that hit the token limit: calls whose closing markup
            # never came are complete=False.
            closing = self._markup(self.parser.close(finish_reason="length" if self.incomplete else self.finish_reason))
            parsed = self.parser.result()
            if self.incomplete:
                closing = [_incomplete_call(e) if isinstance(e, ToolCallFinished) else e for e in closing]
                parsed.tool_calls = [_incomplete_call(c) for c in parsed.tool_calls]
            events += closing
        calls = parsed.tool_calls
        if self.owner == "structured":
            calls = [self._tool_call(c) for c in self.calls.values() if c.started]
            events += [ToolCallFinished(i, call) for i, call in enumerate(calls)]
        finish = INCOMPLETE if self.incomplete else self.finish_reason or "stop"
        if calls and finish == "stop":  # servers that leave the markup in content say "stop"
            finish = "tool_calls"
        reasoning = "".join(self.reasoning) or parsed.reasoning or None
        duration = time.perf_counter() - self.started
        completion_tokens = int(self.usage.get("completion_tokens") or 0)
        speed = self.timings.get("predicted_per_second")
        if speed is None and self.streamed and completion_tokens and self.first_token is not None:
            decode = duration - self.first_token
            speed = completion_tokens / decode if decode > 0 else None
        usage = Usage(
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            completion_tokens=completion_tokens,
            time_to_first_token=self.first_token if self.streamed else None,
            tokens_per_second=speed,
            duration=duration,
        )
        completion = Completion(
            content=parsed.content,
            reasoning=reasoning,
            tool_calls=calls,
            finish_reason=finish,
            usage=usage,
            raw="".join(self.content),
        )
        events.append(Completed(completion))
        return events


_CUT_OFF = "the stream ended before the server said the answer was finished (no finish_reason, no [DONE]); not executed"
_LENGTH_CUT = "the output was cut off (finish_reason='length') before this call ended; not executed"


@overload
def _incomplete_call(item: ToolCall) -> ToolCall: ...
@overload
def _incomplete_call(item: ToolCallFinished) -> ToolCallFinished: ...
def _incomplete_call(item: ToolCall | ToolCallFinished) -> ToolCall | ToolCallFinished:
    """A call of an incomplete answer, saying why it was not run (the parser only knows finish_reason)."""
    if isinstance(item, ToolCallFinished):
        return ToolCallFinished(item.index, _incomplete_call(item.call))
    if item.complete or not item.error:
        return item
    error = item.error.replace(_LENGTH_CUT, _CUT_OFF) if _LENGTH_CUT in item.error else f"{item.error}; {_CUT_OFF}"
    return item.model_copy(update={"error": error})


# ---------------------------------------------------------------------------------------- async clients


class _LoopClient:
    """One event loop's async client. It is closed when the loop shuts down its async generators (as
    ``asyncio.run`` does before closing the loop), or by ``RemoteBackend.close``/``aclose``."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.lock = asyncio.Lock()
        self.closed = False
        # An async generator suspended for the client's life: the running loop registers it (firstiter
        # hook) and closes it at shutdown, which runs its ``finally``: the client's close.
        self._watch = self._close_at_shutdown()
        _step(self._watch.__anext__())

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not self.closed:
                self.closed = True
                await self.client.close()

    async def aclose(self) -> None:
        """Close the client (on its own loop)."""
        if not self.closed:
            await self._watch.aclose()

    def abandon(self) -> None:
        """The loop is closed: nothing can be awaited on it any more. Drop the client (its sockets close with
        it) and end the generator without awaiting, so that no finalizer later calls into the closed loop."""
        self.closed = True
        _step(self._watch.aclose())


def _step(awaitable: Any) -> None:
    """Run a coroutine step that does not wait for anything (to its first ``yield`` or its end)."""
    with contextlib.suppress(StopIteration):
        awaitable.send(None)


# ---------------------------------------------------------------------------------------- helpers


def _post(client: openai.OpenAI | openai.AsyncOpenAI, body: dict[str, Any], options: Any, stream: bool = False) -> Any:
    """POST a chat request; the raw httpx response comes back (a coroutine for the async client)."""
    return cast(Any, client).post(
        "/chat/completions", cast_to=httpx.Response, body=body, options=options, stream=stream
    )


class _ImageCache:
    """Data URLs of recently sent images, so a conversation's images are encoded once, not every turn.

    Keyed by the ImagePart object (an agent resends the same parts each step); an entry dies with its part.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._urls: OrderedDict[tuple[int, int | None, str | None], tuple[weakref.ref[ImagePart], str]] = OrderedDict()
        self._lock = threading.Lock()

    def url(self, part: ImagePart, max_slice_nums: int | None, downsample_mode: DownsampleMode | None) -> str:
        key = (id(part), max_slice_nums, downsample_mode)
        with self._lock:
            entry = self._urls.get(key)
            if entry is not None and entry[0]() is part:
                self._urls.move_to_end(key)
                return entry[1]
        url = part.data_url(max_slice_nums=max_slice_nums, downsample_mode=downsample_mode)
        with self._lock:
            self._urls[key] = (weakref.ref(part), url)
            while len(self._urls) > self.size:
                self._urls.popitem(last=False)
        return url

    def encode(
        self, messages: list[Message], max_slice_nums: int | None, downsample_mode: DownsampleMode | None
    ) -> list[Message]:
        """The messages with local images replaced by data URLs (from the cache when sent before)."""
        out = []
        for message in messages:
            if any(_needs_encoding(p) for p in message.content):
                parts = [
                    ImagePart(self.url(p, max_slice_nums, downsample_mode))
                    if isinstance(p, ImagePart) and _needs_encoding(p)
                    else p
                    for p in message.content
                ]
                message = message.model_copy(update={"content": parts})
            out.append(message)
        return out


def _needs_encoding(part: Any) -> bool:
    return isinstance(part, ImagePart) and not part.is_url and not str(part.source).startswith("data:")


def _http_timeout(deadline: float | None) -> httpx.Timeout:
    """httpx's timeouts for one attempt: what is left of the deadline, else the defaults for a silent server."""
    if deadline is None:
        return httpx.Timeout(SILENCE_TIMEOUT, connect=CONNECT_TIMEOUT)
    left = max(deadline - time.monotonic(), 0.001)
    return httpx.Timeout(left, connect=min(left, CONNECT_TIMEOUT))


if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], deadline: float | None, timed_out: Callable[[], Exception]) -> T:
        """``await awaitable``, stopped at ``deadline`` with ``timed_out()``."""
        if deadline is None:
            return await awaitable
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                return await awaitable
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            raise timed_out() from None

else:  # pragma: no cover - Python 3.10

    async def _within(awaitable: Awaitable[T], deadline: float | None, timed_out: Callable[[], Exception]) -> T:
        if deadline is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            raise timed_out() from None


def _payloads(
    lines: Iterator[str], deadline: float | None = None, timed_out: Callable[[], Exception] | None = None
) -> Iterator[str]:
    """The ``data:`` payloads of an SSE stream (one JSON object per line, as every OpenAI server sends).

    With a deadline, every line counts, comments (``: ping``) too: a server that only keeps the
    connection alive does not outlive it."""
    if deadline is None:
        for line in lines:
            if line.startswith("data:"):
                yield line[5:].strip()
        return
    for line in lines:
        if time.monotonic() > deadline:
            raise timed_out() if timed_out is not None else RequestTimeout("the deadline passed")
        if line.startswith("data:"):
            yield line[5:].strip()


async def _apayloads(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


def _decode(payload: str, url: str) -> Any:
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        raise ResponseError(f"the server at {url} sent a stream chunk that is not JSON: {payload[:200]!r}") from None


def _json(data: bytes, response: Any, url: str) -> Any:
    """The JSON body ``data`` of ``response``."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = data[:200].decode("utf-8", "replace")
        raise ResponseError(
            f"the server at {url} answered with something that is not JSON "
            f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no content type')}): "
            f"{text!r}; is base_url the OpenAI-compatible endpoint (usually ending in /v1)?"
        ) from None


def _models_answer(response: Any) -> tuple[int, Any, dict[str, str]]:
    return response.status_code, _json_or_none(response), {k.lower(): v for k, v in response.headers.items()}


def _short(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, default=str)
    return text[:300]


def _message_of(data: Any) -> str:
    """The human message inside an error body of any server family."""
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("msg") or json.dumps(error))
    if isinstance(error, str):
        return error
    if isinstance(data.get("message"), str):  # vLLM and SGLang: {"object": "error", "message": ...}
        return data["message"]
    detail = data.get("detail")  # FastAPI
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail if isinstance(d, dict)
        )
    return ""


def _server_message(response: Any) -> str:
    try:
        text = response.text
    except httpx.ResponseNotRead:
        return ""
    try:
        message = _message_of(json.loads(text))
    except json.JSONDecodeError:
        message = ""
    return (message or text or response.reason_phrase)[:1000]


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        return None


_CONTEXT_WORDS = ("context length", "context_length", "context size", "context window", "maximum context")


def _special_error(exc: openai.APIStatusError) -> BadRequestError | None:
    """ContextTooLong or TooManyImages when a 4xx says so, else None."""
    if not 400 <= exc.status_code < 500 or exc.status_code in (401, 403, 429):
        return None
    message = _server_message(exc.response)
    low = message.lower()
    body = _json_or_none(exc.response)
    if any(w in low for w in _CONTEXT_WORDS) or "exceed_context_size" in low or "too many tokens" in low:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        limit = error.get("n_ctx")  # llama.cpp
        requested = error.get("n_prompt_tokens")
        if limit is None:
            found = re.search(r"(?:maximum )?context (?:length|size|window)(?: is| of)?\D{0,20}(\d+)", low)
            limit = found and found.group(1)
        if requested is None:
            found = re.search(r"(?:requested|request has|input \(|total of|you have)\D{0,20}(\d+)", low)
            requested = found and found.group(1)
        numbers = ""
        if limit or requested:
            numbers = f" ({requested or '?'} tokens requested, the context holds {limit or '?'})"
        return ContextTooLong(
            f"the conversation does not fit in the model's context{numbers}: shorten it, send fewer or smaller "
            f"images (downsample_mode='16x', lower max_slice_nums), or lower max_tokens. Server: {message}",
            max_tokens=int(limit) if limit else None,
            requested_tokens=int(requested) if requested else None,
            status_code=exc.status_code,
            body=body,
        )
    if "limit-mm-per-prompt" in low or "limit_mm_per_prompt" in low or re.search(r"at most \d+ image", low):
        return TooManyImages(
            "the server accepts fewer images per request than were sent: start vLLM with a higher "
            "`--limit-mm-per-prompt '{\"image\": N}'`, or send fewer images (older screenshots can be dropped). "
            f"Server: {message}",
            status_code=exc.status_code,
            body=body,
        )
    return None


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, ``Retry-After`` as seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, openai.APIConnectionError) and cause is not None:
        exc = cause
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
