"""The sync driver (agentcpm/_sync.py) that Client and Agent share: sync calls over the async engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from agentcpm import Client, ScriptedBackend

TESTS = Path(__file__).resolve().parent


def test_a_sync_stream_over_a_server_exits_without_destroyed_tasks() -> None:
    """The per-thread loop is shut down at exit like asyncio.run would: no 'Task was destroyed' noise."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from openai_server import OpenAIServer
        from agentcpm import Client
        with OpenAIServer() as server:
            server.push("Hello there, friend.", "Fine.")
            client = Client(base_url=server.base_url, model=server.model)
            print("".join(getattr(e, "text", "") for e in client.stream("hi")))
            print(client.chat("again?").finish_reason)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Hello there, friend." in out.stdout
    assert "Task was destroyed" not in out.stderr and "Traceback" not in out.stderr


def test_sync_calls_work_inside_a_running_event_loop() -> None:
    """In a notebook an event loop already runs: chat and stream still work (on a worker thread)."""
    client = Client(backend=ScriptedBackend(["one", "two"]))

    async def inside() -> tuple[str, str]:
        first = client.chat("hi").content
        second = "".join(e.text for e in client.stream("hi") if e.type == "content.delta")
        return first, second

    assert asyncio.run(inside()) == ("one", "two")


def test_a_base_url_with_a_query_works_and_its_key_is_never_shown(openai_server) -> None:
    """Gateways put a version or a key in the query (``?api-version=..&api-key=..``): every request carries
    it, and no message shows the key."""
    from agentcpm.errors import AgentCPMError

    openai_server.push("Fine.")
    url = openai_server.base_url + "?api-version=2024-10-21&api-key=sup3rs3cret"
    client = Client(base_url=url, model=openai_server.model, max_retries=0)
    assert client.chat("hi").content == "Fine."
    assert "api-version=2024-10-21" in openai_server.log[-1][1]
    assert "sup3rs3cret" not in repr(client)
    try:
        client.chat("no reply scripted: the server fails")
    except AgentCPMError as exc:
        assert "sup3rs3cret" not in str(exc)
    else:
        raise AssertionError("expected an error")
