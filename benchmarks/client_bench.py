"""The Client's own cost per request over a bare ``openai`` client, and 200 concurrent calls on one Client.

    python benchmarks/client_bench.py [--calls 500] [--concurrent 200]

1. Per-call overhead: the same local OpenAI-compatible server (tests/openai_server.py, in its own process)
   answers "Hello!"; ``client.chat("hi")`` and a bare ``openai`` ``chat.completions.create`` call take
   turns, ``--calls`` times each after a warm-up. Printed: both medians and the difference (target: at
   most 1 ms added), in wall time and in CPU time of this process (the server runs in another process, so
   that is the client side alone, and steadier on a busy machine). What the difference buys: messages and
   options normalised, the dialect's fields, the answer through the tool-call parser, a typed ``Completion``.
   Then the same for ``await client.achat("hi")`` against a bare ``openai.AsyncOpenAI`` on one event loop.
2. Concurrency: ``--concurrent`` ``achat`` calls at once on one Client (the server waits 50 ms per answer so
   they overlap). Printed: errors, wall time, this process's open sockets before, after, after a second
   round (a leak would grow it) and after ``aclose`` (back to the start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai

from agentcpm import Client

TESTS = Path(__file__).resolve().parent.parent / "tests"
SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from openai_server import OpenAIServer, ServerReply
server = OpenAIServer(default=ServerReply("Hello!", delay={delay})).start()
print(server.base_url, flush=True)
sys.stdin.read()
"""


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    code = SERVER.format(tests=str(TESTS), delay=delay)
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def stop_server(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


MODEL = "openbmb/MiniCPM-V-4.6"
MESSAGES = [{"role": "user", "content": "hi"}]


def report(kind: str, wall: dict[str, list[float]], cpu: dict[str, list[float]], calls: int) -> None:
    for label, times in (("wall", wall), ("CPU in this process", cpu)):
        bare_median, client_median = statistics.median(times["bare"]), statistics.median(times["client"])
        print(
            f"{kind} per call, {label}, median of {calls} (ms): bare openai {bare_median * 1e3:.3f}, "
            f"client {client_median * 1e3:.3f}, added {(client_median - bare_median) * 1e3:+.3f}"
        )


def sync_overhead(url: str, calls: int) -> None:
    bare = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)
    client = Client(base_url=url, model=MODEL, dialect="vllm")

    def bare_call() -> str | None:
        return bare.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content  # type: ignore[arg-type]

    def client_call() -> str:
        return client.chat("hi").content

    assert bare_call() == client_call() == "Hello!"
    for _ in range(50):  # warm-up: connections, caches
        bare_call(), client_call()
    wall: dict[str, list[float]] = {"bare": [], "client": []}
    cpu: dict[str, list[float]] = {"bare": [], "client": []}
    for _ in range(calls):  # interleaved, so drift in the machine's load hits both alike
        for name, call in (("bare", bare_call), ("client", client_call)):
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    report("sync (chat)", wall, cpu, calls)
    client.close()
    bare.close()


async def async_overhead(url: str, calls: int) -> None:
    bare = openai.AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0)
    client = Client(base_url=url, model=MODEL, dialect="vllm")

    async def bare_call() -> str | None:
        answer = await bare.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        return answer.choices[0].message.content

    async def client_call() -> str:
        return (await client.achat("hi")).content

    assert await bare_call() == await client_call() == "Hello!"
    for _ in range(50):
        await bare_call(), await client_call()
    wall: dict[str, list[float]] = {"bare": [], "client": []}
    cpu: dict[str, list[float]] = {"bare": [], "client": []}
    for _ in range(calls):
        for name, call in (("bare", bare_call), ("client", client_call)):
            start, start_cpu = time.perf_counter(), time.process_time()
            await call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    report("async (achat)", wall, cpu, calls)
    await client.aclose()
    await bare.close()


def per_call_overhead(calls: int) -> None:
    process, url = start_server(0.0)
    try:
        sync_overhead(url, calls)
        asyncio.run(async_overhead(url, calls))
    finally:
        stop_server(process)


def concurrency(concurrent: int) -> None:
    process, url = start_server(0.05)

    async def main() -> None:
        client = Client(base_url=url, model="openbmb/MiniCPM-V-4.6", dialect="vllm")
        before = open_sockets()
        counts = []
        for _ in range(2):
            start = time.perf_counter()
            results = await asyncio.gather(*(client.achat(f"q{i}") for i in range(concurrent)), return_exceptions=True)
            wall = time.perf_counter() - start
            errors = [r for r in results if isinstance(r, BaseException)]
            wrong = sum(1 for r in results if not isinstance(r, BaseException) and r.content != "Hello!")
            counts.append(open_sockets())
            print(f"{concurrent} concurrent achat: {len(errors)} errors, {wrong} wrong answers, {wall:.2f} s wall")
            for error in errors[:3]:
                print("  error:", repr(error))
        await client.aclose()
        print(
            f"open sockets: before {before}, after round 1 {counts[0]}, after round 2 {counts[1]}, "
            f"after aclose {open_sockets()}"
        )

    try:
        asyncio.run(main())
    finally:
        stop_server(process)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=200)
    args = parser.parse_args()
    per_call_overhead(args.calls)
    concurrency(args.concurrent)
