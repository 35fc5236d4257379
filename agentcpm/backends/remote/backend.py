"""RemoteBackend: a MiniCPM-V 4.6 server that speaks the OpenAI chat API, on the raw-chunk contract.

It only talks to the server: the request body (:mod:`.body`), the POST with retries (:mod:`.retry`) under
one deadline (:mod:`.http`), typed errors (:mod:`.errors`), and the answer's JSON as raw chunks
(:mod:`.chunks`). Parsing and assembly are the engine's (:mod:`agentcpm.engine`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import httpx

from ..._redact import redact, redact_url
from ...errors import BadRequestError, ConfigurationError, ResponseError
from ..base import GenerationOptions, RawChunk, ReasoningChunk, Request, StartChunk
from . import http
from .body import OPTIONAL_FIELDS, Bodies, ToolMode
from .chunks import AnswerReader
from .dialects import DIALECTS, Dialect, detect_dialect, get_dialect
from .errors import StatusError, describe, map_error, timed_out
from .images import any_needs_encoding
from .retry import with_retries

log = logging.getLogger("agentcpm.remote")
T = TypeVar("T")
DUMMY_API_KEY = "sk-no-key-needed"  # local servers ignore the key; some want one
_Stream = tuple[httpx.Response, AsyncIterator[str], str]


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
        self._bodies = Bodies(self._url)
        self._server_reasoning = False  # the server separates reasoning itself: its text has no <think>
        self._clients = http.LoopClients(partial(http.new_client, self.base_url, self._api_key))

    def __repr__(self) -> str:
        dialect = self.dialect.name if self.dialect else None
        return f"RemoteBackend({self._url!r}, model={self.model!r}, dialect={dialect!r})"

    def close(self) -> None:
        """Close every pooled connection (each event loop's client)."""
        self._clients.close()

    async def aclose(self) -> None:
        """The async form of :meth:`close` (this loop's client is closed before it returns)."""
        await self._clients.aclose()

    # ---------------------------------------------------------------------------------- the contract
    async def generate(self, request: Request) -> AsyncGenerator[RawChunk, None]:
        """Send ``request`` and yield the answer as raw chunks (SSE when ``request.stream``)."""
        deadline = self._deadline(request.options)
        client = self._clients.get()
        await self._ensure_ready(client, deadline)
        # Once a server has separated reasoning, its text no longer starts inside <think>.
        yield StartChunk(in_reasoning=not self._server_reasoning and bool(request.options.thinking))
        if not request.stream:
            data = await self._send(request, partial(self._post_reply, client.client, deadline), deadline)
            for chunk in self._seen(AnswerReader(streamed=False).reply(data)):
                yield chunk
            return
        post = partial(self._post_stream, client.client, deadline)
        response, lines, first = await self._send(request, post, deadline)
        reader = AnswerReader(streamed=True)
        expired = partial(timed_out, self._url, deadline)
        done = False
        try:
            payload = first
            while payload != "[DONE]":
                for chunk in self._seen(reader.chunk(http.decode(payload, self._url))):
                    yield chunk
                try:
                    payload = await http.within(lines.__anext__(), deadline, expired)
                except StopAsyncIteration:
                    break
            else:
                done = True
        except httpx.TimeoutException:
            raise expired() from None
        except httpx.TransportError as exc:
            raise ResponseError(f"the connection to {self._url} dropped mid-answer: {describe(exc)}") from None
        finally:
            await response.aclose()
        for chunk in reader.finish(done):
            yield chunk

    def _seen(self, chunks: list[RawChunk]) -> list[RawChunk]:
        if not self._server_reasoning and any(type(c) is ReasoningChunk for c in chunks):
            self._server_reasoning = True
        return chunks

    async def _post_reply(self, client: httpx.AsyncClient, deadline: float | None, body: dict[str, Any]) -> Any:
        # Read as a stream inside the attempt's deadline, so that a body trickling in past it is stopped.
        return await http.read_json(await http.post(client, body, deadline), self._url)

    async def _post_stream(self, client: httpx.AsyncClient, deadline: float | None, body: dict[str, Any]) -> _Stream:
        # The first SSE payload is read inside the retry: a stream is retried only while nothing arrived.
        response = await http.post(client, body, deadline)
        try:
            lines = http.payloads(response.aiter_lines())
            return response, lines, await lines.__anext__()
        except StopAsyncIteration:
            await response.aclose()
            raise ResponseError(f"the server at {self._url} sent an empty stream") from None
        except BaseException:
            await response.aclose()
            raise

    # ---------------------------------------------------------------------------------- sending
    def _deadline(self, options: GenerationOptions) -> float | None:
        """When this request must be over (monotonic clock), from ``timeout=`` of the call or the backend."""
        seconds = options.timeout if options.timeout is not None else self.timeout
        return time.monotonic() + seconds if seconds is not None else None

    async def _send(
        self, request: Request, attempt: Callable[[dict[str, Any]], Awaitable[T]], deadline: float | None
    ) -> T:
        """Build the body, send it with retries; when the server refuses a field, drop it and send again."""
        for _ in range(len(OPTIONAL_FIELDS) + 2):
            body = await self._body(request)
            try:
                return await self._retrying(partial(attempt, body), deadline)
            except StatusError as exc:
                dialect = self._bodies.adapt(body, exc, self.dialect, self.tool_mode)
                if dialect is None:
                    raise self._error(exc) from None
                self.dialect = dialect
        raise BadRequestError(f"the server at {self._url} kept refusing the request")

    async def _body(self, request: Request) -> dict[str, Any]:
        build = partial(self._bodies.build, request, self.model, self.dialect or DIALECTS["generic"], self.tool_mode)
        if any_needs_encoding(request.messages):  # encoding local images is CPU work: off the event loop
            return await asyncio.to_thread(build)
        return build()

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], deadline: float | None, statuses: bool = True) -> T:
        try:
            return await with_retries(
                attempt,
                max_retries=self.max_retries,
                backoff=self.backoff,
                deadline=deadline,
                timed_out=partial(timed_out, self._url, deadline),
                label=lambda exc: f"{self._url}: {self._redact(describe(exc))}",
                statuses=statuses,
            )
        except httpx.TransportError as exc:
            raise self._error(exc, deadline) from None

    def _error(self, exc: BaseException, deadline: float | None = None) -> Exception:
        return map_error(exc, self._url, self._redact, self.max_retries + 1, deadline)

    def _redact(self, text: str) -> str:
        """``text`` without the API key or the credentials of the base URL."""
        return redact(text, self.base_url, self._api_key if self._api_key != DUMMY_API_KEY else None)

    # ---------------------------------------------------------------------------------- discovery
    async def _ensure_ready(self, client: http.LoopClient, deadline: float | None) -> None:
        """Learn the model and dialect from ``GET /models`` when they were not given (once)."""
        if self.model is not None and self.dialect is not None:
            return
        async with client.lock:
            if self.model is None or self.dialect is None:
                answer = await self._retrying(partial(http.get_models, client.client, deadline), deadline, False)
                self._discovered(*answer)

    def _discovered(self, status: int, data: Any, headers: dict[str, str]) -> None:
        if self.dialect is None:
            self.dialect = detect_dialect(data, headers, status)
            log.debug("%s speaks the %s dialect", self._url, self.dialect.name)
        if self.model is not None:
            return
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
