"""The data every part of agentcpm speaks: messages made of typed parts, tool calls, completions, events.

Everything converts losslessly to and from the OpenAI chat format, so plain OpenAI-style dicts are
accepted anywhere a :class:`Message` or a tool is.

>>> m = Message("user", "hello")
>>> Message.from_openai(m.to_openai()) == m
True
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from . import images as _images
from .errors import ConfigurationError

if TYPE_CHECKING:
    from PIL import Image as PILImage

Role = Literal["system", "user", "assistant", "tool"]


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id."""
    return "call_" + uuid.uuid4().hex[:24]


# ---------------------------------------------------------------------------- content parts


class TextPart(BaseModel):
    """A piece of text in a message."""

    model_config = ConfigDict(frozen=True)

    type: Literal["text"] = "text"
    text: str

    def __init__(self, text: str | None = None, /, **data: Any) -> None:
        if text is not None:
            data["text"] = text
        super().__init__(**data)

    def to_openai(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


class ImagePart(BaseModel):
    """An image: a path, http(s) or data URL, bytes, PIL image or numpy array.

    Nothing is read until the image is needed; :meth:`open` decodes and validates it once (a corrupt or
    non-image source raises :class:`~agentcpm.errors.ImageError` naming it; more pixels than
    ``max_pixels`` raises :class:`~agentcpm.errors.ImageTooLargeError`).

    >>> ImagePart("screenshot.png").describe()
    'screenshot.png'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["image"] = "image"
    source: Any
    max_pixels: int | None = None

    _image: Any = PrivateAttr(default=None)

    def __init__(self, source: Any = None, /, **data: Any) -> None:
        if source is not None:
            data["source"] = source
        super().__init__(**data)

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("an image needs a source: a path, URL, bytes, PIL image or numpy array")
        return value

    @property
    def is_url(self) -> bool:
        """True when the source is an http(s) URL (servers can fetch it themselves)."""
        return _images.is_url(self.source)

    def describe(self) -> str:
        return _images.describe_source(self.source)

    def open(self) -> PILImage.Image:
        """The decoded RGB image (loaded once, then cached)."""
        if self._image is None:
            self._image = _images.load_image(self.source, max_pixels=self.max_pixels)
        return self._image

    def data_url(
        self,
        fmt: _images.ImageFormat = "auto",
        *,
        max_slice_nums: int | None = None,
        downsample_mode: _images.DownsampleMode | None = None,
    ) -> str:
        """The image resized to what the model uses with these settings, encoded as a ``data:`` URL."""
        return _images.image_to_data_url(
            self._image if self._image is not None else self.source,  # unopened: decoded at the size sent
            fmt=fmt,
            max_slice_nums=max_slice_nums,
            max_pixels=self.max_pixels,
            downsample_mode=downsample_mode,
        )

    def to_openai(
        self, *, max_slice_nums: int | None = None, downsample_mode: _images.DownsampleMode | None = None
    ) -> dict[str, Any]:
        """An OpenAI ``image_url`` part: URLs pass through, everything else becomes a data URL."""
        if self.is_url or (isinstance(self.source, str) and self.source.startswith("data:")):
            url = self.source
        else:
            url = self.data_url(max_slice_nums=max_slice_nums, downsample_mode=downsample_mode)
        return {"type": "image_url", "image_url": {"url": url}}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImagePart):
            return NotImplemented
        a, b = self.source, other.source
        if isinstance(a, (str, bytes)) and isinstance(b, (str, bytes)):
            return a == b
        return a is b

    __hash__ = None  # type: ignore[assignment]


class VideoPart(BaseModel):
    """A video file (path) or URL."""

    model_config = ConfigDict(frozen=True)

    type: Literal["video"] = "video"
    source: str

    def __init__(self, source: str | Path | None = None, /, **data: Any) -> None:
        if source is not None:
            data["source"] = str(source)
        super().__init__(**data)

    def to_openai(self) -> dict[str, Any]:
        url = self.source
        if not url.startswith(("http://", "https://", "data:", "file:")):
            url = Path(url).expanduser().resolve().as_uri()
        return {"type": "video_url", "video_url": {"url": url}}


Part = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


def part_from_openai(item: Any) -> TextPart | ImagePart | VideoPart:
    """One content item in OpenAI (or Hugging Face chat) form -> a typed part."""
    if isinstance(item, (TextPart, ImagePart, VideoPart)):
        return item
    if isinstance(item, str):
        return TextPart(item)
    if not isinstance(item, dict):
        # PIL images, numpy arrays and paths given directly in a content list.
        return ImagePart(item)
    kind = item.get("type")
    if kind == "text" or (kind is None and "text" in item):
        return TextPart(str(item.get("text", "")))
    if kind in ("image_url", "input_image") or "image_url" in item:
        value = item.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        return ImagePart(url)
    if kind == "image" or "image" in item:
        return ImagePart(item.get("image") or item.get("url") or item.get("path") or item.get("source"))
    if kind in ("video_url", "video") or "video_url" in item or "video" in item:
        value = item.get("video_url") or item.get("video") or item.get("url") or item.get("path")
        url = value.get("url") if isinstance(value, dict) else value
        if isinstance(url, str) and url.startswith("file://"):
            url = url[len("file://") :]
        return VideoPart(str(url))
    raise ConfigurationError(f"unsupported content part {item!r}: use text, image_url or video_url parts")


# ---------------------------------------------------------------------------- tool calls and results


class ToolCall(BaseModel):
    """A call the model made. ``complete`` is False when the output was cut off mid-call (never execute
    such a call); ``error`` says what was wrong with it (unknown tool, arguments that did not convert)."""

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw: str = ""
    complete: bool = True
    error: str | None = None

    def to_openai(self) -> dict[str, Any]:
        from .tools import dumps_exact  # ints beyond Python's 4300-digit str() limit too (the parser keeps them)

        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": dumps_exact(self.arguments, ensure_ascii=False)},
        }

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> ToolCall:
        from .tools import dumps_exact, text_int  # exact ints of any size

        function = data.get("function", data)
        arguments = function.get("arguments") or {}
        error = None
        if isinstance(arguments, str):
            try:
                decoded = json.loads(arguments, parse_int=text_int) if arguments.strip() else {}
            except (ValueError, RecursionError) as exc:
                decoded, error = {}, f"arguments are not valid JSON: {exc}"
            if not isinstance(decoded, dict):
                decoded, error = {}, "arguments are not a JSON object"
            arguments = decoded
        return cls(
            id=data.get("id") or new_call_id(),
            name=str(function.get("name", "")),
            arguments=dict(arguments),
            raw=dumps_exact(function, ensure_ascii=False, default=str),
            error=error,
        )


class ToolResult(BaseModel):
    """What running a tool produced, ready to go back to the model."""

    call_id: str
    name: str
    content: list[Part] = Field(default_factory=list)
    is_error: bool = False
    duration: float | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _normalize_content(value)

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]

    def to_message(self) -> Message:
        return Message(role="tool", content=list(self.content), tool_call_id=self.call_id, name=self.name)


# ---------------------------------------------------------------------------- messages


def _normalize_content(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [TextPart(value)] if value else []
    if isinstance(value, (TextPart, ImagePart, VideoPart)):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        return [part_from_openai(item) for item in value]
    return [part_from_openai(value)]


class Message(BaseModel):
    """One turn of a conversation. ``content`` is a list of parts; a plain string is accepted.

    >>> Message("user", ["What is this?", ImagePart("cat.jpg")]).images[0].describe()
    'cat.jpg'
    """

    role: Role
    content: list[Part] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None

    def __init__(self, role: Role | None = None, content: Any = None, /, **data: Any) -> None:
        if role is not None:
            data["role"] = role
        if content is not None:
            data["content"] = content
        super().__init__(**data)

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _normalize_content(value)

    # constructors ------------------------------------------------------------------------------------
    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", text)

    @classmethod
    def user(cls, text: str = "", images: Sequence[Any] = ()) -> Message:
        parts: list[Any] = [img if isinstance(img, ImagePart) else ImagePart(img) for img in images]
        if text:
            parts.append(TextPart(text))
        return cls("user", parts)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: Sequence[ToolCall] = (), reasoning: str | None = None) -> Message:
        return cls("assistant", text, tool_calls=list(tool_calls), reasoning=reasoning)

    # views -------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """All text parts joined by newlines (as the chat template joins them)."""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]

    @property
    def videos(self) -> list[VideoPart]:
        return [p for p in self.content if isinstance(p, VideoPart)]

    # OpenAI format -----------------------------------------------------------------------------------
    def to_openai(
        self, *, max_slice_nums: int | None = None, downsample_mode: _images.DownsampleMode | None = None
    ) -> dict[str, Any]:
        """This message as an OpenAI chat message dict (images as data URLs unless they are URLs)."""
        out: dict[str, Any] = {"role": self.role}
        if len(self.content) == 1 and isinstance(self.content[0], TextPart):
            out["content"] = self.content[0].text
        elif not self.content:
            out["content"] = None if (self.role == "assistant" and self.tool_calls) else ""
        else:
            out["content"] = [
                p.to_openai(max_slice_nums=max_slice_nums, downsample_mode=downsample_mode)
                if isinstance(p, ImagePart)
                else p.to_openai()
                for p in self.content
            ]
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        if self.reasoning is not None:
            out["reasoning_content"] = self.reasoning
        return out

    @classmethod
    def from_openai(cls, data: dict[str, Any] | Message) -> Message:
        """An OpenAI chat message dict (or a Message, returned as is) -> a Message."""
        if isinstance(data, Message):
            return data
        if not isinstance(data, dict) or "role" not in data:
            raise ConfigurationError(f"not a chat message: {data!r}; expected a dict with 'role'")
        reasoning = data.get("reasoning_content", data.get("reasoning"))
        return cls(
            role=data["role"],
            content=data.get("content"),
            tool_calls=[
                c if isinstance(c, ToolCall) else ToolCall.from_openai(c) for c in data.get("tool_calls") or []
            ],
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
            reasoning=reasoning if isinstance(reasoning, str) else None,
        )


MessageInput = str | Message | dict[str, Any] | Sequence[str | Message | dict[str, Any]]


def to_messages(messages: MessageInput) -> list[Message]:
    """A string (one user turn), a Message, an OpenAI dict or a list of those -> a list of Messages.

    In a list, a plain string is a user turn.
    """
    if isinstance(messages, (str, Message, dict)):
        messages = [messages]
    return [Message("user", m) if isinstance(m, str) else Message.from_openai(m) for m in messages]


def to_openai_messages(
    messages: MessageInput,
    *,
    max_slice_nums: int | None = None,
    downsample_mode: _images.DownsampleMode | None = None,
) -> list[dict[str, Any]]:
    return [m.to_openai(max_slice_nums=max_slice_nums, downsample_mode=downsample_mode) for m in to_messages(messages)]


# ---------------------------------------------------------------------------- tool schemas


def tool_schema(tool: Any) -> dict[str, Any]:
    """Any tool description -> the OpenAI form ``{"type": "function", "function": {...}}``.

    Accepts an agentcpm ``Tool`` (anything with ``to_openai()``), the OpenAI form, or the bare
    ``{"name", "description", "parameters"}`` form.
    """
    if hasattr(tool, "to_openai"):
        return tool.to_openai()
    if not isinstance(tool, dict):
        raise ConfigurationError(f"not a tool: {tool!r}; pass an agentcpm tool or an OpenAI tool schema")
    if "function" in tool and isinstance(tool["function"], dict):
        function = dict(tool["function"])
    elif "name" in tool:
        function = {k: v for k, v in tool.items() if k != "type"}
    else:
        raise ConfigurationError(f"tool schema without a name: {tool!r}")
    function.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": function}


def tool_schemas(tools: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Normalise a list of tools (see :func:`tool_schema`); ``None`` gives an empty list."""
    return [tool_schema(t) for t in tools or ()]


# ---------------------------------------------------------------------------- results


class Usage(BaseModel):
    """Token counts and timings of one request (or, summed, of several)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens the backend did not compute again (a prefix cache)
    images_encoded: int | None = None  # images run through the vision encoder (not taken from a cache)
    time_to_first_token: float | None = None  # seconds
    tokens_per_second: float | None = None  # decode speed
    duration: float | None = None  # seconds, whole request

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=_add_optional(self.cached_tokens, other.cached_tokens),
            images_encoded=_add_optional(self.images_encoded, other.images_encoded),
            duration=(self.duration or 0.0) + (other.duration or 0.0)
            if self.duration is not None or other.duration is not None
            else None,
        )


def _add_optional(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


class Completion(BaseModel):
    """One model answer, the same whichever backend produced it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    raw: Any = Field(default=None, repr=False)

    def to_message(self) -> Message:
        """The assistant turn to append to the history."""
        return Message.assistant(self.content, self.tool_calls, self.reasoning)


# ---------------------------------------------------------------------------- stream events
# Plain slotted dataclasses: a parser may emit one per character, so they must be cheap. Each kind has a
# ``type`` tag (a class attribute: free per event) to dispatch on.


@dataclass(slots=True)
class ContentDelta:
    """Text of the answer."""

    text: str
    type: ClassVar[Literal["content.delta"]] = "content.delta"


@dataclass(slots=True)
class ReasoningDelta:
    """Text of the model's reasoning (inside ``<think>``)."""

    text: str
    type: ClassVar[Literal["reasoning.delta"]] = "reasoning.delta"


@dataclass(slots=True)
class ToolCallStarted:
    """The model started writing a tool call: its function name is known. ``index`` counts calls in this
    answer from 0. (The agent's :class:`~agentcpm.agent.ToolRunStarted` is the tool actually running.)"""

    index: int
    id: str
    name: str
    type: ClassVar[Literal["tool_call.started"]] = "tool_call.started"


@dataclass(slots=True)
class ToolCallArgumentsDelta:
    """Part of one argument value, as it arrives. ``parameter`` names the argument (None for JSON calls,
    where ``text`` is a piece of the raw JSON)."""

    index: int
    id: str
    parameter: str | None
    text: str
    type: ClassVar[Literal["tool_call.arguments"]] = "tool_call.arguments"


@dataclass(slots=True)
class ToolCallFinished:
    """The model finished writing a tool call (or was cut off: see ``call.complete``)."""

    index: int
    call: ToolCall
    type: ClassVar[Literal["tool_call.finished"]] = "tool_call.finished"


@dataclass(slots=True)
class ResponseCompleted:
    """The last event of one model response: the whole answer as a :class:`Completion`."""

    completion: Completion
    type: ClassVar[Literal["response.completed"]] = "response.completed"


#: The earlier name of :class:`ResponseCompleted`, kept importable.
Completed = ResponseCompleted

ParseEvent = ContentDelta | ReasoningDelta | ToolCallStarted | ToolCallArgumentsDelta | ToolCallFinished
StreamEvent = ParseEvent | ResponseCompleted

__all__ = [
    "Completed",
    "Completion",
    "ContentDelta",
    "ImagePart",
    "Message",
    "MessageInput",
    "ParseEvent",
    "Part",
    "ReasoningDelta",
    "ResponseCompleted",
    "Role",
    "StreamEvent",
    "TextPart",
    "ToolCall",
    "ToolCallArgumentsDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolResult",
    "Usage",
    "VideoPart",
    "new_call_id",
    "part_from_openai",
    "to_messages",
    "to_openai_messages",
    "tool_schema",
    "tool_schemas",
]
