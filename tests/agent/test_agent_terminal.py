"""The agent in a real process: Ctrl-C (SIGINT) stops a run cleanly; approval="ask" prompts on the terminal."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from agentcpm import Agent, Client, ContentDelta, Reply, ScriptedBackend, ToolStarted, tool
    from agentcpm.errors import AgentCancelled
    from agentcpm.format import render_tool_calls
    from agentcpm.types import ToolCall

    def call(name, **arguments):  # tests/markup.py's call(), in a script that runs outside the tests directory
        return render_tool_calls([ToolCall(name=name, arguments=arguments)])

    @tool
    def slow() -> str:
        '''Slow.'''
        time.sleep(60)
        return "done"

    @tool(requires_approval=True)
    def transfer(amount: int) -> str:
        '''Transfer money.'''
        return f"sent {amount}"

    def ready(event):
        if isinstance(event, (ToolStarted, ContentDelta)) and not getattr(ready, "said", False):
            ready.said = True
            print("READY", flush=True)

    mode = sys.argv[1]
    streaming = mode.startswith("stream-")
    mode = mode.removeprefix("stream-")
    if mode == "tool":
        script, tools = [call("slow"), "never"], [slow]
    elif mode == "model":
        script, tools = [Reply("words " * 500, chunk_delay=0.02)], []
    else:
        script, tools = [call("transfer", amount=5), "ok"], [transfer]
    agent = Agent(Client(backend=ScriptedBackend(script)), tools=tools, approval="ask", on_event=ready)
    try:
        result = list(agent.stream("go"))[-1].result if streaming else agent.run("go")
    except AgentCancelled as exc:
        print("CANCELLED", [m.role for m in exc.messages], exc.messages[-1].text, flush=True)
        sys.exit(3)
    print("RESULT", result.messages[2].text, flush=True)
    """
)


def start(tmp_path, mode: str, stdin=subprocess.PIPE) -> subprocess.Popen:
    script = tmp_path / "agent_script.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), mode], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def interrupt_when_ready(process: subprocess.Popen) -> tuple[str, str]:
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "READY"
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        return out, err
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tool", "stream-tool"])
def test_ctrl_c_while_a_tool_runs_stops_the_run_and_keeps_the_messages(tmp_path, mode):
    process = start(tmp_path, mode)
    out, err = interrupt_when_ready(process)
    assert process.returncode == 3, err
    assert out.strip() == "CANCELLED ['user', 'assistant', 'tool'] Cancelled by the user before it finished."


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["model", "stream-model"])
def test_ctrl_c_while_the_model_streams_stops_the_run(tmp_path, mode):
    process = start(tmp_path, mode)
    out, err = interrupt_when_ready(process)
    assert process.returncode == 3, err
    assert out.strip() == "CANCELLED ['user'] go"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("answer", "expected"), [("y\n", "sent 5"), ("n\n", "did not allow"), ("\x04", "did not allow")]
)
def test_approval_ask_prompts_in_the_terminal(tmp_path, answer, expected):
    master, slave = pty.openpty()  # stdin is a real terminal; "\x04" is Ctrl-D (end of input)
    try:
        process = start(tmp_path, "ask", stdin=slave)
        os.close(slave)
        os.write(master, answer.encode())
        out, err = process.communicate(timeout=60)
    finally:
        os.close(master)
    assert process.returncode == 0, err
    assert "Allow transfer(" in out and "[y/N]" in out
    assert expected in out.splitlines()[-1]


@pytest.mark.slow
def test_approval_ask_without_a_terminal_refuses_without_reading_stdin(tmp_path):
    process = start(tmp_path, "ask")
    out, err = process.communicate("y\n", timeout=60)  # a pipe, not a terminal: nobody is asked
    assert process.returncode == 0, err
    assert "[y/N]" not in out
    assert "no terminal to ask" in out.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("weather_agent.py", "Paris is sunny at 21 °C"),
        ("image_tool_agent.py", "centre has the colour (255, 0, 0)"),
    ],
)
def test_examples_run_without_a_model(tmp_path, example, expected):
    script = Path(__file__).resolve().parents[2] / "examples" / example
    transcript = tmp_path / "run.jsonl"
    out = subprocess.run(
        [sys.executable, str(script), "--transcript", str(transcript)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout
    assert transcript.is_file()


def test_ctrl_c_while_stream_schedules_the_next_step_ends_the_run_cleanly(monkeypatch):
    """A Ctrl-C can land in the glue between two events (here: while the next step's task is being
    created, where CI once caught it): the run must still end with AgentCancelled and its messages."""
    import asyncio

    from agentcpm import Agent, Client, Reply, ScriptedBackend
    from agentcpm.errors import AgentCancelled

    real_create_task = asyncio.BaseEventLoop.create_task
    created = 0

    def create_task(self, coro, **kwargs):
        nonlocal created
        if getattr(coro, "__qualname__", "") == "_next":  # the sync driver scheduling the next event
            created += 1
        if created == 3:
            created += 1  # once
            signal.raise_signal(signal.SIGINT)  # handled at the next bytecode: inside create_task
        return real_create_task(self, coro, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_task", create_task)
    agent = Agent(Client(backend=ScriptedBackend([Reply("words " * 50)])))
    seen = []
    with pytest.raises(AgentCancelled) as info:
        for event in agent.stream("go"):
            seen.append(event)
    assert len(seen) == 2
    assert [m.role for m in info.value.messages] == ["user"] and info.value.messages[0].text == "go"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_ctrl_c_in_the_callers_loop_body_raises_there():
    from agentcpm import Agent, Client, Reply, ScriptedBackend

    agent = Agent(Client(backend=ScriptedBackend([Reply("words " * 50)])))
    stream = agent.stream("go")
    next(stream)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # the caller's own code: Python's usual KeyboardInterrupt
    stream.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class ConnectingBackend:
    """A backend whose request gets a Ctrl-C inside a task of a task group, as httpx connecting through anyio
    does (CI caught one there once: the run ended in a BaseExceptionGroup traceback instead of exit 130)."""

    async def generate(self, request):
        import anyio

        from agentcpm.backends.base import TextChunk

        async def connect() -> None:
            signal.raise_signal(signal.SIGINT)  # handled at the next bytecode: inside this task
            await anyio.sleep(30)

        async with anyio.create_task_group() as group:
            group.start_soon(connect)
        yield TextChunk("never")

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def test_ctrl_c_inside_a_task_group_ends_the_run_with_its_messages():
    from agentcpm import Agent, Client
    from agentcpm.errors import AgentCancelled

    agent = Agent(Client(backend=ConnectingBackend()))
    with pytest.raises(AgentCancelled, match="interrupted") as info:
        for _ in agent.stream("go"):
            pass
    assert [m.role for m in info.value.messages] == ["user"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("call", ["chat", "stream"])
def test_ctrl_c_inside_a_task_group_is_a_keyboard_interrupt_for_the_client(call):
    from agentcpm import Client

    client = Client(backend=ConnectingBackend())
    with pytest.raises(KeyboardInterrupt):
        if call == "chat":
            client.chat("hi")
        else:
            for _ in client.stream("hi"):
                pass
