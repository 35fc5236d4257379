"""The ASGI app: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health`` (Starlette)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..client import Client
from ..errors import (
    AgentCPMError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ImageError,
    ImageTooLargeError,
    RequestTimeout,
)
from ..types import Completion, StreamEvent
from .config import APIError, ServeConfig, bad_request
from .request import ChatRequest, load_images, parse_request
from .response import DONE, ChunkWriter, completion_json, sse
from .runner import Gate, buffered, checked_completion, prepared

log = logging.getLogger("agentcpm.serve")
access_log = logging.getLogger("agentcpm.serve.access")


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def as_api_error(exc: BaseException) -> APIError:
    """An exception from the engine -> the status a client should see (never a traceback)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ImageTooLargeError):
        return APIError(413, str(exc), param="messages")
    if isinstance(exc, (ImageError, ConfigurationError)):
        return bad_request(str(exc))
    if isinstance(exc, BadRequestError):
        return bad_request(f"the model server refused the request: {exc}")
    if isinstance(exc, AuthenticationError):
        return APIError(502, "the upstream server refused agentcpm's API key (see the server's log)")
    if isinstance(exc, RequestTimeout):
        return APIError(504, f"the model did not answer in time: {exc}")
    if isinstance(exc, AgentCPMError):
        return APIError(502, f"the model backend failed: {exc}")
    log.error("internal error", exc_info=exc)
    return APIError(500, "internal server error (the server's log has the details)")


