"""MCP tool servers on the command line: ``agentcpm run|chat --mcp CONFIG.json`` and ``--mcp "COMMAND ARGS"``,
``/tools`` in the REPL, ``agentcpm doctor --mcp``. The CLI runs as a subprocess against the scripted HTTP model
server (tests/openai_server.py) and a real MCP server (tests/mcp_servers/demo_server.py) that it starts itself;
afterwards no server process is left (checked by PID, and by a tag on the servers' command lines)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from cli_process import agentcpm, cli_env, closed_port_url, one_friendly_line
from markup import call
from mcp_servers import SERVER, wait_gone
from openai_server import OpenAIServer, ServerReply


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def tag() -> str:
    """A word on the MCP servers' command lines (the demo server ignores it), to find any left running."""
    return f"--agentcpm-test-{uuid.uuid4().hex[:12]}"


def tagged_processes(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return found


def no_server_left(tag: str) -> bool:
    return all(wait_gone(pid) for pid in tagged_processes(tag))


def write_config(folder: Path, tag: str, **entries: dict[str, Any]) -> Path:
    """An mcpServers file; each entry runs the demo server unless it says otherwise."""
    servers = {
        name: {"command": sys.executable, "args": [str(SERVER), tag], **entry} for name, entry in entries.items()
    }
    path = folder / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def tool_results(body: dict[str, Any]) -> list[str]:
    """The tool results in a request the model server received."""
    return [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]


def offered(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools", [])]


# ---------------------------------------------------------------------------- run


def test_run_with_a_config_file_calls_an_mcp_tool_and_answers(tmp_path: Path, server: OpenAIServer, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={})
    server.push(call("pid"), call("echo", text="hello from MCP"), "The server said: hello from MCP.")
    args = ["--mcp", str(config), "--approve", "allow", "--tools", "none", "--base-url", server.base_url]
    result = agentcpm(tmp_path, "run", "Ask the demo server to echo a greeting", *args)
    assert result.returncode == 0, result.stderr
    assert "→ echo(text='hello from MCP')" in result.stdout
    assert "The server said: hello from MCP." in result.stdout
    assert {"echo", "pid", "picture", "hang"} <= set(offered(server.requests[0]))
    pid = int(tool_results(server.requests[1])[-1])
    assert tool_results(server.requests[2])[-1] == "hello from MCP"
    assert wait_gone(pid), "the MCP server outlived the command"
    assert no_server_left(tag)


def test_ask_servers_ask_on_the_cli_prompt(tmp_path: Path, server: OpenAIServer, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={})  # approval "ask" (the default)
    args = ["--mcp", str(config), "--tools", "none", "--base-url", server.base_url]
    server.push(call("echo", text="yes please"), "Echoed.")
    result = agentcpm(tmp_path, "run", "Echo something", *args, stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert "allow echo(text='yes please')? [y/n/always]" in result.stdout  # the CLI's prompt, not the library's
    assert tool_results(server.requests[1]) == ["yes please"]

    server.push(call("echo", text="not this"), "I was not allowed.")
    result = agentcpm(tmp_path, "run", "Echo something", *args, stdin="n\n")
    assert result.returncode == 0, result.stderr
    assert "allow echo(text='not this')? [y/n/always]" in result.stdout
    assert "did not allow echo" in tool_results(server.requests[3])[-1]
    assert no_server_left(tag)


def test_allow_servers_run_without_asking_even_with_approve_deny(
    tmp_path: Path, server: OpenAIServer, tag: str
) -> None:
    config = write_config(tmp_path, tag, demo={"approval": "allow", "include": ["echo"]})
    server.push(call("echo", text="trusted"), "Done.")
    args = ["--mcp", str(config), "--approve", "deny", "--tools", "none", "--base-url", server.base_url]
    result = agentcpm(tmp_path, "run", "Echo", *args)
    assert result.returncode == 0, result.stderr
    assert "allow echo" not in result.stdout
    assert offered(server.requests[0]) == ["echo"]
    assert tool_results(server.requests[1]) == ["trusted"]


def test_one_command_with_mcp_command_args(tmp_path: Path, server: OpenAIServer, tag: str) -> None:
    command = f"{sys.executable} '{SERVER}' {tag}"  # quoted as a shell would
    server.push(call("pid"), call("add", a=2, b=3), "2 + 3 = 5.")
    args = ["--mcp", command, "--approve", "allow", "--tools", "none", "--base-url", server.base_url]
    result = agentcpm(tmp_path, "run", "Add 2 and 3", *args)
    assert result.returncode == 0, result.stderr
    assert "2 + 3 = 5." in result.stdout
    pid = int(tool_results(server.requests[1])[-1])
    assert json.loads(tool_results(server.requests[2])[-1]) == {"sum": 5}
    assert wait_gone(pid) and no_server_left(tag)


def test_a_server_that_cannot_start_fails_before_the_model_is_asked(
    tmp_path: Path, server: OpenAIServer, tag: str
) -> None:
    config = write_config(tmp_path, tag, demo={}, missing={"command": "agentcpm-no-such-server", "args": []})
    result = agentcpm(tmp_path, "run", "Hi", "--mcp", str(config), "--tools", "none", "--base-url", server.base_url)
    assert result.returncode == 1
    line = one_friendly_line(result.stderr)
    assert "'missing'" in line and "agentcpm-no-such-server" in line and "install it or give its full path" in line
    assert server.requests == []
    assert no_server_left(tag)  # the demo server, started alongside, was closed too


def test_servers_are_closed_when_the_run_fails(tmp_path: Path, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={})
    result = agentcpm(tmp_path, "run", "Hi", "--mcp", str(config), "--tools", "none", "--base-url", closed_port_url())
    assert result.returncode == 1
    assert "127.0.0.1" in one_friendly_line(result.stderr)
    assert no_server_left(tag)


def test_servers_are_closed_on_ctrl_c(tmp_path: Path, server: OpenAIServer, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={"approval": "allow"})
    server.push(call("pid"), ServerReply("and so on " * 2000, chunk_size=4, chunk_delay=0.05))
    args = ["--mcp", str(config), "--tools", "none", "--base-url", server.base_url]
    process = subprocess.Popen(
        [sys.executable, "-m", "agentcpm", "run", "Tell me the pid, then a long story", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the tool result is shown once the call returned
            if match := re.search(r"← pid \(.*\): (\d+)", line):
                break
        else:
            pytest.fail(f"no pid result shown; stderr: {process.stderr.read() if process.stderr else ''}")
        pid = int(match.group(1))
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, errors
    assert "interrupted" in errors
    assert wait_gone(pid) and no_server_left(tag)


def test_run_approve_later_then_resume_with_the_runs_servers(tmp_path: Path, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={"include": ["echo"]})
    transcript = str(tmp_path / "run.jsonl")
    with OpenAIServer([ServerReply(tool_calls=[{"id": "e1", "name": "echo", "arguments": {"text": "later"}}])]) as srv:
        srv.push("Echoed it.")
        common = ["--mcp", str(config), "--tools", "none", "--base-url", srv.base_url]
        started = agentcpm(tmp_path, "run", "Echo later", *common, "--approve", "later", "--transcript", transcript)
        assert started.returncode == 3, started.stderr
        assert "e1" in started.stdout and "waiting for approval" in started.stdout
        resumed = agentcpm(tmp_path, "resume", transcript, "--approve", "e1", *common)
        assert resumed.returncode == 0, resumed.stderr
        assert "Echoed it." in resumed.stdout
        assert tool_results(srv.requests[1]) == ["later"]  # the MCP server, started again by resume, ran it
    assert no_server_left(tag)


# ---------------------------------------------------------------------------- doctor


def test_doctor_mcp_lists_each_servers_tools(tmp_path: Path, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={}, small={"include": ["echo", "add"], "approval": "allow"})
    result = agentcpm(tmp_path, "doctor", "--mcp", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(
        r"^ok +MCP server demo: 11 tools over stdio: .*demo_server\.py .*\(each call asks first\)$", out, re.M
    )
    assert re.search(r"^ok +MCP server small: 2 tools over stdio: ", out, re.M)
    assert "echo: Repeat the text." in out and "add: Add two integers." in out
    assert "FAIL" not in out and "backend" not in out  # only the MCP servers are checked
    assert no_server_left(tag)


def test_doctor_mcp_says_why_a_server_failed(tmp_path: Path, tag: str) -> None:
    config = write_config(tmp_path, tag, demo={}, missing={"command": "agentcpm-no-such-server", "args": []})
    crash = "import sys; print('demo: no API token', file=sys.stderr); sys.exit(2)"
    command = f"{sys.executable} -c {json.dumps(crash)}"
    result = agentcpm(tmp_path, "doctor", "--mcp", str(config), "--mcp", command)
    assert result.returncode == 1
    out = result.stdout
    assert re.search(r"^ok +MCP server demo: 11 tools", out, re.M)
    line = next(line for line in out.splitlines() if line.startswith("FAIL  MCP server missing"))
    assert "agentcpm-no-such-server" in line and "install it or give its full path" in line
    line = next(line for line in out.splitlines() if line.startswith("FAIL  MCP server python"))
    assert "stopped before it was ready" in line and "run the command by hand" in line
    assert "demo: no API token" in out  # the end of the server's stderr
    assert no_server_left(tag)


def test_doctor_mcp_with_a_bad_config_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"servers": {}}')
    result = agentcpm(tmp_path, "doctor", "--mcp", "bad.json")
    assert result.returncode == 1
    assert 'FAIL  MCP config: MCP config bad.json has no "mcpServers" object' in result.stdout


# ---------------------------------------------------------------------------- the REPL in a terminal


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (Debian package tmux)")
def test_repl_lists_mcp_tools_by_server_and_asks_before_calling(tmp_path: Path, server: OpenAIServer, tag: str) -> None:
    from cli_process import start_chat

    config = write_config(tmp_path, tag, demo={}, small={"include": ["echo"], "approval": "allow"})
    term = start_chat(tmp_path, server, "--tools", "none", "--mcp", str(config))
    try:
        shown = term.wait_for("you>", timeout=60)
        assert "MCP: demo (11), small (1)" in shown

        mark = len(shown)
        term.type("/tools")
        shown = term.wait_for("needs_token", after=mark)[mark:]
        assert re.search(r"^MCP server demo +stdio: .*demo_server\.py", shown, re.M)
        assert re.search(r"^MCP server small +stdio: ", shown, re.M)
        assert re.search(r"  pid +The server's process id\. \(asks first\)", shown)
        # both servers have echo: the model sees each under its server's name
        assert re.search(r"  demo__echo +Repeat the text\. \(asks first\)", shown)
        assert re.search(r"  small__echo +Repeat the text\.$", shown, re.M)

        server.push(call("pid"), "I have the pid.")
        term.type("What is the server's pid?")
        term.wait_for("allow pid()? [y/n/always]")
        term.type("y")
        term.wait_for("I have the pid.")
        pid = int(tool_results(server.requests[1])[-1])

        term.type("/exit")
        for _ in range(300):  # the REPL closes the servers as it leaves
            if term.dead():
                break
            time.sleep(0.1)
        assert term.dead(), term.screen()
        assert "error" not in term.screen().lower()
    finally:
        term.close()
    assert wait_gone(pid) and no_server_left(tag)
