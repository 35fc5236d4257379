"""The chat request body for one server family, and what that server has refused so far.

A :class:`~.dialects.Dialect` decides which non-standard fields go out. When a server refuses an optional
field it is dropped for that server from then on; when it refuses native tools, tools are written into the
prompt (MiniCPM-V's own format, :mod:`.prompt`) from then on.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from ...format.markup import STOP_TOKEN_IDS, prompt_mode_messages
from ..base import Request
from .dialects import DIALECTS, Dialect
from .errors import StatusError, server_message, special_error
from .images import ImageCache

log = logging.getLogger("agentcpm.remote")

ToolMode = Literal["auto", "native", "prompt"]
#: Fields only some servers accept: when a server rejects one, it is dropped for that server from then on.
OPTIONAL_FIELDS = ("chat_template_kwargs", "mm_processor_kwargs", "stop_token_ids", "stream_options")
_SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")
_IMAGE_KNOBS = ("downsample_mode", "max_slice_nums", "use_image_id")


class Bodies:
    """Builds request bodies for one server, remembering what it refused. Safe to share between threads:
    the remembered set is replaced, never changed in place."""

    def __init__(self, url: str) -> None:
        self.url = url  # redacted: for log lines
        self.rejected: frozenset[str] = frozenset()  # optional fields this server refused
        self.tools_rejected = False  # the server refused native tools: write them into the prompt
        self.images = ImageCache()

    def prompt_tools(self, tool_mode: ToolMode, dialect: Dialect) -> bool:
        """Whether tools go into the system prompt rather than the ``tools`` field."""
        if tool_mode != "auto":
            return tool_mode == "prompt"
        return self.tools_rejected or not dialect.native_tools

    def build(self, request: Request, model: str | None, dialect: Dialect, tool_mode: ToolMode) -> dict[str, Any]:
        """The JSON body of ``request`` (local images encoded as data URLs: CPU work for new images)."""
        options, tools = request.options, request.tools
        messages = self.images.encode(request.messages, options.max_slice_nums, options.downsample_mode)
        in_prompt = bool(tools) and self.prompt_tools(tool_mode, dialect)
        if in_prompt:
            messages = prompt_mode_messages(messages, tools)
        body: dict[str, Any] = {"model": model, "messages": [m.to_openai() for m in messages]}
        if tools and not in_prompt:
            body["tools"] = tools
        for name in _SAMPLING:
            value = getattr(options, name)
            if value is not None:
                body[name] = value
        if request.stream:
            body["stream"] = True
            if dialect.stream_usage:
                body["stream_options"] = {"include_usage": True}
        if dialect.chat_template_kwargs and options.thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": options.thinking}
        if dialect.mm_processor_kwargs:
            knobs = {name: getattr(options, name) for name in _IMAGE_KNOBS if getattr(options, name) is not None}
            if knobs:
                body["mm_processor_kwargs"] = knobs
        if dialect.stop_token_ids:
            body["stop_token_ids"] = STOP_TOKEN_IDS
        for name in self.rejected:
            body.pop(name, None)
        return body

    def adapt(
        self, body: dict[str, Any], exc: StatusError, dialect: Dialect | None, tool_mode: ToolMode
    ) -> Dialect | None:
        """After a 4xx: drop what the server refused (an optional field, native tools). Returns the dialect to
        send again with, or None when the refusal is final."""
        if exc.status_code not in (400, 404, 415, 422) or special_error(exc) is not None:
            return None
        current = dialect or DIALECTS["generic"]
        message = server_message(exc.response).lower()
        refused = {name for name in OPTIONAL_FIELDS if name in body and name in message}
        if refused:
            log.info("%s refused %s; not sending it again", self.url, ", ".join(sorted(refused)))
            self.rejected = self.rejected | refused
            return current
        if "tools" in body and tool_mode == "auto" and "tool" in message:
            log.info("%s refused native tools; writing them into the system prompt", self.url)
            self.tools_rejected = True
            return current
        if "unexpected fields in the request" in message and dialect is DIALECTS["generic"]:
            return DIALECTS["transformers"]
        return None
