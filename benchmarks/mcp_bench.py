"""The cost MCP adds per tool call, over a Python tool doing the same work (echo a short text).

    python benchmarks/mcp_bench.py [--calls 200]

Each variant calls ``Tool.acall`` (validation included, as the agent does) ``--calls`` times in a row from
one event loop, after a few warm-up calls: a Python ``@tool``, the same tool on tests/mcp_servers/demo_server.py
over stdio, and over streamable HTTP on 127.0.0.1. Prints the median and p90 per call and the ratio of the
MCP medians to the Python one. Server start-up time is reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agentcpm import Tool, tool
from agentcpm.mcp import MCPServer

SERVER = Path(__file__).resolve().parent.parent / "tests" / "mcp_servers" / "demo_server.py"


@tool
def echo(text: str) -> str:
    """Repeat the text."""
    return text


async def timings(target: Tool, calls: int) -> list[float]:
    for _ in range(5):
        await target.acall({"text": "warm"})
    out = []
    for n in range(calls):
        started = time.perf_counter()
        await target.acall({"text": f"call {n}"})
        out.append(time.perf_counter() - started)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    rows: list[tuple[str, list[float], float | None]] = [("python @tool", asyncio.run(timings(echo, args.calls)), None)]

    started = time.perf_counter()
    with MCPServer.stdio(sys.executable, [str(SERVER)], approval="allow") as server:
        startup = time.perf_counter() - started
        mcp_echo = next(t for t in server.tools() if t.name == "echo")
        rows.append(("MCP stdio", asyncio.run(timings(mcp_echo, args.calls)), startup))

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        started = time.perf_counter()
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        with MCPServer.http(f"http://127.0.0.1:{port}/mcp", approval="allow") as server:
            startup = time.perf_counter() - started
            mcp_echo = next(t for t in server.tools() if t.name == "echo")
            rows.append(("MCP streamable HTTP", asyncio.run(timings(mcp_echo, args.calls)), startup))
    finally:
        process.terminate()
        process.wait(10)

    base = statistics.median(rows[0][1])
    print(f"{args.calls} sequential calls each (echo of a short text), Tool.acall with validation\n")
    print(f"{'variant':<22}{'median':>12}{'p90':>12}{'vs python':>12}{'start-up':>12}")
    for name, values, startup in rows:
        median = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        up = f"{startup:.2f} s" if startup is not None else "-"
        print(f"{name:<22}{median * 1e3:>9.3f} ms{p90 * 1e3:>9.3f} ms{median / base:>11.0f}x{up:>12}")


if __name__ == "__main__":
    main()
