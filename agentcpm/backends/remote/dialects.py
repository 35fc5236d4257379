"""What each OpenAI-compatible server family accepts, and how to tell which one is answering.

A :class:`Dialect` decides which non-standard fields a request carries. The families and their fields
come from docs/servers.md and ../shared/notes (vLLM reads ``mm_processor_kwargs``; vLLM, SGLang,
llama.cpp and transformers serve read ``chat_template_kwargs``; transformers serve refuses any field it
does not know with a 422).

>>> detect_dialect({"data": [{"id": "m", "owned_by": "vllm"}]}, {}).name
'vllm'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError


@dataclass(frozen=True)
class Dialect:
    """The request fields one server family understands beyond the OpenAI standard."""

    name: str
    chat_template_kwargs: bool = False  # {"enable_thinking": ...}
    mm_processor_kwargs: bool = False  # downsample_mode, max_slice_nums, use_image_id
    stop_token_ids: bool = False
    stream_usage: bool = True  # stream_options: {"include_usage": true}
    native_tools: bool = True  # False: the server's template has no tool section; write tools into the prompt


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        Dialect("vllm", chat_template_kwargs=True, mm_processor_kwargs=True, stop_token_ids=True),
        Dialect("sglang", chat_template_kwargs=True, stop_token_ids=True),
        Dialect("llamacpp", chat_template_kwargs=True),
        Dialect("ollama", native_tools=False),
        Dialect("transformers", chat_template_kwargs=True, stream_usage=False),
        # Unknown servers get every knob; a field they reject is dropped and remembered.
        Dialect("generic", chat_template_kwargs=True, mm_processor_kwargs=True, stop_token_ids=True),
    )
}


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name`` (vllm, sglang, llamacpp, ollama, transformers, generic)."""
    key = name.lower().replace("-", "").replace(".", "").replace("_", "")
    key = {"llama": "llamacpp", "llamaserver": "llamacpp", "hf": "transformers", "openai": "generic"}.get(key, key)
    if key not in DIALECTS:
        raise ConfigurationError(f"unknown dialect {name!r}; choose one of: {', '.join(DIALECTS)}")
    return DIALECTS[key]


def detect_dialect(models: Any, headers: dict[str, str], status: int = 200) -> Dialect:
    """Tell the server family from its ``GET /models`` answer (body, lower-cased headers, status).

    vLLM, SGLang and llama.cpp name themselves in ``owned_by``; Ollama lists ``name:tag`` models owned by
    a namespace such as ``library``; transformers serve (uvicorn, with an ``x-request-id`` on every reply)
    names the hub organisation, and fails with a bare 500 when the hub cache folder does not exist.
    """
    server = headers.get("server", "").lower()
    entries = models.get("data") if isinstance(models, dict) else None
    entries = [e for e in entries or [] if isinstance(e, dict)]
    owners = {str(e.get("owned_by", "")).lower() for e in entries}
    for name in ("vllm", "sglang", "llamacpp"):
        if name in owners:
            return DIALECTS[name]
    if "llama.cpp" in server:
        return DIALECTS["llamacpp"]
    if "ollama" in server or "ollama" in owners or (entries and all(":" in str(e.get("id", "")) for e in entries)):
        return DIALECTS["ollama"]
    if "uvicorn" in server and ("x-request-id" in headers or status >= 500):
        return DIALECTS["transformers"]
    return DIALECTS["generic"]