async def first_of(request: Request, work: Awaitable[Any]) -> Any:
    """``work``'s result, or :class:`ClientGone` (``work`` cancelled) if the client disconnects first.

    ``work`` runs in this task (an async generator started here keeps running here); a watcher task
    cancels this one when the client goes away."""
    me = asyncio.current_task()
    assert me is not None
    gone = asyncio.Event()

    async def watch() -> None:
        await _disconnected(request.receive)
        gone.set()
        me.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone.is_set():
            uncancel = getattr(me, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Server:
    """The state one app shares: the client (the model), the gate, the limits."""

    def __init__(self, client: Client, config: ServeConfig) -> None:
        self.client = client
        self.config = config
        self.gate = Gate(config.max_concurrency, config.max_queue, config.retry_after)

    # routes ------------------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        gate = self.gate
        return JSONResponse(
            {"status": "ok", "model": self.config.model_name, "active": gate.active, "queued": gate.waiting}
        )

    async def models(self, request: Request) -> Response:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": self.config.owned_by}
            for name in self.config.model_names or [self.config.model_name]
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        info: dict[str, Any] = request.scope.setdefault("state", {}).setdefault("access", {})
        try:
            chat = parse_request(await self._body(request), self.config)
            info["stream"] = chat.stream
            chat.messages = await first_of(request, load_images(chat.messages, self.config))
            options = self.client.defaults.merged(**chat.options)
            await first_of(request, self.gate.enter())
        except ClientGone:
            return Response(status_code=499)
        except Exception as exc:
            return error_response(as_api_error(exc))
        try:
            if chat.stream:
                return await self._stream(request, chat, options, info)
            completion = await first_of(request, checked_completion(self.client, chat, options))
        except ClientGone:
            info["finish"] = "client disconnected"
            self.gate.leave()
            return Response(status_code=499)
        except Exception as exc:
            self.gate.leave()
            return error_response(as_api_error(exc))
        self.gate.leave()
        note_usage(info, completion)
        return JSONResponse(completion_json(completion, chat.model or self.config.model_name))

    async def _body(self, request: Request) -> Any:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = APIError(413, f"the request body is over {limit:,} bytes", code="request_too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > limit:
                raise too_large
        try:
            return json.loads(data)
        except ValueError as exc:
            raise bad_request(f"the request body is not JSON: {exc}") from None

    async def _stream(self, request: Request, chat: ChatRequest, options: Any, info: dict[str, Any]) -> Response:
        """Start the answer (its first event, so errors still get their status), then stream the rest.
        The caller holds a gate slot; the response gives it back when it ends, however it ends."""
        writer = ChunkWriter(chat.model or self.config.model_name, include_usage=chat.include_usage)
        if buffered(chat):
            completion = await first_of(request, checked_completion(self.client, chat, options))
            note_usage(info, completion)
            events: AsyncGenerator[StreamEvent, None] | None = None
            head = [*writer.replay(completion), DONE]
        else:
            messages, tools = prepared(chat)
            events = self.client.events(messages, tools, options)
            try:
                first = await first_of(request, events.__anext__())
            except BaseException:
                await events.aclose()
                raise
            head = [writer.start(), *writer.event(first)]
        body = _sse_body(head, events, writer, info)
        return SSEResponse(body, self.gate.leave)


async def _sse_body(
    head: list[bytes], events: AsyncGenerator[StreamEvent, None] | None, writer: ChunkWriter, info: dict[str, Any]
) -> AsyncIterator[bytes]:
    try:
        for line in head:
            yield line
        if events is None:
            return
        async for event in events:
            for line in writer.event(event):
                yield line
        if writer.completion is not None:
            note_usage(info, writer.completion)
        yield DONE
    except Exception as exc:  # mid-stream: the status is sent already, so the error goes in the stream
        error = as_api_error(exc)
        info["error"] = error.status
        yield sse(error.body())
        yield DONE
    except BaseException:
        info["finish"] = "client disconnected"
        raise
    finally:
        if events is not None:
            with anyio.CancelScope(shield=True):  # the backend must hear it, even while cancelled
                await events.aclose()


class SSEResponse(StreamingResponse):
    """A ``text/event-stream`` response that calls ``done`` once it ends, even if it never started."""

    def __init__(self, body: AsyncIterator[bytes], done: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            iterator: Any = self.body_iterator
            with anyio.CancelScope(shield=True):
                await iterator.aclose()
            self._done()


def note_usage(info: dict[str, Any], completion: Completion) -> None:
    usage = completion.usage
    info.update(
        prompt=usage.prompt_tokens,
        completion=usage.completion_tokens,
        cached=usage.cached_tokens,
        ttft=usage.time_to_first_token,
        finish=completion.finish_reason,
    )


class Guard:
    """Outermost ASGI layer: the API key check for ``/v1`` routes and one access log line per request."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.key = (config.api_key or "").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info: dict[str, Any] = scope.setdefault("state", {}).setdefault("access", {})
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.key and scope["path"].startswith("/v1") and not self._authorized(scope):
                error = APIError(
                    401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key"
                )
                await error_response(error)(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            _log_access(scope, status[0], info, time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False


def _log_access(scope: Scope, status: int, info: dict[str, Any], seconds: float) -> None:
    if scope["path"] == "/health" and status == 200 and not access_log.isEnabledFor(logging.DEBUG):
        return  # probes: only with --verbose
    client = scope.get("client") or ("-", 0)
    parts = [f'{client[0]} "{scope["method"]} {scope["path"]}" {status or 499}']
    if "prompt" in info:
        parts.append(f"tokens={info['prompt']}+{info['completion']}")
        if info.get("cached") is not None:
            parts.append(f"cached={info['cached']}")
        if info.get("ttft") is not None:
            parts.append(f"ttft={info['ttft']:.3f}s")
    if info.get("finish"):
        parts.append(f"finish={info['finish'].replace(' ', '_')}")
    if info.get("stream"):
        parts.append("stream")
    parts.append(f"duration={seconds:.3f}s")
    access_log.info(" ".join(parts))


def create_app(client: Client, config: ServeConfig | None = None) -> ASGIApp:
    """The ASGI app serving ``client`` (in-process or in front of a server) under ``config``'s limits."""
    server = Server(client, config or ServeConfig())

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(APIError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    async def failed(request: Request, exc: Exception) -> Response:
        return error_response(as_api_error(exc))

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: not_found, Exception: failed},
    )
    app.state.server = server
    return Guard(app, server.config)
