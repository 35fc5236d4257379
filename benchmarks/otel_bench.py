"""What tracing costs per agent step: the same 10-step run (9 tool calls, then an answer) on a ScriptedBackend
whose replies are raw model text (parser included), with tracing off, and on with three span pipelines.

    python benchmarks/otel_bench.py [--runs 30]

Each step makes two spans (``chat``, ``execute_tool``) plus one ``invoke_agent`` per run. Modes:
  off        agentcpm.instrument() never called (opentelemetry not even imported: checked)
  sdk        the SDK's TracerProvider with no processor (span objects made and ended, nothing exported)
  memory     SimpleSpanProcessor + InMemorySpanExporter (each span handed over as it ends)
  batch      BatchSpanProcessor + an exporter that drops the spans (the usual production pipeline)
  content    memory, with capture_content=True (messages and arguments serialised onto the spans)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from agentcpm import Agent, Client, ScriptedBackend, tool, tracing

STEPS = 10


@tool
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


def script() -> list[str]:
    params = "<parameter=a>\n{i}\n</parameter>\n<parameter=b>\n1\n</parameter>\n"
    call = "<tool_call>\n<function=add>\n" + params + "</function>\n</tool_call>"
    return [call.format(i=i) for i in range(STEPS - 1)] + ["Done."]


def one_run() -> float:
    agent = Agent(Client(backend=ScriptedBackend(script())), tools=[add], approval="allow", max_steps=STEPS + 1)
    started = time.perf_counter()
    result = agent.run("Add 1 to each number from 0 to 8, one call at a time.")
    elapsed = time.perf_counter() - started
    assert result.output == "Done." and len(result.steps) == STEPS
    return elapsed


def per_step_us(runs: int) -> float:
    for _ in range(3):  # warm up
        one_run()
    return statistics.median(one_run() for _ in range(runs)) / STEPS * 1e6


def pipeline(mode: str) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    if mode in ("memory", "content"):
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    elif mode == "batch":
        provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    results = {"off": per_step_us(args.runs)}
    assert not any(m.startswith("opentelemetry") for m in sys.modules), "tracing off imported opentelemetry"
    for mode in ("sdk", "memory", "batch", "content"):
        provider = pipeline(mode)
        tracing.instrument(provider, capture_content=mode == "content")
        try:
            results[mode] = per_step_us(args.runs)
        finally:
            tracing.uninstrument()
            provider.shutdown()
    results["off again"] = per_step_us(args.runs)
    base = results["off"]
    print(f"{'mode':<10} {'µs/step':>9} {'overhead µs/step':>17}   (10-step run, median of {args.runs})")
    for mode, value in results.items():
        print(f"{mode:<10} {value:9.0f} {value - base:17.0f}")


if __name__ == "__main__":
    main()
