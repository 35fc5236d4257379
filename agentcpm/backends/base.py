"""The contract every backend fulfils: a list of messages and tools in, a Completion or events out.

A backend never sees strings or dicts: :class:`~agentcpm.client.Client` has already turned the user's
input into :class:`~agentcpm.types.Message` objects and OpenAI-form tool schemas. Every backend ends in
the same parser, so ``Completion`` and the events look the same whichever one produced them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

from ..errors import ResponseError
from ..images import DownsampleMode
from ..types import Completed, Completion, ImagePart, Message, StreamEvent, TextPart


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


@runtime_checkable
class Backend(Protocol):
    """What :class:`~agentcpm.client.Client` needs from a backend.

    ``stream`` yields parser events (:mod:`agentcpm.parsing`) as text arrives and ends with exactly one
    :class:`~agentcpm.types.Completed`. Implementations are safe to call from several threads and tasks.
    """

    def complete(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Completion: ...

    def stream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Iterator[StreamEvent]: ...

    async def acomplete(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Completion: ...

    def astream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> AsyncIterator[StreamEvent]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def final_completion(events: Iterator[StreamEvent]) -> Completion:
    """Drain a stream and return its completion."""
    for event in events:
        if isinstance(event, Completed):
            return event.completion
    raise ResponseError("the stream ended without a completion")


async def afinal_completion(events: AsyncIterator[StreamEvent]) -> Completion:
    """Drain an async stream and return its completion."""
    async for event in events:
        if isinstance(event, Completed):
            return event.completion
    raise ResponseError("the stream ended without a completion")


def move_tool_images(messages: list[Message]) -> list[Message]:
    """Send images that tools returned in a user turn right after the tool results.

    The chat template has no place for images in ``tool`` turns and several servers drop them, so each
    run of consecutive tool messages keeps only its text, followed by one user message that carries the
    images, each introduced by the name of the tool that returned it.
    """
    out: list[Message] = []
    pending: list[TextPart | ImagePart] = []
    for message in messages:
        if message.role == "tool" and message.images:
            out.append(
                message.model_copy(update={"content": [p for p in message.content if not isinstance(p, ImagePart)]})
            )
            for image in message.images:
                pending += [TextPart(f"Image returned by the {message.name or 'tool'} tool:"), image]
            continue
        if pending and message.role != "tool":
            out.append(Message("user", pending))
            pending = []
        out.append(message)
    if pending:
        out.append(Message("user", pending))
    return out
