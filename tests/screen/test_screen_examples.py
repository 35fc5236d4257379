"""The screen examples run as users run them: a subprocess, a real X display, a real OpenAI-compatible server."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from markup import call
from xdisplay import BUTTON, TkApp, needs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(xvfb):
    with TkApp(xvfb.name) as running:
        yield running


def environment(display: str, server) -> dict[str, str]:
    return {
        **os.environ,
        "DISPLAY": display,
        "AGENTCPM_BASE_URL": server.base_url,
        "AGENTCPM_MODEL": server.model,
        "PYTHONUNBUFFERED": "1",
    }


@needs("pynput")
def test_gui_agent_clicks_the_button_after_approval(display, app, openai_server):
    app.drain()
    # The button's centre as the model would write it: 0..1000 across the 1920x1080 screenshot.
    x, y = round((BUTTON[0] + BUTTON[2] / 2) * 1000 / 1920), round((BUTTON[1] + BUTTON[3] / 2) * 1000 / 1080)
    openai_server.push(call("screenshot"), call("click", x=x, y=y), "I pressed the button.")
    # approval="ask" asks only a terminal (a pipe is refused), so stdin is a pty, answered "y" as a person would.
    terminal, its_end = pty.openpty()
    try:
        os.write(terminal, b"y\n")
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "gui_agent.py"), "Press the button"],
            env=environment(display, openai_server),
            stdin=its_end,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(its_end)
        os.close(terminal)
    assert done.returncode == 0, done.stderr
    assert "[y/N]" in done.stdout  # it asked
    assert done.stdout.strip().endswith("I pressed the button.")
    app.wait_for("clicked")
    # The model was shown the screenshot, and the screen after the click.
    images = [
        part
        for request in openai_server.requests
        for message in request["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    assert len(images) >= 2 and images[0]["image_url"]["url"].startswith("data:image/")


def test_watch_build_stops_when_the_build_is_done(display, app, openai_server):
    openai_server.push("no, still compiling", "yes, 12 tests passed")
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "watch_build.py"), "0.2"],
        env=environment(display, openai_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.strip().endswith("no, still compiling"), first or process.stderr.read()
        time.sleep(0.6)  # several looks at an unchanged screen: no model calls
        assert len(openai_server.requests) == 1
        app.send("rect 900 900 60 60 #123456 0")
        assert process.stdout.readline().strip().endswith("yes, 12 tests passed")
        assert process.wait(timeout=30) == 0
        assert len(openai_server.requests) == 2
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
