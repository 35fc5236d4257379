"""MCP tool servers (agentcpm.mcp) against real MCP servers: tests/mcp_servers/demo_server.py, written with the
``mcp`` SDK's server API, started as a subprocess over stdio and over streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_servers import SERVER, wait_gone

pytest.importorskip("mcp")

from agentcpm import Agent, Client, ImagePart, ScriptedBackend, ToolFinished, tool
from agentcpm.format import render_tool_calls
from agentcpm.mcp import (
    MCPApprovalDenied,
    MCPConfigError,
    MCPConnectionError,
    MCPServer,
    MCPTimeoutError,
    MCPToolError,
    load_mcp_config,
    mcp_tools,
)
from agentcpm.tools import ToolArgumentsError

REPO = Path(__file__).resolve().parents[2]


def stdio_server(**options) -> MCPServer:
    options.setdefault("approval", "allow")
    options.setdefault("name", "demo")
    return MCPServer.stdio(sys.executable, [str(SERVER)], **options)


def by_name(server: MCPServer) -> dict:
    return {t.name: t for t in server.tools()}


@pytest.fixture(scope="module")
def demo() -> Iterator[MCPServer]:
    with stdio_server(timeout=20) as server:
        pid = server.call("pid")
        yield server
    assert wait_gone(int(pid)), "the stdio server outlived close()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert process.poll() is None, "the HTTP MCP server exited at start"
                assert time.monotonic() < deadline, "the HTTP MCP server did not start listening"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


# ---------------------------------------------------------------------------- the package


def test_import_agentcpm_and_agentcpm_mcp_do_not_import_the_sdk():
    code = "import sys, agentcpm, agentcpm.mcp; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_the_sdk_starting_says_how_to_install_it():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["mcp"] = None
        from agentcpm.errors import MissingDependencyError
        from agentcpm.mcp import MCPServer
        try:
            MCPServer.stdio("python", ["server.py"]).start()
        except MissingDependencyError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "agentcpm[mcp]"' in out.stdout


# ---------------------------------------------------------------------------- tools and results over stdio


def test_tools_carry_name_description_and_input_schema(demo):
    tools = by_name(demo)
    assert {"echo", "add", "picture", "fail", "hang", "crash", "pid"} <= set(tools)
    echo = tools["echo"]
    assert echo.description == "Repeat the text."
    assert echo.parameters == {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    assert echo.to_openai()["function"]["name"] == "echo"
    assert echo.is_async and not echo.requires_approval
    assert echo.mcp_server == "demo" and echo.mcp_name == "echo"


def test_text_structured_and_resource_results(demo):
    tools = by_name(demo)
    assert tools["echo"].call({"text": "héllo"}) == "héllo"
    assert json.loads(tools["add"].call({"a": 2, "b": 3})) == {"sum": 5}
    assert tools["report"].call({}) == "all systems go"


def test_an_image_result_becomes_an_image_part(demo):
    parts = by_name(demo)["picture"].call({"color": "blue"})
    images = [p for p in parts if isinstance(p, ImagePart)]
    assert len(images) == 1
    assert images[0].open().size == (32, 24)
    assert images[0].open().getpixel((0, 0)) == (0, 0, 255)


def test_an_is_error_result_raises_mcp_tool_error_with_the_servers_text(demo):
    with pytest.raises(MCPToolError, match="boom") as caught:
        by_name(demo)["fail"].call({"message": "boom"})
    assert caught.value.server == "demo" and caught.value.tool == "fail"


def test_arguments_are_checked_against_the_input_schema_before_the_call(demo):
    echo = by_name(demo)["echo"]
    with pytest.raises(ToolArgumentsError) as caught:
        echo.call({"txt": 1})
    assert caught.value.errors == ["text: field required"]
    with pytest.raises(ToolArgumentsError, match="expected string"):
        echo.validate({"text": 3})


def test_a_call_that_hangs_times_out_and_the_server_still_answers(demo):
    demo.timeout = 1
    try:
        with pytest.raises(MCPTimeoutError, match="'demo' did not answer a call to hang"):
            by_name(demo)["hang"].call({"seconds": 2})
    finally:
        demo.timeout = 20
    assert demo.call("echo", {"text": "still here"}) == "still here"
    # The abandoned call's late answer arrives (the SDK reports an unknown request id): the session lives on.
    time.sleep(2.5)
    assert demo.call("echo", {"text": "and after its late answer"}) == "and after its late answer"


def test_calls_from_threads_and_other_event_loops(demo):
    echo = by_name(demo)["echo"]
    results: list = []

    def in_a_thread(n: int) -> None:
        results.append(asyncio.run(echo.acall({"text": f"t{n}"})))

    threads = [threading.Thread(target=in_a_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def concurrently() -> list:
        return await asyncio.gather(*(echo.acall({"text": f"a{n}"}) for n in range(5)))

    assert sorted(results) == ["t0", "t1", "t2", "t3"]
    assert asyncio.run(concurrently()) == ["a0", "a1", "a2", "a3", "a4"]


def test_the_tool_list_is_cached_and_refreshed_after_list_changed(demo):
    first = demo.tools()
    assert "extra" not in {t.name for t in first}
    assert [t.name for t in demo.tools()] == [t.name for t in first]  # cached: same list, no new listing
    assert demo.call("grow") == "added extra"
    deadline = time.monotonic() + 10
    while "extra" not in {t.name for t in demo.tools()} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert by_name(demo)["extra"].call({}) == "extra!"


# ---------------------------------------------------------------------------- streamable HTTP


def test_http_tools_headers_images_and_errors(http_url):
    server = MCPServer.http(http_url, headers={"Authorization": "Bearer s3cret"}, approval="allow", timeout=1)
    assert server.name == "mcp_127_0_0_1"

    async def use() -> tuple:
        async with server:
            tools = {t.name: t for t in await server.atools()}
            token = await tools["needs_token"].acall({})
            image = await tools["picture"].acall({"color": "green"})
            with pytest.raises(MCPToolError, match="nope"):
                await tools["fail"].acall({"message": "nope"})
            with pytest.raises(MCPTimeoutError):
                await tools["hang"].acall({"seconds": 30})
            return token, image, await tools["echo"].acall({"text": "after"})

    token, image, after = asyncio.run(use())
    assert token == "Bearer s3cret"
    assert image[0].open().getpixel((0, 0)) == (0, 128, 0)
    assert after == "after"
    assert not server.connected


def test_an_http_server_that_is_not_there_names_the_url(http_url):
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(MCPConnectionError, match=r"could not be reached .* check that the server is running") as caught:
        MCPServer.http(url, name="remote").tools()
    assert caught.value.server == "remote" and url in str(caught.value)


# ---------------------------------------------------------------------------- faults and processes


def test_a_command_that_does_not_exist():
    with pytest.raises(MCPConnectionError, match="'no-such-mcp-server' was not found; install it"):
        MCPServer.stdio("no-such-mcp-server", ["--flag"]).start()


def test_a_server_that_exits_at_start_shows_its_stderr():
    code = "import sys; print('missing API_TOKEN', file=sys.stderr); sys.exit(2)"
    with pytest.raises(MCPConnectionError, match="stopped before it was ready") as caught:
        MCPServer.stdio(sys.executable, ["-c", code], name="broken").start()
    assert "missing API_TOKEN" in str(caught.value)


def test_a_server_that_never_answers_times_out_at_start_and_is_reaped(tmp_path):
    script = tmp_path / "silent.py"
    script.write_text("import os, time\nopen(os.environ['PID_FILE'], 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    pid_file = tmp_path / "pid"
    server = MCPServer.stdio(sys.executable, [str(script)], env={"PID_FILE": str(pid_file)}, connect_timeout=2)
    with pytest.raises(MCPTimeoutError, match=r"'silent' .* did not finish starting within 2 s"):
        server.start()
    assert wait_gone(int(pid_file.read_text()))


def test_a_server_that_exits_mid_run_gives_a_typed_error_and_the_run_goes_on():
    server = stdio_server()
    pid = server.call("pid")
    script = [render_tool_calls([{"name": "crash", "arguments": {}}]), "The server crashed."]
    backend = ScriptedBackend(script)
    events = list(Agent(Client(backend=backend), tools=server.tools()).stream("Crash it."))
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert finished[0].error is not None and finished[0].error.startswith("MCPConnectionError: MCP server 'demo'")
    assert "crashing on purpose" in finished[0].error  # the end of its stderr
    assert events[-1].result.output == "The server crashed."
    with pytest.raises(MCPConnectionError, match="no longer connected"):
        server.call("echo", {"text": "x"})
    server.close()
    assert wait_gone(int(pid))


def test_close_reaps_the_process_also_after_an_exception():
    with pytest.raises(RuntimeError), stdio_server() as server:
        pid = int(server.call("pid"))
        raise RuntimeError("the caller failed")
    assert wait_gone(pid)
    server.close()  # twice is fine


@pytest.mark.parametrize("how", ["ctrl-c", "no-close"])
def test_no_server_process_outlives_ctrl_c_or_a_forgotten_close(how, tmp_path):
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from agentcpm.mcp import MCPServer
        server = MCPServer.stdio(sys.executable, [{str(SERVER)!r}], approval="allow")
        if {how!r} == "ctrl-c":
            with server:
                print(server.call("pid"), flush=True)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
        else:
            print(server.call("pid"), flush=True)
        """
    )
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    if how == "ctrl-c":  # Python ends an uncaught KeyboardInterrupt by dying of SIGINT
        assert process.returncode == -signal.SIGINT and "KeyboardInterrupt" in process.stderr
    else:
        assert process.returncode == 0, process.stderr
    assert wait_gone(int(process.stdout.split()[0]))


