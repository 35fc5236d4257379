"""An OpenAI chat-completions request body -> agentcpm messages, tools and options (validated).

Every refusal is an :class:`~agentcpm.serve.config.APIError` naming the field (``param``), so a client sees
what to change. Image URLs are fetched and decoded off the event loop, within the server's limits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .. import images as _images
from ..backends.base import GenerationOptions
from ..errors import AgentCPMError, ImageError, ImageTooLargeError
from ..types import ImagePart, Message, tool_schemas
from .config import APIError, ServeConfig, bad_request

#: Fields accepted and used.
USED = {
    "model", "messages", "tools", "tool_choice", "response_format", "stream", "stream_options", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "stop", "seed", "chat_template_kwargs", "mm_processor_kwargs",
    "stop_token_ids", "n",
}  # fmt: skip
#: Fields accepted and ignored: they change nothing a client relies on (or only bookkeeping).
IGNORED = {
    "user", "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort", "logprobs",
    "top_logprobs", "frequency_penalty", "presence_penalty", "logit_bias", "skip_special_tokens",
    "include_stop_str_in_output", "spaces_between_special_tokens",
}  # fmt: skip
_ROLES = {"system", "developer", "user", "assistant", "tool"}


@dataclass
class ChatRequest:
    """A validated request: what to ask the model and how to answer."""

    model: str | None
    messages: list[Message]
    tools: list[dict[str, Any]]
    options: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    tool_choice: str | None = None  # None/"auto", "none", "required", or a function name
    schema: dict[str, Any] | None = None  # response_format json_schema's schema ({} for json_object)
    schema_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_request(body: Any, config: ServeConfig) -> ChatRequest:
    """Check the body's fields and turn them into a :class:`ChatRequest` (images not yet fetched)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    unknown = sorted(set(body) - USED - IGNORED)
    if unknown:
        raise bad_request(f"unsupported field(s): {', '.join(unknown)}", param=unknown[0])
    _refuse_unsupported_values(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model must be a string", "model")
    if model and config.model_names and model not in config.model_names:
        names = ", ".join(repr(n) for n in config.model_names)
        raise APIError(
            404,
            f"the model {model!r} does not exist; this server serves {names}",
            param="model",
            code="model_not_found",
        )
    stream = _typed(body, "stream", bool, False)
    stream_options = _typed(body, "stream_options", dict, {}) or {}
    request = ChatRequest(
        model=model,
        messages=parse_messages(body.get("messages"), config),
        tools=_tools(body.get("tools")),
        options=_options(body),
        stream=bool(stream),
        include_usage=bool(stream and stream_options.get("include_usage")),
    )
    request.tool_choice = _tool_choice(body.get("tool_choice"), request.tools)
    if request.tool_choice == "none":
        request.tools = []
    request.schema, request.schema_name = _response_format(body.get("response_format"))
    return request


def _refuse_unsupported_values(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n not in (None, 1):
        raise bad_request("n > 1 is not supported: send one request per answer", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad_request("logprobs are not supported by agentcpm serve", "logprobs")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise bad_request(f"{name} is not supported by agentcpm serve (leave it at 0)", name)
    if body.get("logit_bias"):
        raise bad_request("logit_bias is not supported by agentcpm serve", "logit_bias")


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind in (int, float, (int, float)) and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise bad_request(f"{name} must be a {names}", name)
    return value


def _options(body: dict[str, Any]) -> dict[str, Any]:
    max_tokens = _typed(body, "max_completion_tokens", int, None) or _typed(body, "max_tokens", int, None)
    if max_tokens is not None and max_tokens < 1:
        raise bad_request("max_tokens must be at least 1", "max_tokens")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_request("stop must be a string or a list of strings", "stop")
    template = _typed(body, "chat_template_kwargs", dict, {})
    processor = _typed(body, "mm_processor_kwargs", dict, {})
    thinking = template.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise bad_request("chat_template_kwargs.enable_thinking must be true or false", "chat_template_kwargs")
    mode = processor.get("downsample_mode")
    if mode is not None and mode not in ("16x", "4x"):
        raise bad_request('mm_processor_kwargs.downsample_mode must be "16x" or "4x"', "mm_processor_kwargs")
    slices = processor.get("max_slice_nums")
    if slices is not None and (not isinstance(slices, int) or isinstance(slices, bool) or slices < 1):
        raise bad_request("mm_processor_kwargs.max_slice_nums must be a positive integer", "mm_processor_kwargs")
    ids = body.get("stop_token_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
        raise bad_request("stop_token_ids must be a list of integers", "stop_token_ids")
    return {
        "max_tokens": max_tokens,
        "temperature": _typed(body, "temperature", (int, float), None),
        "top_p": _typed(body, "top_p", (int, float), None),
        "stop": stop or None,
        "seed": _typed(body, "seed", int, None),
        "thinking": thinking,
        "downsample_mode": mode,
        "max_slice_nums": slices,
    }


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("tools must be a list of function tools", "tools")
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise bad_request(f"tools[{index}] must be {{'type': 'function', 'function': {{...}}}}", "tools")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(f"tools[{index}].function.name is missing", "tools")
        if not isinstance(function.get("parameters", {}), dict):
            raise bad_request(f"tools[{index}].function.parameters must be a JSON schema object", "tools")
    try:
        return tool_schemas(value)
    except AgentCPMError as exc:
        raise bad_request(str(exc), "tools") from None


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> str | None:
    if value is None or value == "auto":
        return None
    if value in ("none", "required"):
        if value == "required" and not tools:
            raise bad_request('tool_choice "required" needs tools', "tool_choice")
        return str(value)
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if name not in {t["function"]["name"] for t in tools}:
            raise bad_request(f"tool_choice names the function {name!r}, which is not in tools", "tool_choice")
        return str(name)
    raise bad_request('tool_choice must be "auto", "none", "required" or a function', "tool_choice")


def _response_format(value: Any) -> tuple[dict[str, Any] | None, str]:
    if value is None:
        return None, ""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None, ""
    if kind == "json_object":
        return {}, ""
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        spec = value["json_schema"]
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be a JSON schema object", "response_format")
        _check_schema(schema)
        return schema, str(spec.get("name") or "")
    raise bad_request('response_format.type must be "text", "json_object" or "json_schema"', "response_format")


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError:
        return
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise bad_request(
            f"response_format's schema is not a valid JSON schema: {exc.message}", "response_format"
        ) from None


# ---------------------------------------------------------------------------- messages and images


def parse_messages(value: Any, config: ServeConfig) -> list[Message]:
    """OpenAI messages -> Messages; images only as data: or http(s) URLs, within the count limits."""
    if not isinstance(value, list) or not value:
        raise bad_request("messages must be a non-empty list", "messages")
    if len(value) > config.max_messages:
        raise bad_request(f"too many messages ({len(value)}); this server accepts {config.max_messages}", "messages")
    messages, count = [], 0
    for index, item in enumerate(value):
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            raise bad_request(f"messages[{index}] needs a role: system, user, assistant or tool", "messages")
        item = dict(item)
        if item["role"] == "developer":
            item["role"] = "system"
        count += _check_content(item.get("content"), index)
        try:
            messages.append(Message.from_openai(item))
        except (AgentCPMError, ValueError) as exc:
            raise bad_request(f"messages[{index}]: {exc}", "messages") from None
    if count > config.max_images:
        raise bad_request(f"too many images ({count}); this server accepts {config.max_images}", "messages")
    return messages


def _check_content(content: Any, index: int) -> int:
    if content is None or isinstance(content, str):
        return 0
    if not isinstance(content, list):
        raise bad_request(f"messages[{index}].content must be a string or a list of parts", "messages")
    images = 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind != "image_url":
            raise bad_request(f"messages[{index}]: content parts must be text or image_url, not {kind!r}", "messages")
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
            raise bad_request(
                f"messages[{index}]: image URLs must be data: or http(s) URLs (no file:// or local paths)", "messages"
            )
        images += 1
    return images


async def load_images(messages: list[Message], config: ServeConfig) -> list[Message]:
    """Every image fetched (http(s), within ``image_timeout``) and decoded in a worker thread, checked
    against ``max_image_pixels``; the result is cached in the part, so backends do not read it again."""
    loaded: list[Message] = []
    for message in messages:
        if not message.images:
            loaded.append(message)
            continue
        parts = [await _load(p, config) if isinstance(p, ImagePart) else p for p in message.content]
        loaded.append(message.model_copy(update={"content": parts}))
    return loaded


async def _load(part: ImagePart, config: ServeConfig) -> ImagePart:
    source = part.source

    def work() -> ImagePart:
        data = _images._download(source, timeout=config.image_timeout) if _images.is_url(source) else source
        image = ImagePart(data, max_pixels=config.max_image_pixels)
        image.open()
        return image

    try:
        return await asyncio.to_thread(work)
    except ImageTooLargeError as exc:
        raise APIError(413, str(exc).replace(", or raise agentcpm.images.MAX_PIXELS", ""), param="messages") from None
    except ImageError as exc:
        status = 413 if "larger than" in str(exc) else 400  # a download over the size limit
        raise APIError(status, str(exc), param="messages") from None


def generation_options(defaults: GenerationOptions, options: dict[str, Any]) -> GenerationOptions:
    return defaults.merged(**options)
