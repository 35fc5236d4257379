"""A real X display for tests: Xvfb on a free display number, and a small Tk app that paints known content.

>>> with Xvfb(1920, 1080) as display:            # doctest: +SKIP
...     with TkApp(display.name) as app:
...         app.wait_for("ready")

The Tk app (run as a subprocess, so Tk's main loop never blocks the tests) draws, in screen pixels:
a white background; a red square at (100, 100, 200, 200); a green square at (1600, 800, 200, 200); the text
"AGENTCPM SCREEN TEST" at the top; a button "Press me" at (400, 400, 200, 60) and an entry at
(400, 520, 400, 40). It prints one line per event: ``ready WINDOW_ID``, ``clicked``, ``entry <text>``,
``scrolled <delta>``, ``moved``. Commands on stdin, one per line:
``rect LEFT TOP WIDTH HEIGHT COLOR DELAY_MS`` paints a rectangle after a delay; ``quit``.

What the screen tests need beyond the package (Xvfb, tkinter, the gui extra's pynput, tmux, xdotool) is checked
by :func:`missing`; a test that lacks one skips, saying what is missing and how to install it::

    pytestmark = needs("pynput")          # a whole module; or @needs("Xvfb") on one test
    require("Xvfb")                       # inside a fixture or a test
"""

from __future__ import annotations

import importlib.util
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RED = (255, 0, 0)
GREEN = (0, 160, 0)
WHITE = (255, 255, 255)
RED_SQUARE = (100, 100, 200, 200)
GREEN_SQUARE = (1600, 800, 200, 200)
BUTTON = (400, 400, 200, 60)
ENTRY = (400, 520, 400, 40)

TK_SCRIPT = r"""
import queue, sys, threading, tkinter as tk

root = tk.Tk()
root.overrideredirect(True)
root.geometry("1920x1080+0+0")
root.configure(background="white")
canvas = tk.Canvas(root, width=1920, height=1080, background="white", highlightthickness=0, borderwidth=0)
canvas.place(x=0, y=0)
canvas.create_rectangle(100, 100, 299, 299, fill="#ff0000", outline="#ff0000")
canvas.create_rectangle(1600, 800, 1799, 999, fill="#00a000", outline="#00a000")
canvas.create_text(960, 40, text="AGENTCPM SCREEN TEST", font=("TkFixedFont", 24), fill="black")

def report(line):
    print(line, flush=True)

button = tk.Button(root, text="Press me", command=lambda: report("clicked"))
button.place(x=400, y=400, width=200, height=60)
entry_text = tk.StringVar()
entry_text.trace_add("write", lambda *a: report("entry " + entry_text.get()))
entry = tk.Entry(root, textvariable=entry_text, font=("TkFixedFont", 16))
entry.place(x=400, y=520, width=400, height=40)
canvas.bind("<Button-4>", lambda e: report("scrolled up"))
canvas.bind("<Button-5>", lambda e: report("scrolled down"))
canvas.bind("<Double-Button-1>", lambda e: report(f"double {e.x_root} {e.y_root}"))
canvas.bind("<B1-Motion>", lambda e: report(f"dragging {e.x_root} {e.y_root}"))
canvas.bind("<ButtonRelease-1>", lambda e: report(f"released {e.x_root} {e.y_root}"))
canvas.bind("<Motion>", lambda e: report(f"moved {e.x_root} {e.y_root}"))

commands = queue.Queue()

def read_stdin():
    for line in sys.stdin:
        commands.put(line.split())
    commands.put(["quit"])

def poll():
    while not commands.empty():
        command = commands.get()
        if command[0] == "quit":
            root.destroy()
            return
        if command[0] == "rect":
            left, top, width, height = map(int, command[1:5])
            color, delay = command[5], int(command[6])
            root.after(delay, lambda: canvas.create_rectangle(
                left, top, left + width - 1, top + height - 1, fill=color, outline=color))
    root.after(20, poll)

threading.Thread(target=read_stdin, daemon=True).start()
root.after(20, poll)
root.after(300, lambda: report(f"ready {root.wm_frame()}"))
root.mainloop()
"""


