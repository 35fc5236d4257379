"""Conversation logs (agentcpm.logs) across real CLI runs: ``agentcpm ask`` / ``chat`` / ``run`` as
subprocesses against the real scripted HTTP server (tests/openai_server.py), the REPL in tmux, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_process import agentcpm, cli_env
from markup import call
from openai_server import OpenAIServer, ServerReply

from agentcpm.logs import LogStore
from agentcpm.transcript import Transcript

SECRET = "sk-very-secret-key"


def data_env(home: Path) -> dict[str, str]:
    return {"XDG_DATA_HOME": str(home / "data")}


def log_folder(home: Path) -> Path:
    return home / "data" / "agentcpm" / "logs"


def run_cli(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    out = agentcpm(home, *args, stdin=stdin, **data_env(home), **env)
    assert out.returncode == 0, out.stderr
    return out


def everything_written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def server() -> OpenAIServer:
    with OpenAIServer() as srv:
        yield srv


def test_ask_twice_then_logs_show_search_and_path(tmp_path: Path, server: OpenAIServer) -> None:
    server.push("Four.", "Six.")
    url = server.base_url.replace("http://", f"http://user:{SECRET}@")
    run_cli(tmp_path, "ask", "What is 2+2?", "--base-url", server.base_url, "--api-key", SECRET, "--temperature", "0.5")
    run_cli(tmp_path, "ask", "And 3+3?", "--base-url", url, "--api-key", SECRET, "--json")

    listed = run_cli(tmp_path, "logs").stdout.splitlines()
    assert len(listed) == 2
    assert "And 3+3?" in listed[0] and "What is 2+2?" in listed[1]  # newest first
    assert all(server.model.rsplit("/", 1)[-1] in line and " tok " in line for line in listed)
    newest, oldest = (line.split()[0] for line in listed)

    shown = run_cli(tmp_path, "logs", "show", oldest).stdout
    assert "user: What is 2+2?" in shown and "assistant: Four." in shown and "And 3+3?" not in shown
    assert "1 turn" in shown and server.base_url in shown
    assert "assistant: Six." in run_cli(tmp_path, "logs", "show").stdout  # the last one by default

    found = run_cli(tmp_path, "logs", "search", "four").stdout.splitlines()
    assert len(found) == 1 and found[0].startswith(oldest)
    assert run_cli(tmp_path, "logs", "search", "nothing like this").stdout.strip() == "no conversations found"
    assert run_cli(tmp_path, "logs", "path").stdout.strip() == str(log_folder(tmp_path))

    info = json.loads(run_cli(tmp_path, "logs", "show", newest[:8], "--json").stdout)
    assert info["turns"] == 1 and info["completion_tokens"] > 0 and info["model"] == server.model
    assert info["base_url"] == server.base_url.replace("http://", "http://***@")  # no password
    first = LogStore(log_folder(tmp_path)).get(oldest)
    assert json.loads(first.options or "{}")["temperature"] == 0.5
    assert SECRET.encode() not in everything_written(log_folder(tmp_path))  # keys are never stored


def test_no_log_writes_nothing(tmp_path: Path, server: OpenAIServer) -> None:
    server.push("One.", "Two.", "Three.", "Done.")
    run_cli(tmp_path, "ask", "private?", "--base-url", server.base_url, "--no-log")
    run_cli(tmp_path, "run", "private task", "--base-url", server.base_url, "--tools", "none", "--no-log")
    run_cli(tmp_path, "ask", "private too?", "--base-url", server.base_url, AGENTCPM_NO_LOG="1")
    folder = log_folder(tmp_path)
    assert not folder.exists() or not list((folder / "conversations").glob("*"))
    assert "no conversations logged yet" in run_cli(tmp_path, "logs").stdout

    assert "off" in run_cli(tmp_path, "logs", "off").stdout  # the setting: off until turned on again
    run_cli(tmp_path, "ask", "still private?", "--base-url", server.base_url)
    assert "no conversations logged yet" in run_cli(tmp_path, "logs").stdout
    assert "on" in run_cli(tmp_path, "logs", "on").stdout


def test_run_is_logged_with_its_tool_steps(tmp_path: Path, server: OpenAIServer) -> None:
    server.push(call("lookup", word="x"), "All done.")
    run_cli(tmp_path, "run", "look x up", "--base-url", server.base_url, "--tools", "none")
    (info,) = LogStore(log_folder(tmp_path)).recent()
    assert info.command == "run" and info.title == "look x up" and info.turns == 1
    messages = Transcript.load(info.path)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[-1].text == "All done."


def start_repl(home: Path, server: OpenAIServer, *extra: str) -> subprocess.Popen[str]:
    env = cli_env(home, **data_env(home))
    command = [sys.executable, "-m", "agentcpm", "chat", "--base-url", server.base_url, "--tools", "none", *extra]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=home, env=env)


def wait_until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition was not met in time")
        time.sleep(0.05)


def test_kill_9_mid_turn_keeps_the_conversation_and_continuing_leaves_the_cut_turn_out(
    tmp_path: Path, server: OpenAIServer
) -> None:
    server.push("Paris.")
    run_cli(tmp_path, "ask", "What is the capital of France?", "--base-url", server.base_url)
    server.requests.clear()
    server.push(ServerReply("Paris is " + "very " * 400 + "nice.", chunk_size=4, chunk_delay=0.05))
    repl = start_repl(tmp_path, server, "-c")
    assert repl.stdin is not None
    repl.stdin.write("Tell me more about it.\n")
    repl.stdin.flush()
    wait_until(lambda: len(server.requests) == 1)
    time.sleep(0.5)  # the answer is streaming
    os.kill(repl.pid, signal.SIGKILL)
    repl.wait(timeout=30)

    listed = run_cli(tmp_path, "logs").stdout.splitlines()
    assert len(listed) == 1 and "What is the capital of France?" in listed[0]
    found = run_cli(tmp_path, "logs", "search", "more about it").stdout
    assert found.startswith(listed[0].split()[0])  # the question of the cut turn was recorded

    server.push("It has the Eiffel tower.")
    out = run_cli(tmp_path, "chat", "-c", "--base-url", server.base_url, "--tools", "none", stdin="And its river?\n")
    assert "It has the Eiffel tower." in out.stdout
    sent = [m.get("content") for m in server.requests[-1]["messages"]]
    assert sent[-1] == "And its river?" and "What is the capital of France?" in sent
    assert "Tell me more about it." not in sent  # the turn cut by kill -9 is left out
    assert len(run_cli(tmp_path, "logs").stdout.splitlines()) == 1  # still one conversation
    shown = run_cli(tmp_path, "logs", "show").stdout
    assert "user: And its river?" in shown and "Tell me more about it." not in shown


def test_resume_by_id_and_the_repl_history_and_load_commands(tmp_path: Path, server: OpenAIServer) -> None:
    server.push("First answer.", "Second answer.")
    run_cli(tmp_path, "ask", "first question", "--base-url", server.base_url)
    run_cli(tmp_path, "ask", "second question", "--base-url", server.base_url)
    second, first = (line.split()[0] for line in run_cli(tmp_path, "logs").stdout.splitlines())

    server.push("Resumed.")
    args = ("chat", "--resume", first[:9], "--base-url", server.base_url, "--tools", "none")
    out = run_cli(tmp_path, *args, stdin="go on\n")
    assert f"continuing conversation {first}" in out.stdout
    sent = [m.get("content") for m in server.requests[-1]["messages"]]
    assert sent == ["first question", "First answer.", "go on"]

    server.push("Loaded.")
    lines = f"/history\n/load {second}\nand now?\n"
    out = run_cli(tmp_path, "chat", "--base-url", server.base_url, "--tools", "none", stdin=lines)
    assert first in out.stdout and second in out.stdout and "/load ID opens one" in out.stdout
    sent = [m.get("content") for m in server.requests[-1]["messages"]]
    assert sent == ["second question", "Second answer.", "and now?"]
    assert len(run_cli(tmp_path, "logs").stdout.splitlines()) == 2  # /load ID went on with that conversation

    bad = agentcpm(tmp_path, "chat", "--resume", "ffffffff", "--base-url", server.base_url, **data_env(tmp_path))
    assert bad.returncode == 1 and "no logged conversation has the id 'ffffffff'" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (Debian package tmux)")
def test_chat_c_in_a_terminal_continues_with_the_earlier_context(tmp_path: Path, server: OpenAIServer) -> None:
    from cli_process import start_chat

    server.push("The word is agentcpm.")
    run_cli(tmp_path, "ask", "Remember the word agentcpm.", "--base-url", server.base_url)
    term = start_chat(tmp_path, server, "--tools", "none", "-c", **data_env(tmp_path))
    try:
        term.wait_for("continuing conversation")
        term.wait_for("you>")
        server.push("You asked me to remember agentcpm.")
        term.type("What did I ask?")
        term.wait_for("You asked me to remember agentcpm.")
        sent = [m.get("content") for m in server.requests[-1]["messages"]]
        assert sent == ["Remember the word agentcpm.", "The word is agentcpm.", "What did I ask?"]
        term.type("/exit")
        wait_until(term.dead, 30)
    finally:
        term.close()
    (info,) = LogStore(log_folder(tmp_path)).recent()
    assert info.turns == 2
    assert [m.text for m in Transcript.load(info.path)][-1] == "You asked me to remember agentcpm."


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (Debian package tmux)")
def test_two_repls_at_once_keep_each_others_history_and_logs(tmp_path: Path) -> None:
    from cli_process import start_chat

    server = OpenAIServer(default="ok.").start()
    history = tmp_path / "state" / "agentcpm" / "history"
    history.parent.mkdir(parents=True)
    history.write_text("an old line\n")
    one = start_chat(tmp_path, server, "--tools", "none", **data_env(tmp_path))
    two = start_chat(tmp_path, server, "--tools", "none", **data_env(tmp_path))
    try:
        for term in (one, two):
            term.wait_for("you>")
        one.type("question from one")
        one.wait_for("ok.")
        two.type("question from two")
        two.wait_for("ok.")
        one.type("second from one")
        wait_until(lambda: one.screen().count("ok.") == 2)
        two.type("/exit")  # the one that read the history first leaves last
        wait_until(two.dead, 30)
        one.type("/exit")
        wait_until(one.dead, 30)
    finally:
        one.close()
        two.close()
        server.stop()
    lines = history.read_text().splitlines()
    for line in ("an old line", "question from one", "question from two", "second from one", "/exit"):
        assert line in lines
    infos = LogStore(log_folder(tmp_path)).recent()
    assert sorted(i.title for i in infos) == ["question from one", "question from two"]
    by_title = {i.title: i for i in infos}
    assert by_title["question from one"].turns == 2 and by_title["question from two"].turns == 1
    texts = [m.text for m in Transcript.load(by_title["question from one"].path) if m.role == "user"]
    assert texts == ["question from one", "second from one"]


def test_conversation_store_concurrent_writers(tmp_path: Path) -> None:
    """Several processes writing the index at once: every row lands (WAL and a busy timeout)."""
    code = (
        "import sys; from agentcpm.logs import LogStore\n"
        "store = LogStore(sys.argv[1])\n"
        "for i in range(30):\n"
        "    c = store.new(command='ask', model='m'); c.turn_started(f'q{i}'); c.turn_finished('a', 1, 2)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    infos = LogStore(tmp_path).recent(1000)
    assert len(infos) == 120 and all(i.turns == 1 and i.total_tokens == 3 for i in infos)
