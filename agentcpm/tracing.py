"""OpenTelemetry tracing: a span for each agent run, each model request and each tool call.

Off by default, and then free: nothing from ``opentelemetry`` is imported and the call sites only check
``tracing.tracer is None``. :func:`instrument` turns it on (``pip install "agentcpm[otel]"``)::

    import agentcpm
    agentcpm.instrument()                      # the global TracerProvider, or tracer_provider=...
    agentcpm.instrument(capture_content=True)  # also the messages, tool arguments and results

Spans follow the OpenTelemetry GenAI semantic conventions: ``invoke_agent`` (``gen_ai.operation.name`` =
``invoke_agent``), under it ``chat {model}`` per model request (``gen_ai.request.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.response.finish_reasons``) and
``execute_tool {name}`` per tool call (``gen_ai.tool.name``, ``gen_ai.tool.call.id``). A failed tool call or
request sets the span's status to ERROR (with ``error.type``; exceptions are recorded as span events).
Message content (``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.tool.call.arguments`` /
``result``) is recorded only with ``capture_content=True``; images never are (only their size).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from typing import Any, TypeVar

from .types import Completed, Completion

__all__ = ["instrument", "trace_file", "uninstrument"]

T = TypeVar("T")

#: The tracer in use, or None (tracing off). Call sites check it before doing anything else.
tracer: Any = None
capture_content = False


def instrument(tracer_provider: Any = None, *, capture_content: bool = False) -> None:
    """Emit OpenTelemetry spans for agent runs, model requests and tool calls from now on.

    ``tracer_provider``: where spans go (default: OpenTelemetry's global provider). ``capture_content``:
    also record messages, tool arguments and tool results on the spans (off: they may hold private data).
    """
    try:
        from opentelemetry import trace
    except ImportError as exc:
        from .errors import MissingDependencyError

        raise MissingDependencyError("opentelemetry-api and opentelemetry-sdk", "otel", "tracing") from exc
    from . import __version__

    global tracer
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = provider.get_tracer("agentcpm", __version__)
    globals()["capture_content"] = capture_content


def uninstrument() -> None:
    """Stop emitting spans."""
    global tracer
    tracer = None


@contextmanager
def trace_file(path: str | None) -> Iterator[None]:
    """While inside, the spans go to ``path``, one JSON object per line (the console exporter's JSON);
    ``None``: nothing changes. (``agentcpm run --trace FILE``.)"""
    if path is None:
        yield
        return
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError as exc:
        from .errors import MissingDependencyError

        raise MissingDependencyError("opentelemetry-api and opentelemetry-sdk", "otel", "--trace") from exc
    previous, previous_content = tracer, capture_content
    with open(path, "a", encoding="utf-8") as out:
        provider = TracerProvider()
        exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrument(provider, capture_content=capture_content)
        try:
            yield
        finally:
            provider.shutdown()
            globals().update(tracer=previous, capture_content=previous_content)


# ---------------------------------------------------------------------------- spans


def _fail(span: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(exc).__qualname__)
    if isinstance(exc, Exception):
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:500] or type(exc).__name__))


async def traced(
    name: str, attributes: dict[str, Any], events: AsyncGenerator[T, None], observe: Callable[[Any, T], None]
) -> AsyncGenerator[T, None]:
    """``events`` inside a span: the span is current while ``events`` runs (so spans it starts are its
    children), even when each step runs in a task of its own (the sync driver); ``observe(span, item)``
    sees each item. An exception ends the span with status ERROR; what is thrown in goes on to ``events``."""
    from opentelemetry import context, trace

    span = tracer.start_span(name, attributes=attributes)
    inside = trace.set_span_in_context(span)
    thrown: BaseException | None = None
    try:
        while True:
            token = context.attach(inside)
            try:
                item = await (events.__anext__() if thrown is None else events.athrow(thrown))
            except StopAsyncIteration:
                break
            finally:
                thrown = None
                context.detach(token)
            observe(span, item)
            try:
                yield item
            except GeneratorExit:
                raise
            except BaseException as exc:  # athrow(KeyboardInterrupt) from the sync driver: pass it on
                thrown = exc
    except GeneratorExit:
        raise
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        try:
            await events.aclose()
        finally:
            span.end()


def _server(backend: Any) -> dict[str, Any]:
    base_url = getattr(backend, "base_url", None)
    if not isinstance(base_url, str):
        return {"gen_ai.provider.name": "agentcpm.local"}
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    out: dict[str, Any] = {"gen_ai.provider.name": "openai", "server.address": parts.hostname or ""}
    if parts.port:
        out["server.port"] = parts.port
    return out


def _messages_json(messages: Sequence[Any]) -> str:
    """Messages as the GenAI conventions' JSON (role, parts); images as a placeholder, never their data."""
    out = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        for part in message.content:
            text = getattr(part, "text", None)
            parts.append({"type": "text", "content": text} if text is not None else {"type": type(part).__name__})
        for call in message.tool_calls:
            parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
        if message.role == "tool":
            parts = [{"type": "tool_call_response", "id": message.tool_call_id, "response": message.text}]
        out.append({"role": message.role, "parts": parts})
    return json.dumps(out, ensure_ascii=False, default=str)


def model_request(
    events: AsyncGenerator[Any, None], backend: Any, messages: Sequence[Any], options: Any
) -> AsyncGenerator[Any, None]:
    """A model request's events inside a ``chat {model}`` span (``chat`` while a server's default model is
    not known yet; renamed when the answer comes)."""
    model = getattr(backend, "model", None)
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", **_server(backend)}
    if model:
        attributes["gen_ai.request.model"] = str(model)
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        value = getattr(options, name, None)
        if value is not None:
            attributes[f"gen_ai.request.{name}"] = value
    if capture_content:
        attributes["gen_ai.input.messages"] = _messages_json(messages)

    def observe(span: Any, event: Any) -> None:
        if not isinstance(event, Completed):
            return
        completion = event.completion
        usage = completion.usage
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason or "unknown"])
        answered_by = getattr(backend, "model", None)
        if answered_by:
            span.set_attribute("gen_ai.response.model", str(answered_by))
            if not model:
                span.update_name(f"chat {answered_by}")
        if capture_content:
            span.set_attribute("gen_ai.output.messages", _messages_json([completion.to_message()]))

    return traced(f"chat {model}" if model else "chat", attributes, events, observe)


