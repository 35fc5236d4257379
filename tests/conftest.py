"""Shared pytest fixtures. Each block names its owner; add yours in its own block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------- remote backend (openai_server.py)


@pytest.fixture
def openai_server() -> Iterator[object]:
    """A started :class:`openai_server.OpenAIServer` with an empty script: ``openai_server.push(...)`` replies."""
    from openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server


# ---------------------------------------------------------------------------- tiny model (tiny_model.py; local backend)


def _one_torch_thread() -> None:
    # The tiny model's operations are too small to gain from threads, and on a busy 2-core machine a second
    # torch thread waiting at every barrier makes generation 10-30x slower.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random MiniCPM-V 4.6 checkpoint folder; nothing scripted, so pass ``max_tokens``.
    (Sets torch to one thread for the session: fastest for tiny models.)"""
    from tiny_model import build_tiny_model

    _one_torch_thread()
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def scripted_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint scripted with ``tiny_model.TOOL_SCRIPT`` (weather question -> get_weather call,
    tool result -> final answer, thinking question -> reasoning + answer). Sets torch to one thread."""
    from tiny_model import TOOL_SCRIPT, build_tiny_model

    _one_torch_thread()
    return build_tiny_model(tmp_path_factory.mktemp("scripted_model"), replies=TOOL_SCRIPT)


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_path: Path) -> object:
    """The tiny checkpoint's processor, loaded without torchvision (``agentcpm.backends.local.load_processor``)."""
    from agentcpm.backends.local import load_processor

    return load_processor(tiny_model_path)


# ---------------------------------------------------------------------------- screen (xdisplay.py; screen capture)


@pytest.fixture(scope="session")
def xvfb() -> Iterator[object]:
    """A 1920x1080 Xvfb display (``xdisplay.Xvfb``) shared by the session; skips where Xvfb is missing."""
    from xdisplay import Xvfb, require

    require("Xvfb")  # skips, naming it and `apt-get install xvfb` (.ci/run installs it)
    with Xvfb(1920, 1080) as display:
        yield display


@pytest.fixture
def display(xvfb: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """``DISPLAY`` set to the session's Xvfb for one test; returns the display name."""
    name: str = xvfb.name  # type: ignore[attr-defined]
    monkeypatch.setenv("DISPLAY", name)
    return name


# ---------------------------------------------------------------------------- conversation logs (issue 16)


@pytest.fixture(autouse=True, scope="session")
def _logs_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Conversations logged by in-process CLI code in tests go to a temporary folder, never the user's.
    (Subprocess tests get a fresh HOME from cli_process.cli_env, which drops AGENTCPM_* variables.)"""
    import os

    previous = os.environ.get("AGENTCPM_LOG_DIR")
    os.environ["AGENTCPM_LOG_DIR"] = str(tmp_path_factory.mktemp("agentcpm-logs"))
    yield
    if previous is None:
        os.environ.pop("AGENTCPM_LOG_DIR", None)
    else:
        os.environ["AGENTCPM_LOG_DIR"] = previous