#: How to install each thing a screen test can need, as its skip reason says it.
INSTALL = {
    "Xvfb": "apt-get install xvfb",
    "xdotool": "apt-get install xdotool",
    "tmux": "apt-get install tmux",
    "tkinter": "apt-get install python3-tk",
    "pynput": 'pip install "agentcpm[gui]"',
}
_MODULES = {"tkinter": "_tkinter", "pynput": "pynput"}  # the rest are programs on PATH


def _present(name: str) -> bool:
    if name not in _MODULES:
        return shutil.which(name) is not None
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except ValueError:  # set to None in sys.modules: blocked on purpose
        return False


def missing(*names: str) -> str | None:
    """Why a test that needs ``names`` (keys of :data:`INSTALL`) cannot run here; None when all are present."""
    absent = [name for name in names if not _present(name)]
    if not absent:
        return None
    return "not installed: " + ", ".join(f"{name} (`{INSTALL[name]}`)" for name in absent)


def needs(*names: str) -> pytest.MarkDecorator:
    """A skip mark for tests that need ``names``, with the reason from :func:`missing`."""
    reason = missing(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def require(*names: str) -> None:
    """Skip the running test (or fixture) when one of ``names`` is missing."""
    reason = missing(*names)
    if reason is not None:
        pytest.skip(reason)


def free_display_number() -> int:
    """A display number with no X server (no lock file or socket)."""
    for number in range(90 + os.getpid() % 100, 400):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number between 90 and 400")


class Xvfb:
    """Start Xvfb (one screen of ``width`` x ``height``) on a free display; stop it on exit."""

    def __init__(self, width: int = 1920, height: int = 1080) -> None:
        self.width, self.height = width, height
        self.process: subprocess.Popen[bytes] | None = None
        self.name = ""

    @staticmethod
    def available() -> bool:
        return shutil.which("Xvfb") is not None

    def __enter__(self) -> Xvfb:
        for _attempt in range(3):
            number = free_display_number()
            self.name = f":{number}"
            self.process = subprocess.Popen(
                ["Xvfb", self.name, "-screen", "0", f"{self.width}x{self.height}x24", "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                if Path(f"/tmp/.X11-unix/X{number}").exists():
                    return self
                time.sleep(0.02)
            self.__exit__()
        raise RuntimeError("Xvfb did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class TkApp:
    """The test Tk app on ``display``; :meth:`wait_for` reads the events it prints."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.lines: queue.Queue[str] = queue.Queue()
        self.process: subprocess.Popen[str] | None = None
        self.window = 0

    def __enter__(self) -> TkApp:
        require("tkinter")  # the test app is a Tk window
        self.process = subprocess.Popen(
            [sys.executable, "-c", TK_SCRIPT],
            env={**os.environ, "DISPLAY": self.display},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.window = int(self.wait_for("ready", timeout=20).split()[1], 16)
        return self

    def focus(self) -> None:
        """Give the app the keyboard focus, as a window manager does when a window is clicked (Xvfb has none).

        pynput types characters with XSendEvent to the focused window, so without this they go nowhere.
        """
        import Xlib.display
        from Xlib import X

        connection = Xlib.display.Display(self.display)
        try:
            connection.set_input_focus(self.window, X.RevertToParent, X.CurrentTime)
            connection.sync()
        finally:
            connection.close()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def send(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def drain(self) -> list[str]:
        """Forget (and return) the events printed so far."""
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out

    def wait_for(self, prefix: str, timeout: float = 10.0) -> str:
        """The first event line starting with ``prefix`` (earlier ones are dropped)."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} from the Tk app in {timeout} s; saw {seen[-10:]}") from None
            if line.startswith(prefix):
                return line
            seen.append(line)

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
