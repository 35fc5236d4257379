"""MCP servers for the tests (written with the ``mcp`` SDK's server API, run as subprocesses), and helpers to
check that their processes are gone."""

from __future__ import annotations

import time
from pathlib import Path

#: The demo server: text, image, isError, hanging and crashing tools (see its docstring).
SERVER = Path(__file__).resolve().parent / "demo_server.py"


def gone(pid: int) -> bool:
    """True when the process is gone and reaped: no /proc entry (a zombie keeps one, in state Z)."""
    return not Path(f"/proc/{pid}").exists()


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 15
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)
