"""The contract every backend fulfils: a list of messages and tools in, a Completion or events out.

A backend never sees strings or dicts: :class:`~agentcpm.client.Client` has already turned the user's
input into :class:`~agentcpm.types.Message` objects and OpenAI-form tool schemas. Every backend ends in
the same parser, so ``Completion`` and the events look the same whichever one produced them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from ..images import DownsampleMode
from ..types import ImagePart, Message, TextPart, ToolCall


@dataclass(frozen=True)
class GenerationOptions:
    """The options every backend understands. ``None`` means "the model's or server's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    thinking: bool | None = None  # enable_thinking in the chat template
    downsample_mode: DownsampleMode | None = None
    max_slice_nums: int | None = None
    use_image_id: bool | None = None
    timeout: float | None = None  # seconds for the whole request
    max_num_frames: int | None = None  # video: frames sampled (model default 128)
    stack_frames: int | None = None  # video: frames stacked per image (1; 3 or 5 for long videos)

    def merged(self, **overrides: Any) -> GenerationOptions:
        """A copy with the given non-None values replacing these."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            from ..errors import ConfigurationError

            raise ConfigurationError(
                f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------------------- what a backend yields
# Plain slotted dataclasses, one per token or SSE chunk: they must be cheap. ``type`` names each kind.


@dataclass(slots=True)
class TextChunk:
    """Text the model wrote, exactly as written (tool-call markup and ``<think>`` included: the engine parses it)."""

    text: str
    type: ClassVar[Literal["text"]] = "text"


@dataclass(slots=True)
class ReasoningChunk:
    """Reasoning that the server already separated from the answer (``reasoning_content``)."""

    text: str
    type: ClassVar[Literal["reasoning"]] = "reasoning"


@dataclass(slots=True)
class ToolCallChunk:
    """A piece of a structured tool call, as OpenAI-compatible servers stream them: ``index`` says which
    call; ``name`` and ``arguments`` (raw JSON text) are appended to what came before."""

    index: Any
    id: str | None = None
    name: str | None = None
    arguments: str | None = None
    ready: ToolCall | None = None  # a call parsed already (a script): taken as it is
    type: ClassVar[Literal["tool_call"]] = "tool_call"


@dataclass(slots=True)
class UsageChunk:
    """Token counts (and, where the backend knows them better than the engine, timings)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens served from a cache
    images_encoded: int | None = None  # images run through the vision encoder for this request
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    type: ClassVar[Literal["usage"]] = "usage"


@dataclass(slots=True)
class FinishChunk:
    """The model or server said the answer is over, and why (stop, length, tool_calls, cancelled, ...).
    A stream that ends without one is an incomplete answer."""

    reason: str | None = "stop"
    type: ClassVar[Literal["finish"]] = "finish"


@dataclass(slots=True)
class StartChunk:
    """Optional, first: the prompt ends inside ``<think>``, so the text starts as reasoning."""

    in_reasoning: bool
    type: ClassVar[Literal["start"]] = "start"


RawChunk = TextChunk | ReasoningChunk | ToolCallChunk | UsageChunk | FinishChunk | StartChunk


@dataclass(frozen=True, slots=True)
class Request:
    """What a backend is asked: messages (tool images already moved into user turns), OpenAI-form tool
    schemas, options. ``stream``: the caller wants events as they come (else only the end result matters).
    ``blocking``: the caller drives this on a private event loop, so the backend may block it (the in-process
    model then generates on the calling thread)."""

    messages: list[Message]
    tools: list[dict[str, Any]]
    options: GenerationOptions
    stream: bool = True
    blocking: bool = False


@runtime_checkable
class Backend(Protocol):
    """What a backend does: talk to the model, nothing else.

    ``generate`` turns a :class:`Request` into an async stream of raw chunks (:data:`RawChunk`); the engine
    (:mod:`agentcpm.engine`) does everything else, the same for every backend. A new backend is one async
    generator plus its setup::

        class EchoBackend:
            async def generate(self, request):
                yield TextChunk(request.messages[-1].text)
                yield FinishChunk("stop")

            async def aclose(self): ...
            def close(self): ...

    Implementations are safe to call from several threads and tasks. ``close`` / ``aclose`` free what the
    backend holds (connections; the in-process model's running generations).
    """

    def generate(self, request: Request) -> AsyncGenerator[RawChunk, None]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def move_tool_images(messages: list[Message], stand_ins: Mapping[tuple[int, int], str] | None = None) -> list[Message]:
    """Send images that tools returned in a user turn right after the tool results.

    The chat template has no place for images in ``tool`` turns and several servers drop them, so each
    run of consecutive tool messages keeps only its text, followed by one user message that carries the
    images, each introduced by the name of the tool that returned it. ``stand_ins`` maps (message index,
    content position) of images not to send to the text that takes their place there (the agent's image
    window): the tool's own text stays as it is, so a prompt without an old image matches the prompt with it
    up to that image's turn (what a prefix cache can reuse).
    """
    stand_ins = stand_ins or {}
    out: list[Message] = []
    pending: list[TextPart | ImagePart] = []
    for index, message in enumerate(messages):
        images = [(i, p) for i, p in enumerate(message.content) if isinstance(p, ImagePart)]
        if message.role == "tool" and images:
            out.append(
                message.model_copy(update={"content": [p for p in message.content if not isinstance(p, ImagePart)]})
            )
            source = f"the {message.name} tool" if message.name else "a tool"
            for position, image in images:
                stand_in = stand_ins.get((index, position))
                pending += [TextPart(f"Image returned by {source}:"), TextPart(stand_in) if stand_in else image]
            continue
        if pending and message.role != "tool":
            out.append(Message("user", pending))
            pending = []
        out.append(message)
    if pending:
        out.append(Message("user", pending))
    return out
