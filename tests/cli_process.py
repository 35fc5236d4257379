"""The ``agentcpm`` command as a user runs it, for the tests: a subprocess with a fresh user's environment, or
a real terminal (tmux) typed at like a person."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from openai_server import OpenAIServer

ROOT = Path(__file__).resolve().parents[1]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh user: no agentcpm settings, an empty home and state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTCPM_", "OPENAI_"))}
    env.pop("DISPLAY", None)
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), NO_COLOR="1", COLUMNS="100", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def python(
    home: Path, *args: str, stdin: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``home`` with :func:`cli_env`, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=home,
        env=cli_env(home, **env),
        timeout=timeout,
    )


def agentcpm(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return python(home, "-m", "agentcpm", *args, stdin=stdin, **env)


def one_friendly_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class Terminal:
    """One tmux server of our own (its own socket) running one command in a 100x40 window."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.socket = f"agentcpm-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        line = f"cd {shlex.quote(str(cwd))} && env -i {exports} {shlex.join(command)}"
        self.tmux("new-session", "-d", "-s", "main", "-x", "100", "-y", "40", line)
        self.tmux("set-option", "-t", "main", "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-u", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return out.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", "main", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "main", "Enter")

    def key(self, name: str) -> None:
        self.tmux("send-keys", "-t", "main", name)

    def screen(self) -> str:
        """Everything shown so far, scrollback included, as plain text."""
        shown = self.tmux("capture-pane", "-p", "-J", "-t", "main", "-S", "-")
        return "\n".join(line.rstrip() for line in shown.rstrip().splitlines())

    def wait_for(self, text: str, timeout: float = 30.0, after: int = 0) -> str:
        """Poll the screen until ``text`` appears (past character ``after``); fail with the screen if not."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown[after:]:
                return shown
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} did not appear within {timeout} s; the screen shows:\n{shown}")
            time.sleep(0.1)

    def dead(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "main", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        self.tmux("kill-server")


def start_chat(tmp_path: Path, server: OpenAIServer, *extra: str, **env_extra: str) -> Terminal:
    env = cli_env(tmp_path, TERM="xterm-256color", PATH="/usr/bin:/bin", **env_extra)
    env.pop("NO_COLOR")
    command = [sys.executable, "-m", "agentcpm", "chat", "--base-url", server.base_url, *extra]
    return Terminal(command, env, tmp_path)