# ---------------------------------------------------------------------------- approval


def test_approval_ask_marks_the_tools_and_the_agent_policy_decides():
    server = MCPServer.stdio(sys.executable, [str(SERVER)])  # default approval: "ask"
    assert server.approval == "ask"
    try:
        assert all(t.requires_approval for t in server.tools())
        script = [render_tool_calls([{"name": "echo", "arguments": {"text": "hi"}}]), "Not allowed."]
        agent = Agent(Client(backend=ScriptedBackend(script)), tools=server.tools(), approval="deny")
        finished = [e for e in agent.stream("Echo hi.") if isinstance(e, ToolFinished)]
        assert finished[0].result.text == "The user did not allow echo to run, so it was not run."
    finally:
        server.close()


def test_approval_callable_per_server():
    asked: list = []

    def approve(call) -> bool:
        asked.append((call.name, call.arguments))
        return call.arguments.get("text") == "ok"

    with stdio_server(approval=approve) as server:
        echo = by_name(server)["echo"]
        assert not echo.requires_approval
        assert echo.call({"text": "ok"}) == "ok"
        with pytest.raises(MCPApprovalDenied, match="did not allow echo"):
            echo.call({"text": "rm -rf"})
    assert asked == [("echo", {"text": "ok"}), ("echo", {"text": "rm -rf"})]


