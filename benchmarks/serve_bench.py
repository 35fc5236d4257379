"""What ``agentcpm serve`` adds in front of an upstream server, and how many requests per second it carries.

    python benchmarks/serve_bench.py [--calls 100] [--tokens 400] [--total 200]

The upstream is the scripted OpenAI-compatible server (tests/openai_server.py) in its own process, answering
with a tool call as markup in ``content`` (as Ollama does); ``agentcpm serve --upstream`` runs in another
process in front of it. This process is the client (httpx).

1. Per request: ``--calls`` non-streaming requests, one at a time, straight to the upstream and through serve,
   taking turns. Printed: both medians and the difference (what serve adds per request).
2. Per streamed token: one streamed answer of ``--tokens`` chunks (one token-sized piece each), straight and
   through serve, 5 times each. Printed: median seconds per chunk both ways and the difference per token.
3. Throughput: ``--total`` non-streaming requests through serve by 1, 8 and 32 concurrent clients. Printed:
   requests per second and errors (serve's queue is sized to take all of them: no 503s expected).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serve_process import ServeProcess  # noqa: E402

UPSTREAM = """
import sys
sys.path.insert(0, {tests!r})
from openai_server import OpenAIServer, ServerReply
from tiny_model import WEATHER_CALL
def reply(body):
    if body.get("stream") and body.get("max_tokens") == 99999:
        return ServerReply("word " * {tokens}, chunk_size=5)
    return ServerReply(WEATHER_CALL, chunk_size=8)
server = OpenAIServer(default=reply).start()
print(server.base_url, flush=True)
sys.stdin.read()
"""
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}}}}  # fmt: skip
BODY = {"model": "m", "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "tools": [TOOL]}


def one(client: httpx.Client, url: str, body: dict[str, object]) -> float:
    started = time.perf_counter()
    response = client.post(url + "/chat/completions", json=body)
    response.raise_for_status()
    return time.perf_counter() - started


def streamed(client: httpx.Client, url: str, tokens: int) -> float:
    body = {**BODY, "stream": True, "max_tokens": 99999}
    started = time.perf_counter()
    with client.stream("POST", url + "/chat/completions", json=body) as response:
        for _ in response.iter_bytes():
            pass
    return (time.perf_counter() - started) / tokens


async def throughput(url: str, clients: int, total: int) -> tuple[float, int]:
    errors = 0
    queue = list(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            queue.pop()
            response = await client.post(url + "/chat/completions", json=BODY)
            errors += response.status_code != 200

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return total / (time.perf_counter() - started), errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--total", type=int, default=200)
    args = parser.parse_args()
    code = UPSTREAM.format(tests=str(ROOT / "tests"), tokens=args.tokens)
    upstream = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert upstream.stdout is not None and upstream.stdin is not None
    direct = upstream.stdout.readline().strip()
    options = ["--upstream", direct, "--model", "m", "--max-concurrency", "64", "--max-queue", "512"]
    try:
        with ServeProcess(options) as serve, httpx.Client(timeout=60) as client:
            via = serve.base_url
            for url in (direct, via):
                one(client, url, BODY)
            straight, through = [], []
            for _ in range(args.calls):
                straight.append(one(client, direct, BODY))
                through.append(one(client, via, BODY))
            a, b = statistics.median(straight), statistics.median(through)
            print(
                f"per request: upstream {a * 1000:.2f} ms, through serve {b * 1000:.2f} ms, "
                f"added {(b - a) * 1000:.2f} ms"
            )
            s = statistics.median(streamed(client, direct, args.tokens) for _ in range(5))
            t = statistics.median(streamed(client, via, args.tokens) for _ in range(5))
            print(
                f"per streamed token: upstream {s * 1e6:.0f} us, through serve {t * 1e6:.0f} us, "
                f"added {(t - s) * 1e6:.0f} us"
            )
            for clients in (1, 8, 32):
                rate, errors = asyncio.run(throughput(via, clients, args.total))
                print(f"{clients:>2} concurrent clients: {rate:.0f} requests/s through serve, {errors} errors")
    finally:
        upstream.stdin.close()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
