"""MiniCPM-V 4.6 on an OpenAI-compatible server: vLLM, SGLang, llama.cpp, Ollama, transformers serve.

:class:`RemoteBackend` only talks to the server and yields raw chunks (:mod:`agentcpm.backends.base`);
whatever shape the server answers in (structured ``tool_calls``, tool-call markup in ``content``, both;
reasoning in ``reasoning_content``, ``reasoning`` or ``<think>``), the engine turns it into the same
:class:`~agentcpm.types.Completion`.

>>> backend = RemoteBackend("http://localhost:8000/v1", dialect="vllm")  # doctest: +SKIP
>>> Client(backend=backend).chat("hi").content  # doctest: +SKIP
"""

from ...format.markup import STOP_TOKEN_IDS, prompt_mode_messages, tools_system_prompt
from .backend import RemoteBackend
from .body import OPTIONAL_FIELDS, ToolMode
from .dialects import DIALECTS, Dialect, detect_dialect, get_dialect
from .retry import retry_after, wait_time

__all__ = [
    "DIALECTS",
    "OPTIONAL_FIELDS",
    "STOP_TOKEN_IDS",
    "Dialect",
    "RemoteBackend",
    "ToolMode",
    "detect_dialect",
    "get_dialect",
    "prompt_mode_messages",
    "retry_after",
    "tools_system_prompt",
    "wait_time",
]
