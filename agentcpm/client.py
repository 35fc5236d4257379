"""The Client: one object that talks to MiniCPM-V 4.6 wherever it runs.

>>> client = Client(base_url="http://localhost:8000/v1")        # an OpenAI-compatible server  # doctest: +SKIP
>>> client = Client(model="openbmb/MiniCPM-V-4.6")              # in-process, with transformers  # doctest: +SKIP
>>> client.chat("What is in this picture?", images=["photo.jpg"]).content  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import Any, Literal

from . import _sync, engine
from ._redact import redact_url
from .backends.base import Backend, DownsampleMode, GenerationOptions
from .types import (
    Completion,
    ImagePart,
    Message,
    MessageInput,
    StreamEvent,
    to_messages,
    tool_schemas,
)

DEFAULT_MODEL = "openbmb/MiniCPM-V-4.6"
ToolMode = Literal["auto", "native", "prompt"]


def attach_images(messages: list[Message], images: Sequence[Any] | None) -> list[Message]:
    """Put ``images`` at the start of the last user turn (a new user turn if there is none)."""
    if not images:
        return messages
    parts = [img if isinstance(img, ImagePart) else ImagePart(img) for img in images]
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            target = messages[index]
            updated = target.model_copy(update={"content": [*parts, *target.content]})
            return [*messages[:index], updated, *messages[index + 1 :]]
    return [*messages, Message("user", parts)]


class Client:
    """Talks to MiniCPM-V 4.6 on a server (``base_url``) or in this process (no ``base_url``).

    ``base_url`` may be several replicas (a list, or comma-separated): requests then spread over them with
    failover and conversation affinity (:mod:`agentcpm.backends.replicas`).
    Configuration comes from the arguments, else the environment: ``AGENTCPM_BASE_URL``,
    ``AGENTCPM_MODEL``, ``AGENTCPM_API_KEY`` (then ``OPENAI_API_KEY``). Generation options given here
    (``max_tokens=512``, ``thinking=True``, ...) are defaults for every call; each call can override them.
    A Client is safe to share across threads and asyncio tasks; close it (or use ``with``) when done.
    """

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        backend: Backend | None = None,
        dialect: str | None = None,
        tool_mode: ToolMode = "auto",
        device: str | None = None,
        dtype: str | None = None,
        max_retries: int = 3,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        thinking: bool | None = None,
        downsample_mode: DownsampleMode | None = None,
        max_slice_nums: int | None = None,
        use_image_id: bool | None = None,
        timeout: float | None = None,
        cache: bool | int | str | Any = True,
    ) -> None:
        self.defaults = GenerationOptions(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=seed,
            thinking=thinking,
            downsample_mode=downsample_mode,
            max_slice_nums=max_slice_nums,
            use_image_id=use_image_id,
            timeout=timeout,
        )
        from .backends.replicas import split_urls

        # Several URLs (a list, or comma-separated): one backend spreading requests over them (replicas.py).
        self.base_urls = split_urls(base_url or os.environ.get("AGENTCPM_BASE_URL"))
        self.base_url = ",".join(self.base_urls) or None
        self._model = model or os.environ.get("AGENTCPM_MODEL") or None
        if backend is not None:
            self.backend: Backend = backend
        elif self.base_url:
            from .backends.remote import RemoteBackend
            from .backends.replicas import ReplicaSetBackend

            key = api_key or os.environ.get("AGENTCPM_API_KEY") or os.environ.get("OPENAI_API_KEY")
            remote: dict[str, Any] = dict(model=self._model, api_key=key, dialect=dialect, tool_mode=tool_mode)
            remote.update(max_retries=max_retries, timeout=timeout)
            if len(self.base_urls) == 1:
                self.backend = RemoteBackend(self.base_url, **remote)
            else:
                self.backend = ReplicaSetBackend.from_urls(self.base_urls, **remote)
        else:
            from .backends.local import LocalBackend

            self._model = self._model or DEFAULT_MODEL
            self.backend = LocalBackend(self._model, device=device, dtype=dtype, cache=cache)

    @property
    def model(self) -> str | None:
        """The model's name; for a server given none, the one its ``GET /models`` lists (after the first call)."""
        return self._model or getattr(self.backend, "model", None)

    def __repr__(self) -> str:
        where = redact_url(self.base_url) if self.base_url else "in-process"
        return f"Client({where!r}, model={self.model!r}, backend={type(self.backend).__name__})"

    # ------------------------------------------------------------------------------------------------
    def _prepare(
        self, messages: MessageInput, images: Sequence[Any] | None, tools: Sequence[Any] | None, options: Any
    ) -> tuple[list[Message], list[dict[str, Any]], GenerationOptions]:
        prepared = attach_images(to_messages(messages), images)
        return prepared, tool_schemas(tools), self.defaults.merged(**options)

    def chat(
        self,
        messages: MessageInput,
        *,
        images: Sequence[Any] | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> Completion:
        """Ask once and get the whole answer.

        ``messages``: a string, Messages or OpenAI-style dicts. ``images``: paths, URLs, bytes, PIL
        images or arrays attached to the last user turn. ``tools``: agentcpm tools or OpenAI schemas.
        ``options``: any :class:`~agentcpm.backends.base.GenerationOptions` field.
        """
        request = self._prepare(messages, images, tools, options)
        return _sync.run(lambda: self.acomplete(*request, blocking=True))

    def stream(
        self,
        messages: MessageInput,
        *,
        images: Sequence[Any] | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> Iterator[StreamEvent]:
        """Like :meth:`chat`, yielding parser events as text arrives, then one final ``Completed``."""
        request = self._prepare(messages, images, tools, options)
        return _sync.iterate(lambda: self.events(*request, blocking=True))

    async def achat(
        self,
        messages: MessageInput,
        *,
        images: Sequence[Any] | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> Completion:
        """The async form of :meth:`chat`."""
        return await self.acomplete(*self._prepare(messages, images, tools, options))

    def astream(
        self,
        messages: MessageInput,
        *,
        images: Sequence[Any] | None = None,
        tools: Sequence[Any] | None = None,
        **options: Any,
    ) -> AsyncIterator[StreamEvent]:
        """The async form of :meth:`stream`."""
        return self.events(*self._prepare(messages, images, tools, options))

    # the engine, for callers that already hold prepared messages (the agent loop) -----------------------
    def events(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]],
        options: GenerationOptions,
        *,
        blocking: bool = False,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The events of one request (see :func:`agentcpm.engine.stream`)."""
        return engine.stream(self.backend, messages, tools, options, blocking=blocking)

    async def acomplete(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]],
        options: GenerationOptions,
        *,
        blocking: bool = False,
    ) -> Completion:
        """The answer of one request (see :func:`agentcpm.engine.complete`)."""
        return await engine.complete(self.backend, messages, tools, options, blocking=blocking)

    # ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.close()

    async def aclose(self) -> None:
        await self.backend.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
