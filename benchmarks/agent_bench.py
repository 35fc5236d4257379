"""The agent loop's own cost per step, and the same 10-step tool loop in other agent frameworks.

    python benchmarks/agent_bench.py [--runs 30]

1. ScriptedBackend, model excluded: a 10-step run (9 tool calls, then an answer) whose replies are ready
   ``Completion`` objects, so what is timed is the loop (validation, tool dispatch, messages, events,
   the image policy) plus the Client. Also with raw model text (adds the parser) and with async tools.
2. One local OpenAI-compatible HTTP server (tests/openai_server.py, structured ``tool_calls`` replies) and
   the same 10-step loop in agentcpm, the OpenAI Agents SDK and pydantic-ai, when they are installed;
   a raw ``openai`` client making the same 10 requests is the baseline, so "loop overhead" is a
   framework's time per step minus the baseline's.

The frameworks are not agentcpm dependencies; install them in a separate environment for this script:
``python -m venv --system-site-packages /tmp/bench && /tmp/bench/bin/pip install openai-agents
"pydantic-ai-slim[openai]"`` and run it with ``/tmp/bench/bin/python``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentcpm import Agent, Client, Completion, ScriptedBackend, ToolCall, tool

STEPS = 10
QUESTION = "Add 1 to each number from 0 to 8, one call at a time, then tell me you are done."
ANSWER = "Done."


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


async def add_async(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def markup(i: int) -> str:
    return (
        f"<tool_call>\n<function=add>\n<parameter=a>\n{i}\n</parameter>\n<parameter=b>\n1\n</parameter>\n"
        "</function>\n</tool_call>"
    )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


# ---------------------------------------------------------------------------- 1. ScriptedBackend


def scripted_run(kind: str) -> tuple[float, float]:
    """One 10-step run; returns (wall seconds, CPU seconds of the whole process) per step."""
    if kind == "text":
        script: list[Any] = [markup(i) for i in range(STEPS - 1)] + [ANSWER]
    else:
        script = [
            Completion(tool_calls=[ToolCall(name="add", arguments={"a": i, "b": 1})], finish_reason="tool_calls")
            for i in range(STEPS - 1)
        ] + [Completion(content=ANSWER, finish_reason="stop")]
    fn = add_async if kind == "async tools" else add
    agent = Agent(Client(backend=ScriptedBackend(script)), tools=[tool(fn, name="add")])
    started, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(agent.arun(QUESTION)) if kind == "arun" else agent.run(QUESTION)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert result.output == ANSWER and len(result.steps) == STEPS, result
    return elapsed / STEPS, cpu / STEPS


def bench_scripted(runs: int) -> None:
    print(f"## ScriptedBackend, {STEPS}-step run, median of {runs} runs (ms per step)")
    print("| variant | wall ms/step | CPU ms/step |")
    print("|---|---:|---:|")
    for kind, label in [
        ("completion", "run(), ready Completions, sync tool (the loop's own cost)"),
        ("arun", "arun(), ready Completions, sync tool"),
        ("async tools", "run(), ready Completions, async tool"),
        ("text", "run(), raw model text (adds the parser), sync tool"),
    ]:
        scripted_run(kind)  # warm up
        samples = [scripted_run(kind) for _ in range(runs)]
        wall, cpu = median_ms([w for w, _ in samples]), median_ms([c for _, c in samples])
        print(f"| {label} | {wall:.3f} | {cpu:.3f} |")
    print()


# ---------------------------------------------------------------------------- 2. frameworks over HTTP


SERVER = """
import sys
sys.path.insert(0, {tests!r})
from openai_server import OpenAIServer, ServerReply

def reply(body):
    # Call add(a=n, b=1) while fewer than STEPS - 1 results came back, then answer.
    done = sum(1 for m in body["messages"] if m.get("role") == "tool")
    if done < {steps} - 1:
        return ServerReply(tool_calls=[{{"name": "add", "arguments": {{"a": done, "b": 1}}}}], chunk_size=64)
    return ServerReply({answer!r}, chunk_size=64)

server = OpenAIServer(default=reply).start()
print(server.base_url, server.model, flush=True)
sys.stdin.read()
"""


# Each framework is set up once (client, agent, connection pool), then run again and again on one event loop:
# what is timed is the steady per-run cost. Creating a client (an httpx pool with an SSL context, tens of ms
# of CPU) inside every timed run, as this script once did, added a per-framework constant divided by only 10
# steps, and that constant, not the loops, decided the comparison.
RunOnce = Callable[[], Any]


async def raw_openai(base_url: str, model: str) -> tuple[RunOnce, Callable[[], Any]]:
    """The baseline: the same 10 requests with the bare openai client (the tool run inline)."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    schema = tool(add).to_openai()

    async def run() -> None:
        messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
        for _ in range(STEPS):
            response = await client.chat.completions.create(model=model, messages=messages, tools=[schema])  # type: ignore[arg-type]
            message = response.choices[0].message
            if not message.tool_calls:
                return
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
                messages.append({"role": "tool", "tool_call_id": call.id, "content": str(add(**arguments))})

    return run, client.close