async def model_completion(
    completion: Awaitable[Completion], backend: Any, messages: Sequence[Any], options: Any
) -> Completion:
    """A whole-answer model request (``engine.complete``) inside a ``chat {model}`` span."""

    async def one() -> AsyncGenerator[Completed, None]:
        yield Completed(await completion)

    answers: list[Completion] = []
    async with aclosing(model_request(one(), backend, messages, options)) as events:
        answers.extend([event.completion async for event in events])
    return answers[-1]


def agent_run(events: AsyncGenerator[T, None], agent: Any) -> AsyncGenerator[T, None]:
    """An agent run's events inside an ``invoke_agent`` span (usage summed when it finishes)."""
    model = getattr(agent.client, "model", None) or getattr(agent.client.backend, "model", None)
    attributes: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", "gen_ai.system": "agentcpm"}
    name = getattr(agent, "name", None)
    if name:
        attributes["gen_ai.agent.name"] = str(name)
    if model:
        attributes["gen_ai.request.model"] = str(model)
    return traced(f"invoke_agent {name}" if name else "invoke_agent", attributes, events, _on_agent_event)


def _on_agent_event(span: Any, event: Any) -> None:
    if getattr(event, "type", None) != "run.finished":
        return
    usage = event.result.usage
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    span.set_attribute("agentcpm.steps", len(event.result.steps))
    if capture_content:
        span.set_attribute("gen_ai.output.messages", _messages_json(event.result.messages[-1:]))


async def tool_call(call: Any, execute: Callable[[], Awaitable[T]]) -> T:
    """``await execute()`` (running ``call``) inside an ``execute_tool {name}`` span; a result with
    ``is_error`` (or an exception) sets the status to ERROR."""
    from opentelemetry import context, trace
    from opentelemetry.trace import Status, StatusCode

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name or "unknown",
        "gen_ai.tool.call.id": call.id,
        "gen_ai.tool.type": "function",
    }
    if capture_content:
        attributes["gen_ai.tool.call.arguments"] = json.dumps(call.arguments, ensure_ascii=False, default=str)
    span = tracer.start_span(f"execute_tool {call.name}", attributes=attributes)
    token = context.attach(trace.set_span_in_context(span))
    try:
        result = await execute()
    except BaseException as exc:
        _fail(span, exc)
        raise
    else:
        found = getattr(result, "result", result)  # a decision holding the result, or the result
        if getattr(found, "is_error", False):
            text = getattr(found, "text", "") or "the tool failed"
            error = str(getattr(result, "error", None) or "")  # "ValueError: ..." when the tool raised
            kind = error.split(":", 1)[0]
            span.set_attribute("error.type", kind if ":" in error and kind.isidentifier() else "tool_error")
            span.set_status(Status(StatusCode.ERROR, text[:500]))
        if capture_content and found is not None and hasattr(found, "text"):
            span.set_attribute("gen_ai.tool.call.result", found.text)
        return result
    finally:
        context.detach(token)
        span.end()
