"""Shared pytest fixtures. Each block names its owner; add yours in its own block."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# ---------------------------------------------------------------------------- remote backend (openai_server.py)


@pytest.fixture
def openai_server() -> Iterator[object]:
    """A started :class:`openai_server.OpenAIServer` with an empty script: ``openai_server.push(...)`` replies."""
    from openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server