# ---------------------------------------------------------------------------- names, filters, config files


def test_include_exclude_and_name_clashes_across_servers(http_url):
    local = stdio_server(include=["echo", "add", "pid"], exclude=["pid"])
    remote = MCPServer.http(http_url, name="remote", approval="allow", include=["echo", "picture"])
    always = stdio_server(name="files", prefix=True, include=["report"])
    try:
        tools = mcp_tools([local, remote, always], reserved=["add"])
        names = [t.name for t in tools]
        assert names == ["demo__echo", "demo__add", "remote__echo", "picture", "files__report"]
        assert tools[2].call({"text": "via http"}) == "via http"
        assert tools[0].call({"text": "via stdio"}) == "via stdio"
        with pytest.raises(MCPConfigError, match="two MCP servers are named demo"):
            mcp_tools([local, stdio_server()])
    finally:
        for server in (local, remote, always):
            server.close()


def test_load_mcp_config(tmp_path, monkeypatch, http_url):
    monkeypatch.setenv("DEMO_TOKEN", "t0k")
    config = {
        "mcpServers": {
            "files": {"command": sys.executable, "args": [str(SERVER)], "env": {"TOKEN": "${DEMO_TOKEN}"}},
            "web": {"url": http_url, "headers": {"Authorization": "Bearer ${DEMO_TOKEN}"}, "approval": "allow"},
            "off": {"command": "nothing", "disabled": True},
        }
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    files, web = load_mcp_config(path, timeout=10)
    assert (files.name, files.transport, files.env, files.approval, files.timeout) == (
        "files",
        "stdio",
        {"TOKEN": "t0k"},
        "ask",
        10,
    )
    assert (web.name, web.transport, web.approval) == ("web", "http", "allow")
    with web:
        assert by_name(web)["needs_token"].call({}) == "Bearer t0k"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not readable JSON"),
        ('{"servers": {}}', 'no "mcpServers" object'),
        ('{"mcpServers": {"x": {"args": []}}}', "needs command"),
        ('{"mcpServers": {"x": {"command": "a", "url": "http://h/mcp"}}}', "either command"),
        ('{"mcpServers": {"x": {"url": "http://h/sse", "type": "sse"}}}', "SSE transport is not supported"),
        ('{"mcpServers": {"x": {"command": "a", "aprooval": "allow"}}}', "unknown keys aprooval"),
        ('{"mcpServers": {"x": {"command": "a", "approval": "maybe"}}}', "approval must be"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "mcp.json"
    path.write_text(content)
    with pytest.raises(MCPConfigError, match=message):
        load_mcp_config(path)


# ---------------------------------------------------------------------------- agent runs


def test_agent_on_the_openai_server_gets_the_mcp_image(openai_server, demo):
    openai_server.push(render_tool_calls([{"name": "picture", "arguments": {"color": "blue"}}]), "A blue square.")
    client = Client(base_url=openai_server.base_url, model=openai_server.model)
    result = Agent(client, tools=demo.tools()).run("Show me a picture.")
    assert result.output == "A blue square."
    sent = openai_server.requests[1]["messages"]
    parts = [p for m in sent if isinstance(m["content"], list) for p in m["content"]]
    image_urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(image_urls) == 1 and image_urls[0].startswith("data:image/")
    assert any(t["function"]["name"] == "picture" for t in openai_server.requests[0]["tools"])


def test_agent_sees_an_is_error_result_as_a_tool_error(demo):
    script = [render_tool_calls([{"name": "fail", "arguments": {"message": "disk full"}}]), "It failed."]
    backend = ScriptedBackend(script)
    result = Agent(Client(backend=backend), tools=demo.tools()).run("Try it.")
    assert result.output == "It failed."
    tool_message = backend.requests[1].messages[-1]
    assert tool_message.role == "tool"
    assert "fail failed: MCPToolError" in tool_message.text and "disk full" in tool_message.text


@pytest.mark.slow
def test_agent_on_the_tiny_model_calls_an_mcp_tool_and_answers(scripted_model_path, demo):
    from tiny_model import FINAL_ANSWER, WEATHER_QUESTION

    client = Client(model=str(scripted_model_path), device="cpu")
    weather = [t for t in demo.tools() if t.name == "get_weather"]
    result = Agent(client, tools=weather, options={"max_tokens": 112}).run(WEATHER_QUESTION)
    assert result.output == FINAL_ANSWER
    tool_messages = [m for m in result.messages if m.role == "tool"]
    assert tool_messages[0].text == "sunny, 21 C in Paris"


def test_the_example_runs_against_the_example_server():
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mcp_agent.py")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "-> add_note" in out.stdout and "-> list_notes" in out.stdout
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- servers given to the agent


def test_an_agent_takes_a_server_among_its_tools_and_lists_it_at_each_run():
    @tool
    def echo(text: str) -> str:
        """Echo in Python."""
        return f"python {text}"

    with stdio_server(name="demo") as server:
        script = [
            render_tool_calls([{"name": "demo__echo", "arguments": {"text": "hi"}}]),  # the clash is resolved
            render_tool_calls([{"name": "echo", "arguments": {"text": "hi"}}]),
            render_tool_calls([{"name": "grow", "arguments": {}}]),
            "Grown.",
            render_tool_calls([{"name": "extra", "arguments": {}}]),  # listed again by the next run
            "Done.",
        ]
        backend = ScriptedBackend(script)
        agent = Agent(Client(backend=backend), tools=[echo, server])
        assert "servers=['demo']" in repr(agent)
        result = agent.run("Echo hi both ways, then grow.")
        texts = [m.text for m in result.messages if m.role == "tool"]
        assert texts == ["hi", "python hi", "added extra"]
        names = [t["function"]["name"] for t in backend.requests[0].tools]
        assert names[0] == "echo" and "demo__echo" in names and "extra" not in names
        deadline = time.monotonic() + 10
        while "extra" not in {t.name for t in server.tools()} and time.monotonic() < deadline:
            time.sleep(0.05)
        result = agent.run("Call extra.")
        assert [m.text for m in result.messages if m.role == "tool"] == ["extra!"]


def test_a_servers_approval_callable_is_asked_by_the_agent_once_with_the_standard_refusal():
    asked: list = []

    def approve(call) -> bool:
        asked.append(call.arguments["text"])
        return call.arguments["text"] == "ok"

    with stdio_server(approval=approve) as server:
        script = [
            render_tool_calls([{"name": "echo", "arguments": {"text": "ok"}}]),
            render_tool_calls([{"name": "echo", "arguments": {"text": "rm -rf"}}]),
            "Done.",
        ]
        agent = Agent(Client(backend=ScriptedBackend(script)), tools=[server], approval="deny")
        finished = [e for e in agent.stream("Echo.") if isinstance(e, ToolFinished)]
    assert asked == ["ok", "rm -rf"]  # once per call: the tool does not ask again when the agent approved
    assert finished[0].result.text == "ok"  # the server's own approval comes before the agent's "deny"
    assert finished[1].result.text == "The user did not allow echo to run, so it was not run."
    assert finished[1].error == finished[1].result.text
