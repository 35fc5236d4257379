"""A real OpenAI-compatible chat server for tests: stdlib HTTP on 127.0.0.1, scripted answers.

It replays a queue of scripted replies, one per ``POST /v1/chat/completions``, as a real server would
send them: raw model text in ``content`` (tool-call markup included, the way Ollama and llama.cpp return
it), or structured ``tool_calls`` / ``reasoning_content`` (the way vLLM and SGLang do), non-streaming or as
SSE chunks. It records every request, so tests can check what the client sent.

>>> from openai_server import OpenAIServer, ServerReply
>>> with OpenAIServer(["Hello!"]) as server:                       # doctest: +SKIP
...     client = Client(base_url=server.base_url, model=server.model)
...     client.chat("hi").content                                  # 'Hello!'
...     server.requests[0]["messages"][-1]["content"]              # 'hi'

Or with the pytest fixture (tests/conftest.py) ``openai_server``, already started with an empty script::

    def test_it(openai_server):
        openai_server.push(call("add", a=1, b=2), "The sum is 3.")  # call: tests/markup.py
        client = Client(base_url=openai_server.base_url, model=openai_server.model)

API
---
``OpenAIServer(replies=(), *, model=..., default=None, api_key=None, models=None, headers=None)``
    ``replies``: strings (raw model text) or :class:`ServerReply` or callables ``body -> str | ServerReply``
    (to answer depending on the request). ``default``: the reply used once the queue is empty (None: answer
    HTTP 500 "script exhausted"). ``api_key``: when set, requests without ``Authorization: Bearer <key>``
    get a 401. ``models``: the ``data`` list of ``GET /v1/models`` (default: one entry for ``model``), or a
    :class:`ServerReply` to answer that route with (e.g. ``ServerReply(status=500)`` like transformers serve).
    ``headers``: extra response headers on every reply (``{"Server": "..."}`` replaces the Server header).
``start()`` / ``stop()`` or ``with OpenAIServer(...) as server:`` (starts a daemon thread; port 0).
``push(*replies)``: append to the queue (thread-safe). ``base_url``: ``http://127.0.0.1:PORT/v1``.
``requests``: JSON bodies of every chat completion request, in order. ``request_headers``: their headers
(lower-cased names). ``log``: ``(method, path)`` of every request received, any route.
``open_connections``: TCP connections open right now (for leak checks); ``connections_total``: ever accepted.

:class:`ServerReply` fields: ``text`` (content), ``tool_calls`` (structured calls: dicts with ``name``,
``arguments`` as dict or JSON string, optional ``id``), ``reasoning`` (sent in the field named by
``reasoning_field``: "reasoning_content" or "reasoning"), ``finish_reason`` (default "tool_calls" when
structured calls are given, else "stop"), ``usage`` (default: counts from the lengths), streaming shape:
``chunk_size`` characters per SSE chunk, ``chunk_delay`` seconds between chunks (a long slow answer for
Ctrl-C tests), ``done`` (False: the stream ends without ``data: [DONE]``, like transformers serve),
``drop_after`` (close the connection abruptly after that many SSE chunks; 0 drops a non-streaming reply
before any byte), ``delay`` (seconds before the response starts), and for error or odd replies ``status``,
``body`` (a dict is sent as JSON, a str as is; overrides everything else) and ``headers``
(e.g. ``{"Retry-After": "0"}``).
Faults of a server that is alive but not finishing: ``cut_after`` (end a stream cleanly after that many SSE
chunks, with no ``finish_reason`` chunk and no ``[DONE]``, as a proxy or a crashed worker does: by the
chunked encoding's end, or with ``cut_eof=True`` by closing the connection of a response sent without
chunked encoding or length), ``ping_every`` (during ``delay``, an SSE comment ``: ping`` every that many
seconds, so the stream is never silent), ``trickle`` (a non-streaming body sent one byte every that many
seconds).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "openbmb/MiniCPM-V-4.6"


@dataclass
class ServerReply:
    """One scripted HTTP answer (see the module docstring)."""

    text: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    chunk_size: int = 4
    chunk_delay: float = 0.0
    done: bool = True
    drop_after: int | None = None
    delay: float = 0.0
    cut_after: int | None = None
    cut_eof: bool = False
    ping_every: float = 0.0
    trickle: float = 0.0
    status: int = 200
    body: dict[str, Any] | list[Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


ReplyItem = str | ServerReply | Callable[[dict[str, Any]], "str | ServerReply"]


def error_reply(status: int, message: str, **headers: str) -> ServerReply:
    """An OpenAI-style error body: ``{"error": {"message": ..., "type": ..., "code": status}}``."""
    body = {"error": {"message": message, "type": "BadRequestError" if status < 500 else "ServerError", "code": status}}
    return ServerReply(status=status, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})


def _openai_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        out.append(
            {
                "id": call.get("id") or f"call_{i}_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        )
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients can pool connections
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    timeout = 60  # idle keep-alive connections end eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def version_string(self) -> str:
        return self.server.owner.extra_headers.get("Server", "openai-test-server/1.0")

    def setup(self) -> None:
        super().setup()
        with self.server.owner._lock:
            self.server.owner.open_connections += 1
            self.server.owner.connections_total += 1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.owner._lock:
                self.server.owner.open_connections -= 1

    # ------------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, trickle: float = 0.0) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        is_json = not isinstance(body, str)
        self.send_header("Content-Type", "application/json" if is_json else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self._extra_headers(headers)
        self.end_headers()
        if not trickle:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(trickle)

    def _extra_headers(self, headers: dict[str, str] | None) -> None:
        for key, value in {**self.server.owner.extra_headers, **(headers or {})}.items():
            if key.lower() != "server":  # sent by send_response (version_string)
                self.send_header(key, value)

    def _authorized(self) -> bool:
        key = self.server.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        return False

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._record("GET", self.path)
        if not self._authorized():
            return
        if self.path.split("?")[0].rstrip("/") in ("/v1/models", "/models"):
            if isinstance(owner.models, ServerReply):
                reply = owner.models
                self._send(reply.status, reply.body if reply.body is not None else {}, reply.headers)
                return
            self._send(200, {"object": "list", "data": owner.models})
            return
        self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        raw = self._read_body()
        owner._record("POST", self.path)
        if not self._authorized():
            return
        if self.path.split("?")[0].rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send(400, {"error": {"message": f"body is not JSON: {exc}", "type": "BadRequestError"}})
            return
        reply = owner._next_reply(body, {k.lower(): v for k, v in self.headers.items()})
        if reply.delay and not (reply.ping_every and body.get("stream")):  # (pings fill the delay of a stream)
            time.sleep(reply.delay)
        if reply.drop_after == 0 and not body.get("stream"):
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if reply.body is not None or reply.status != 200:
            self._send(reply.status, reply.body if reply.body is not None else {}, reply.headers)
            return
        try:
            if body.get("stream"):
                self._stream(body, reply)
            else:
                self._send(200, owner._completion(body, reply), reply.headers, reply.trickle)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (e.g. Ctrl-C)
            self.close_connection = True

    # ------------------------------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        if self._raw:  # neither chunked nor a length: the body ends when the connection closes
            self.wfile.write(data)
        else:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    _raw = False

    def _stream(self, body: dict[str, Any], reply: ServerReply) -> None:
        owner = self.server.owner
        self._raw = reply.cut_eof
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if self._raw:
            self.send_header("Connection", "close")
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self._extra_headers(reply.headers)
        self.end_headers()
        if reply.ping_every:
            until = time.monotonic() + reply.delay
            while time.monotonic() < until:
                self._chunk(b": ping\n\n")
                time.sleep(reply.ping_every)
        base = {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion.chunk"}
        base |= {"created": int(time.time()), "model": body.get("model") or owner.model}

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> dict[str, Any]:
            out = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                out = {**base, "choices": [], "usage": usage}
            return out

        size = max(1, reply.chunk_size)
        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        if reply.reasoning:
            for i in range(0, len(reply.reasoning), size):
                events.append(chunk({reply.reasoning_field: reply.reasoning[i : i + size]}))
        for i in range(0, len(reply.text), size):
            events.append(chunk({"content": reply.text[i : i + size]}))
        for index, call in enumerate(_openai_calls(reply.tool_calls or [])):
            head = {"index": index, "id": call["id"], "type": "function"}
            events.append(chunk({"tool_calls": [{**head, "function": {"name": call["function"]["name"]}}]}))
            arguments = call["function"]["arguments"]
            for i in range(0, len(arguments), size):
                piece = {"index": index, "function": {"arguments": arguments[i : i + size]}}
                events.append(chunk({"tool_calls": [piece]}))
        events.append(chunk({}, owner._finish_reason(reply)))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk({}, usage=owner._usage(body, reply)))
        for n, event in enumerate(events):
            if reply.cut_after is not None and n >= reply.cut_after:
                break
            if reply.drop_after is not None and n >= reply.drop_after:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            if n and reply.chunk_delay:
                time.sleep(reply.chunk_delay)
            self._chunk(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")
        if reply.done and reply.cut_after is None:
            self._chunk(b"data: [DONE]\n\n")
        if self._raw:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(1)  # EOF for the client
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connecting at once (concurrency tests, benchmarks)
    owner: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (closed streams, dropped keep-alive connections) are normal here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class OpenAIServer:
    """A scripted OpenAI chat server on 127.0.0.1 (see the module docstring for the whole API)."""

    def __init__(
        self,
        replies: Iterable[ReplyItem] = (),
        *,
        model: str = DEFAULT_MODEL,
        default: ReplyItem | None = None,
        api_key: str | None = None,
        models: list[dict[str, Any]] | ServerReply | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self.default = default
        self.api_key = api_key
        self.models = (
            models
            if models is not None
            else [{"id": model, "object": "model", "created": 0, "owned_by": "openai-test-server"}]
        )
        self.extra_headers = dict(headers or {})
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.log: list[tuple[str, str]] = []
        self.open_connections = 0
        self.connections_total = 0
        self._queue: deque[ReplyItem] = deque(replies)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (open keep-alive connections die with their threads)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    url = base_url

    # script ------------------------------------------------------------------------------------------
    def push(self, *replies: ReplyItem) -> None:
        """Append replies to the queue."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Replies still queued."""
        return len(self._queue)

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.log.append((method, path))

    def _next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> ServerReply:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            item = self._queue.popleft() if self._queue else self.default
        if item is None:
            return error_reply(500, f"script exhausted: request {len(self.requests)} has no scripted reply")
        if callable(item):
            item = item(body)
        return ServerReply(item) if isinstance(item, str) else item

    # reply bodies ------------------------------------------------------------------------------------
    @staticmethod
    def _finish_reason(reply: ServerReply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    @staticmethod
    def _usage(body: dict[str, Any], reply: ServerReply) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        prompt = len(json.dumps(body.get("messages", []))) // 4 + 1
        completion = (len(reply.text) + len(reply.reasoning or "") + len(json.dumps(reply.tool_calls or []))) // 4 + 1
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, body: dict[str, Any], reply: ServerReply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message["tool_calls"] = _openai_calls(reply.tool_calls)
        if reply.reasoning is not None:
            message[reply.reasoning_field] = reply.reasoning
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason(reply)}],
            "usage": self._usage(body, reply),
        }
