"""Screen tests skip, never error or pass silently, where Xvfb, tkinter or pynput is missing; the reason names
what is missing and how to install it (tests/xdisplay.py: missing, needs, require)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xdisplay

HERE = Path(__file__).resolve().parent  # the screen tests


def test_a_missing_program_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setattr(xdisplay.shutil, "which", lambda name: None)
    assert xdisplay.missing("Xvfb") == "not installed: Xvfb (`apt-get install xvfb`)"
    assert xdisplay.missing("Xvfb", "tmux") == (
        "not installed: Xvfb (`apt-get install xvfb`), tmux (`apt-get install tmux`)"
    )
    with pytest.raises(pytest.skip.Exception, match=r"Xvfb.*apt-get install xvfb"):
        xdisplay.require("Xvfb")
    mark = xdisplay.needs("xdotool")
    assert mark.args == (True,) and mark.kwargs["reason"] == "not installed: xdotool (`apt-get install xdotool`)"


def test_a_missing_module_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynput", None)  # blocked: cannot be imported
    assert xdisplay.missing("pynput") == 'not installed: pynput (`pip install "agentcpm[gui]"`)'
    monkeypatch.setitem(sys.modules, "_tkinter", None)
    assert xdisplay.missing("tkinter") == "not installed: tkinter (`apt-get install python3-tk`)"


def test_nothing_missing_means_no_skip(monkeypatch):
    monkeypatch.setattr(xdisplay.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert xdisplay.missing("Xvfb", "xdotool", "tmux") is None
    xdisplay.require("Xvfb")  # returns
    assert xdisplay.needs("Xvfb").args == (False,)


@pytest.mark.slow
def test_screen_tests_skip_with_reasons_without_xvfb_and_pynput(tmp_path):
    """The screen test files in a pytest of their own, with an empty PATH (no Xvfb) and pynput blocked."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "no_pynput.py").write_text("import sys\n\nsys.modules['pynput'] = None\n")
    env = {**os.environ, "PATH": str(tmp_path / "bin"), "PYTHONPATH": str(tmp_path)}
    files = ["test_screen_actions.py", "test_screen_capture.py", "test_screen_tools.py", "test_screen_watch.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no_pynput", "-p", "no:cacheprovider", "-rs", "-q", *files],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " failed" not in run.stdout and " error" not in run.stdout
    skips = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("not installed: " in line for line in skips), skips
    assert any("Xvfb (`apt-get install xvfb`)" in line for line in skips)
    assert any('pynput (`pip install "agentcpm[gui]"`)' in line for line in skips)