async def agentcpm_http(base_url: str, model: str) -> tuple[RunOnce, Callable[[], Any]]:
    client = Client(base_url=base_url, model=model)
    agent = Agent(client, tools=[add])

    async def run() -> None:
        result = await agent.arun(QUESTION)
        assert result.output == ANSWER and len(result.steps) == STEPS

    return run, client.aclose


async def openai_agents_sdk(base_url: str, model: str) -> tuple[RunOnce, Callable[[], Any]]:
    import openai
    from agents import Agent as SdkAgent
    from agents import OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    agent = SdkAgent(
        name="bench",
        instructions=None,
        tools=[function_tool(add)],
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
    )

    async def run() -> None:
        result = await Runner.run(agent, QUESTION, max_turns=STEPS + 5)
        assert result.final_output == ANSWER, result.final_output

    return run, client.close


async def pydantic_ai(base_url: str, model: str) -> tuple[RunOnce, Callable[[], Any]]:
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    agent = PydanticAgent(OpenAIChatModel(model, provider=OpenAIProvider(base_url=base_url, api_key="unused")))
    agent.tool_plain(add)

    async def run() -> None:
        result = await agent.run(QUESTION)
        assert result.output == ANSWER, result.output

    async def nothing() -> None:
        return None

    return run, nothing


async def timed_http_runs(base_url: str, model: str, setup: Any, runs: int) -> tuple[float, list[tuple[float, float]]]:
    """(CPU seconds of the setup, [(wall, CPU) seconds per step of each run]); the server runs in another
    process, so the CPU time is the client's. Two untimed runs first (imports, connections, caches)."""
    cpu = time.process_time()
    run, close = await setup(base_url, model)
    setup_cpu = time.process_time() - cpu
    try:
        for _ in range(2):
            await run()
        samples = []
        for _ in range(runs):
            gc.collect()  # each run starts from a clean heap: a collection another run left is not billed here
            started, cpu = time.perf_counter(), time.process_time()
            await run()
            samples.append(((time.perf_counter() - started) / STEPS, (time.process_time() - cpu) / STEPS))
        return setup_cpu, samples
    finally:
        await close()


def bench_http(runs: int) -> None:
    tests = Path(__file__).resolve().parent.parent / "tests"
    code = SERVER.format(tests=str(tests), steps=STEPS, answer=ANSWER)
    server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    base_url, model = server.stdout.readline().split()
    candidates: list[tuple[str, Callable[[str, str], Any], str | None]] = [
        ("raw openai client (baseline: HTTP + JSON, no streaming)", raw_openai, None),
        ("agentcpm Agent.arun (streams SSE)", agentcpm_http, None),
        ("OpenAI Agents SDK Runner.run", openai_agents_sdk, "agents"),
        ("pydantic-ai Agent.run", pydantic_ai, "pydantic_ai"),
    ]
    print(f"## The same {STEPS}-step tool loop against one local HTTP server, median of {runs} runs")
    print("Each set up once; setup CPU (client, agent) is reported apart, not spread over the steps.")
    print(
        "| framework | version | wall ms/step | client CPU ms/step | CPU quartiles | CPU over baseline "
        "| CPU vs agentcpm | setup CPU ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows: list[tuple[str, str, float, float, str, float]] = []
    try:
        for label, runner, module in candidates:
            version = "-"
            if module is not None:
                try:
                    __import__(module)
                except ImportError:
                    print(f"| {label} | not installed | | | | |")
                    continue
                from importlib.metadata import version as dist_version

                version = dist_version({"agents": "openai-agents", "pydantic_ai": "pydantic-ai-slim"}[module])
            try:
                setup_cpu, samples = asyncio.run(timed_http_runs(base_url, model, runner, runs))
            except Exception as exc:  # a framework version with another API: report it, do not stop
                print(f"| {label} | {version} | failed: {type(exc).__name__}: {exc} | | | | |")
                continue
            cpus = sorted(c for _, c in samples)
            quartiles = f"{cpus[len(cpus) // 4] * 1000:.2f}-{cpus[3 * len(cpus) // 4] * 1000:.2f}"
            wall, cpu = median_ms([w for w, _ in samples]), median_ms(cpus)
            rows.append((label, version, wall, cpu, quartiles, setup_cpu * 1000))
    finally:
        server.stdin.close()
        server.wait(10)
    # Wall time on a shared machine is noisy; the client process's CPU time minus the bare client's is what
    # each framework's loop costs per step.
    baseline = rows[0][3]
    ours = next((cpu for label, _, _, cpu, _, _ in rows if label.startswith("agentcpm")), None)
    for label, version, wall, cpu, quartiles, setup_cpu in rows:
        ratio = f"{cpu / ours:.2f}x" if ours else "-"
        print(
            f"| {label} | {version} | {wall:.2f} | {cpu:.2f} | {quartiles} | {cpu - baseline:+.2f} | {ratio} "
            f"| {setup_cpu:.1f} |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}\n")
    bench_scripted(args.runs)
    bench_http(args.runs)


if __name__ == "__main__":
    main()
