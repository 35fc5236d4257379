"""The REPL in a real terminal: ``agentcpm chat`` inside tmux, typed at like a person, checked by what the
screen shows (``tmux capture-pane``). The model is a real local HTTP server replaying scripted answers."""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_process import Terminal, cli_env, start_chat
from markup import call
from openai_server import OpenAIServer, ServerReply

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (Debian package tmux)"),
]

TOOL_ANSWER = call("lookup", word="agentcpm")
LONG_ANSWER = "This answer goes on and on. " * 200


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def terminal(tmp_path: Path, server: OpenAIServer) -> Any:
    term = start_chat(tmp_path, server, "--tools", "none")
    yield term
    term.close()


def test_a_whole_session(terminal: Terminal, server: OpenAIServer, tmp_path: Path) -> None:
    term = terminal
    term.wait_for("/help lists the commands")
    term.wait_for("you>")

    term.type("/help")
    shown = term.wait_for("/exit")
    for command in ("/image", "/screen", "/tools", "/think", "/reset", "/save", "/load", "/usage"):
        assert command in shown

    # a question whose answer calls a tool (not available here: shown as a failed call), then answers
    server.push(TOOL_ANSWER, "The word is **agentcpm**, a CLI.")
    mark = len(term.screen())
    term.type("What does the word mean?")
    shown = term.wait_for("The word is agentcpm, a CLI.", after=mark)
    assert "→ lookup(word='agentcpm')" in shown
    assert "✗ lookup failed" in shown
    assert "**" not in shown[mark:]  # rendered as Markdown
    assert shown.count("The word is agentcpm, a CLI.") == 1  # the live region left no copies behind

    # Ctrl-C during a long answer stops it and keeps the session
    server.push(ServerReply(LONG_ANSWER, chunk_size=8, chunk_delay=0.05), "Still here.")
    mark = len(term.screen())
    term.type("Tell me a long story.")
    term.wait_for("goes on and on", after=mark)
    term.key("C-c")
    shown = term.wait_for("interrupted", after=mark)
    story = shown[shown.index("Tell me a long story.", mark) :].splitlines()[1:]
    partial = " ".join(" ".join(story[: next(i for i, s in enumerate(story) if "interrupted" in s)]).split())
    assert len(partial) > 20 and LONG_ANSWER.startswith(partial)  # what was written, once, nothing more
    term.type("Are you there?")
    term.wait_for("Still here.", after=mark)
    assert len(server.requests) == 4

    # save, reset, load: the history comes back and is sent with the next question
    term.type(f"/save {tmp_path / 'session.jsonl'}")
    term.wait_for("saved")
    term.type("/reset")
    term.wait_for("new conversation")
    term.type(f"/load {tmp_path / 'session.jsonl'}")
    term.wait_for("loaded")
    server.push("Yes, I remember.")
    term.type("Do you remember?")
    term.wait_for("Yes, I remember.")
    sent = [m.get("content") for m in server.requests[-1]["messages"]]
    assert "What does the word mean?" in sent and "Are you there?" in sent

    term.type("/usage")
    term.wait_for("session:")

    term.type("/exit")
    deadline = time.monotonic() + 10
    while not term.dead():
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.1)
    shown = term.screen()
    assert "Traceback" not in shown
    history = (tmp_path / "state" / "agentcpm" / "history").read_text()
    assert "What does the word mean?" in history and "/exit" in history

    again = start_chat(tmp_path, server, "--tools", "none")  # a new session recalls the old lines
    try:
        again.wait_for("you>")
        again.key("Up")
        again.key("Up")
        again.wait_for("you> /usage")
    finally:
        again.close()


def test_errors_are_one_line_and_the_session_goes_on(terminal: Terminal, server: OpenAIServer) -> None:
    term = terminal
    term.wait_for("you>")
    term.type("/image nowhere/cat.png")
    term.wait_for("error: no image at nowhere/cat.png: check the path")
    term.type("/frobnicate")
    term.wait_for("unknown command /frobnicate")
    term.type("half a question", enter=False)
    term.key("C-c")  # at the prompt: the line is dropped, the session stays
    term.wait_for("(Ctrl-D or /exit leaves)")
    server.push(ServerReply(status=400, body={"error": {"message": "this request is not acceptable"}}))
    server.push("Recovered.")
    term.type("hello?")
    term.wait_for("this request is not acceptable")
    term.type("hello again")
    term.wait_for("Recovered.")
    assert [r["messages"][-1]["content"] for r in server.requests] == ["hello?", "hello again"]
    term.key("C-d")
    deadline = time.monotonic() + 10
    while not term.dead():
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.1)
    assert "Traceback" not in term.screen()


def test_pasted_image_path_is_attached(terminal: Terminal, server: OpenAIServer, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (40, 30), "blue").save(tmp_path / "my shot.png")
    term = terminal
    term.wait_for("you>")
    term.type(f"'{tmp_path / 'my shot.png'}'")  # what dragging a file onto a terminal types
    term.wait_for("attached my shot.png")
    server.push("A blue rectangle.")
    term.type("What colour is it?")
    term.wait_for("A blue rectangle.")
    content = server.requests[-1]["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["image_url", "text"]


def test_screen_tools_and_approval_on_a_display(tmp_path: Path, server: OpenAIServer, xvfb: Any) -> None:
    term = start_chat(tmp_path, server, "--tools", "screen,gui", DISPLAY=xvfb.name)
    try:
        term.wait_for("you>")
        mark = len(term.screen())
        term.type("/tools")
        shown = term.wait_for("(asks first)", after=mark)[mark:]
        assert "screenshot" in shown and "Click at a point" in shown

        server.push(call("list_monitors"), "One screen, 1920x1080.")
        term.type("How many screens are there?")
        shown = term.wait_for("One screen, 1920x1080.")
        assert "→ list_monitors()" in shown
        assert re.search(r"← list_monitors \(\d+\.\d\d s\): .*1920x1080", shown)
        assert "1920" in server.requests[1]["messages"][-1]["content"]  # the tool result went back

        server.push(call("click", x=500, y=500), "I was not allowed to click.")
        term.type("Click the middle of the screen.")
        term.wait_for("allow click(x=500, y=500)? [y/n/always]")
        term.type("n")
        shown = term.wait_for("I was not allowed to click.")
        assert "✗ click failed" in shown

        term.type("/screen")
        term.wait_for("attached a screenshot of monitor 1")
        server.push("A white screen.")
        term.type("Describe it.")
        shown = term.wait_for("A white screen.")
        content = server.requests[-1]["messages"][-1]["content"]
        assert [p["type"] for p in content] == ["image_url", "text"]
        assert "Traceback" not in shown
    finally:
        term.close()


def test_in_process_model_loads_without_noise(tmp_path: Path, tiny_model_path: Path) -> None:
    """A local checkpoint folder: no "downloaded" note, and transformers' "Loading weights" bar stays out of
    the banner (it shows with --verbose)."""
    env = cli_env(tmp_path, TERM="xterm-256color", PATH="/usr/bin:/bin")
    env.pop("NO_COLOR")
    command = [sys.executable, "-m", "agentcpm", "chat", "--model", str(tiny_model_path), "--tools", "none"]
    term = Terminal(command, env, tmp_path)
    try:
        shown = term.wait_for("you>", timeout=240)
        assert f"agentcpm · {tiny_model_path} (in-process) · tools: none" in shown
        assert "Loading weights" not in shown and "downloaded" not in shown and "falling back" not in shown
        term.key("C-d")
    finally:
        term.close()
