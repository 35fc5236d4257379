"""``agentcpm serve``: an OpenAI-compatible endpoint whose tool calls are structured, whatever runs the model.

MiniCPM-V 4.6 writes its tool calls as markup; ``transformers serve``, Ollama and most llama.cpp builds hand
that markup back inside ``content``, so OpenAI clients and agent frameworks see no tool calls. This server
answers with ``message.tool_calls`` (and ``reasoning_content``), from the model in this process or in front
of any OpenAI-compatible server. Needs the extra: ``pip install "agentcpm[serve]"`` (Starlette, uvicorn).

>>> from agentcpm import Client
>>> from agentcpm.serve import ServeConfig, create_app, serve
>>> serve(Client(base_url="http://localhost:11434/v1", model="minicpm-v4.6"), port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import API_KEY_ENV, APIError, ServeConfig

if TYPE_CHECKING:
    from .app import create_app
    from .main import serve

__all__ = ["API_KEY_ENV", "APIError", "ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .main import serve

        return serve
    raise AttributeError(name)
