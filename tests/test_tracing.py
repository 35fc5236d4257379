"""OpenTelemetry tracing (agentcpm.tracing): the span tree of real agent runs (ScriptedBackend through the real
engine, parser and tool execution; a real HTTP server for the CLI), read back from the SDK's in-memory
exporter; and nothing imported or emitted when tracing is off."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install 'agentcpm[otel]'")

from cli_process import agentcpm
from markup import call
from openai_server import OpenAIServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import agentcpm as agentcpm_package
from agentcpm import Agent, Client, ScriptedBackend, tool, tracing
from agentcpm.errors import BackendError


@tool
def lookup(word: str) -> str:
    """Look a word up.

    Args:
        word: The word.
    """
    return f"{word}: a Python SDK"


@tool
def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise ValueError(f"boom because {reason}")


TWO_CALLS = call("lookup", word="agentcpm") + "\n" + call("explode", reason="testing")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agentcpm_package.instrument(tracer_provider=provider)
    yield exporter
    tracing.uninstrument()
    provider.shutdown()


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        out.setdefault(span.name, []).append(span)
    return out


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def make_agent(*script: Any) -> Agent:
    return Agent(Client(backend=ScriptedBackend(list(script))), tools=[lookup, explode], approval="allow")


def check_tree(finished: tuple[ReadableSpan, ...]) -> None:
    """invoke_agent > (chat, execute_tool lookup, execute_tool explode, chat), with their attributes."""
    spans = by_name(finished)
    assert sorted(spans) == ["chat", "execute_tool explode", "execute_tool lookup", "invoke_agent"]
    (run,) = spans["invoke_agent"]
    assert run.parent is None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    chats = spans["chat"]
    assert len(chats) == 2
    tools = spans["execute_tool lookup"] + spans["execute_tool explode"]
    assert all(parent_id(s) == run.context.span_id for s in chats + tools)
    assert all(s.context.trace_id == run.context.trace_id for s in finished)
    first, second = sorted(chats, key=lambda s: s.start_time)
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert "gen_ai.request.model" not in first.attributes  # a scripted backend has no model name
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert first.attributes["gen_ai.usage.input_tokens"] > 0 and first.attributes["gen_ai.usage.output_tokens"] > 0
    total_in = sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats)
    assert run.attributes["gen_ai.usage.input_tokens"] == total_in
    # the tools ran between the two requests
    assert all(first.end_time <= s.start_time and s.end_time <= second.start_time for s in tools)
    (good,) = spans["execute_tool lookup"]
    (bad,) = spans["execute_tool explode"]
    assert good.attributes["gen_ai.operation.name"] == "execute_tool"
    assert good.attributes["gen_ai.tool.name"] == "lookup"
    assert good.attributes["gen_ai.tool.call.id"] and bad.attributes["gen_ai.tool.call.id"]
    assert good.attributes["gen_ai.tool.call.id"] != bad.attributes["gen_ai.tool.call.id"]
    assert good.status.status_code is StatusCode.UNSET
    assert bad.status.status_code is StatusCode.ERROR
    assert "boom because testing" in (bad.status.description or "")
    assert bad.attributes["error.type"] == "ValueError"
    assert run.status.status_code is StatusCode.UNSET  # a failed tool is the model's to handle, not the run's
    for span in finished:  # no content unless asked for
        assert not any(
            key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.a", "gen_ai.tool.call.r"))
            for key in span.attributes
        )


def test_the_span_tree_of_a_sync_run_with_two_tool_calls_one_failing(spans: InMemorySpanExporter) -> None:
    result = make_agent(TWO_CALLS, "It is a Python SDK.").run("What is agentcpm?")
    assert result.output == "It is a Python SDK."
    check_tree(spans.get_finished_spans())


def test_the_span_tree_of_an_async_run(spans: InMemorySpanExporter) -> None:
    result = asyncio.run(make_agent(TWO_CALLS, "It is a Python SDK.").arun("What is agentcpm?"))
    assert result.output == "It is a Python SDK."
    check_tree(spans.get_finished_spans())


def test_streamed_run_spans_end_when_the_stream_is_consumed(spans: InMemorySpanExporter) -> None:
    events = list(make_agent(TWO_CALLS, "Done.").stream("go"))
    assert events[-1].type == "run.finished"
    check_tree(spans.get_finished_spans())


def test_content_is_recorded_only_when_asked_for() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agentcpm_package.instrument(tracer_provider=provider, capture_content=True)
    try:
        make_agent(TWO_CALLS, "It is a Python SDK.").run("What is agentcpm?")
    finally:
        tracing.uninstrument()
    spans = by_name(exporter.get_finished_spans())
    first = min(spans["chat"], key=lambda s: s.start_time)
    sent = json.loads(first.attributes["gen_ai.input.messages"])
    assert sent[-1] == {"role": "user", "parts": [{"type": "text", "content": "What is agentcpm?"}]}
    answer = json.loads(first.attributes["gen_ai.output.messages"])
    assert [p["name"] for p in answer[0]["parts"] if p["type"] == "tool_call"] == ["lookup", "explode"]
    (good,) = spans["execute_tool lookup"]
    assert json.loads(good.attributes["gen_ai.tool.call.arguments"]) == {"word": "agentcpm"}
    assert good.attributes["gen_ai.tool.call.result"] == "agentcpm: a Python SDK"


def test_a_failed_request_ends_its_spans_with_status_error(spans: InMemorySpanExporter) -> None:
    agent = make_agent(BackendError("the server fell over"))
    with pytest.raises(BackendError):
        agent.run("hi")
    found = by_name(spans.get_finished_spans())
    (chat,) = found["chat"]
    (run,) = found["invoke_agent"]
    for span in (chat, run):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "BackendError"
        assert any(event.name == "exception" for event in span.events)
    assert parent_id(chat) == run.context.span_id


def test_client_chat_and_stream_make_one_chat_span_each(spans: InMemorySpanExporter) -> None:
    client = Client(backend=ScriptedBackend(["Hello!", "Again!"]))
    assert client.chat("hi", max_tokens=50).content == "Hello!"
    assert "".join(getattr(e, "text", "") for e in client.stream("hi")) == "Again!"
    chats = spans.get_finished_spans()
    assert [s.name for s in chats] == ["chat", "chat"]
    assert chats[0].attributes["gen_ai.request.max_tokens"] == 50
    assert all(s.parent is None for s in chats)


def test_no_spans_after_uninstrument(spans: InMemorySpanExporter) -> None:
    tracing.uninstrument()
    make_agent(TWO_CALLS, "ok").run("go")
    assert spans.get_finished_spans() == ()


def test_nothing_is_imported_without_instrumentation() -> None:
    """A whole agent run (two tool calls, one failing) and a client call import no opentelemetry."""
    inline = textwrap.dedent(f"""
        import sys
        from agentcpm import Agent, Client, ScriptedBackend, tool

        @tool
        def lookup(word: str) -> str:
            "Look a word up."
            return word

        @tool
        def explode(reason: str) -> str:
            "Always fails."
            raise ValueError(reason)

        script = [{TWO_CALLS!r}, "ok"]
        agent = Agent(Client(backend=ScriptedBackend(script)), tools=[lookup, explode], approval="allow")
        assert agent.run("go").output == "ok"
        Client(backend=ScriptedBackend(["hi"])).chat("hi")
        print("LEAKED", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """)
    out = subprocess.run([sys.executable, "-c", inline], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LEAKED []" in out.stdout


def test_run_trace_writes_the_spans_of_a_cli_run_to_a_file(tmp_path: Path) -> None:
    with OpenAIServer([call("lookup", word="x"), "All done."]) as server:
        trace = tmp_path / "trace.jsonl"
        out = agentcpm(
            tmp_path,
            "run",
            "do it",
            "--base-url",
            server.base_url,
            "--tools",
            "none",
            "--trace",
            str(trace),
            "--no-log",
        )
    assert out.returncode == 0, out.stderr
    assert "All done." in out.stdout
    spans = [json.loads(line) for line in trace.read_text().splitlines()]
    names = [s["name"] for s in spans]
    assert names.count("invoke_agent") == 1
    assert names.count(f"chat {server.model}") == 2  # the first one named once the server's model is known
    (run,) = [s for s in spans if s["name"] == "invoke_agent"]
    assert all(s["parent_id"] == run["context"]["span_id"] for s in spans if s is not run)
    chat = next(s for s in spans if s["name"].startswith("chat"))
    assert chat["attributes"]["server.address"] == "127.0.0.1"
    assert any(s["attributes"].get("gen_ai.request.model") == server.model for s in spans)
    assert chat["attributes"]["gen_ai.usage.output_tokens"] > 0
