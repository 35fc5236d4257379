"""Requests per second and p50/p95 latency over 1 vs 3 replicas (Client(base_url=[...])).

Each replica is the scripted OpenAI server of the tests (tests/openai_server.py) on 127.0.0.1 that holds each
answer 100 ms and answers at most ``--capacity`` requests at once (a server's batch: more wait), so one
replica saturates and three share the load. 32 runs at once on one event loop, each a conversation of
``--turns`` requests (affinity keeps each on one replica).

    python benchmarks/replicas_bench.py [--runs 32] [--turns 10] [--capacity 8] [--hold 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from openai_server import OpenAIServer, ServerReply

from agentcpm import Client
from agentcpm.types import Message


def scripted_server(hold: float, capacity: int) -> OpenAIServer:
    slots = threading.BoundedSemaphore(capacity)

    def answer(body: dict[str, Any]) -> ServerReply:
        with slots:  # at most `capacity` answers at once; the others wait, as on a busy GPU
            time.sleep(hold)
        return ServerReply("ok")

    return OpenAIServer(default=answer).start()


async def one_run(client: Client, run: int, turns: int, latencies: list[float]) -> None:
    messages = [Message("system", "Be brief."), Message("user", f"run {run}: first question")]
    for turn in range(turns):
        started = time.perf_counter()
        completion = await client.achat(messages)
        latencies.append(time.perf_counter() - started)
        messages += [completion.to_message(), Message("user", f"question {turn + 2}")]


async def measure(urls: list[str], runs: int, turns: int) -> dict[str, float]:
    client = Client(base_url=urls, model="m")
    await client.achat("warm up")  # connections and discovery out of the timing
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(one_run(client, run, turns, latencies) for run in range(runs)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    quantiles = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": quantiles[49] * 1000, "p95": quantiles[94] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=8, help="answers one replica computes at once")
    parser.add_argument("--hold", type=float, default=0.1, help="seconds each answer takes")
    args = parser.parse_args()
    servers = [scripted_server(args.hold, args.capacity) for _ in range(3)]
    print(
        f"{args.runs} runs at once x {args.turns} requests; each answer held {args.hold * 1000:.0f} ms, "
        f"{args.capacity} at once per replica"
    )
    print(f"{'replicas':>8} {'requests/s':>11} {'p50 ms':>8} {'p95 ms':>8}")
    try:
        for count in (1, 3):
            result = asyncio.run(measure([s.base_url for s in servers[:count]], args.runs, args.turns))
            print(f"{count:>8} {result['rps']:>11.1f} {result['p50']:>8.0f} {result['p95']:>8.0f}")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
