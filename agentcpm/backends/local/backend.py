"""The in-process backend: a :class:`~agentcpm.backends.base.Request` in, the model's raw chunks out.

How a request runs: :meth:`LocalBackend._prepare` builds the prompt's inputs (:meth:`LocalBackend._inputs`:
chat template and processor) and the ``generate`` arguments; then the model's lock is taken and
:meth:`~agentcpm.backends.local.generation.Run.generate` calls ``model.generate``, on one of three paths:

- a sync call that wants only the answer (``blocking``, not ``stream``): on the calling thread;
- a sync stream (``blocking``): on a background thread, tokens handed over in batches with thread waits;
- async calls: on a worker thread; the event loop is never blocked and cancelling frees the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequestError
from ...types import ImagePart, Message, TextPart, VideoPart
from ..base import GenerationOptions, RawChunk, Request, StartChunk, TextChunk
from .cache import CacheSetting, Layout, PrefixCache, analyse, cache_config
from .cached import CachedOutput, CachedRun
from .generation import Prompt, Run, acquire, handed_over, on_this_thread
from .loading import DEFAULT_MAX_TOKENS, LoadedModel, _has_torchvision, _import_torch, _video_error, load_model


@dataclass
class _Prepared:
    loaded: LoadedModel
    inputs: Any
    kwargs: dict[str, Any]
    prompt: Prompt
    thinking: bool  # the prompt ends inside <think>
    layout: Layout | None = None  # set when the prefix cache is on and the prompt can use it


def _to_hf_message(message: Message) -> dict[str, Any]:
    """A Message in the form the chat template and processor expect (images decoded, arguments as dicts)."""
    content: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append({"type": "image", "image": part.open()})
        elif isinstance(part, VideoPart):
            content.append({"type": "video", "video": part.source})
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.reasoning is not None:
        out["reasoning_content"] = message.reasoning
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


class LocalBackend:
    """Runs MiniCPM-V 4.6 with transformers in this process.

    ``model``: a hub id (``openbmb/MiniCPM-V-4.6``, ``-Thinking``, ``-GPTQ``, ``-AWQ``) or a checkpoint folder.
    ``device``: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``. ``dtype``:
    ``auto`` (bfloat16 on CUDA, float16 on MPS, float32 on CPU), ``bfloat16``, ``float16``, ``float32``.
    Nothing is loaded until the first call (or :meth:`load`). The model is shared by every backend asking for
    the same model, device and dtype, and generates one answer at a time. ``cache``: what is kept between
    requests so that each computes only its new tokens and images (:mod:`~agentcpm.backends.local.cache`):
    True (the default budget, 2 GiB), False, a size (``"512MB"``) or a
    :class:`~agentcpm.backends.local.cache.CacheConfig`; :attr:`cache` is then the
    :class:`~agentcpm.backends.local.cache.PrefixCache` (None when off).

    >>> backend = LocalBackend("openbmb/MiniCPM-V-4.6", device="cpu")  # doctest: +SKIP
    >>> Client(backend=backend).chat("Hi").content  # doctest: +SKIP
    """

    def __init__(
        self, model: str, *, device: str | None = None, dtype: str | None = None, cache: CacheSetting = True
    ) -> None:
        self.model = str(model)
        self.device = device
        self.dtype = dtype
        config = cache_config(cache)
        self.cache: PrefixCache | None = PrefixCache(config) if config.enabled else None
        self._runs: set[Run] = set()

    def __repr__(self) -> str:
        return f"LocalBackend({self.model!r}, device={self.device!r}, dtype={self.dtype!r})"

    def load(self) -> LoadedModel:
        """Load the model now (it is shared with every backend asking for the same model, device and dtype)."""
        return load_model(self.model, device=self.device, dtype=self.dtype)

    # Backend protocol ------------------------------------------------------------------------------------
    async def generate(self, request: Request) -> AsyncGenerator[RawChunk, None]:
        """The answer to ``request`` as raw chunks: :class:`StartChunk`, text deltas, usage, finish reason.
        Closing this early (or :meth:`close`) stops generation within a token and frees the model."""
        if request.blocking:
            prepared = self._prepare(request)
        else:
            prepared = await asyncio.to_thread(self._prepare, request)
        run = self._new_run(prepared)
        output = CachedOutput(run, prepared.prompt)
        lock = prepared.loaded.lock
        try:
            yield StartChunk(prepared.thinking)
            if request.blocking:
                lock.acquire()
            else:
                await acquire(lock)
            if not request.stream:  # only the answer matters: no hand-off per token
                if request.blocking:
                    text = on_this_thread(run, output)
                else:
                    text = await asyncio.shield(asyncio.to_thread(on_this_thread, run, output))
                if text:
                    yield TextChunk(text)
            else:
                async with aclosing(handed_over(run, output, blocking=request.blocking)) as texts:
                    async for text in texts:
                        yield TextChunk(text)
            for chunk in output.finish():
                yield chunk
        finally:
            run.cancel()  # a generation still running stops at its next token and frees the model
            self._runs.discard(run)

    def close(self) -> None:
        """Stop this backend's running generations. The model stays loaded for other clients
        (:func:`~agentcpm.backends.local.unload_models` forgets it)."""
        for run in list(self._runs):
            run.cancel()

    async def aclose(self) -> None:
        self.close()

    # preparing a request ---------------------------------------------------------------------------------
    def _prepare(self, request: Request) -> _Prepared:
        started = time.perf_counter()
        loaded = self.load()
        options = request.options
        mode = options.downsample_mode or loaded.processor.image_processor.downsample_mode
        inputs = self._inputs(loaded, request, mode)
        input_ids = inputs["input_ids"]
        tail = loaded.tokenizer.decode(input_ids[0, -4:].tolist())
        kwargs, stop_ids = self._generation_kwargs(loaded, options, mode)
        prompt = Prompt(
            tokens=int(input_ids.shape[1]),
            images=sum(len(m.images) for m in request.messages),
            started=started,
            stop_ids=frozenset(stop_ids),
            stop=options.stop,
        )
        layout = analyse(loaded, inputs, mode) if self.cache is not None else None
        return _Prepared(loaded, inputs, kwargs, prompt, tail.rstrip("\n").endswith("<think>"), layout)

    @staticmethod
    def _inputs(loaded: LoadedModel, request: Request, mode: str) -> Any:
        """The prompt's model inputs (token ids, pixel values) on the model's device, from the chat template
        and the processor."""
        options = request.options
        video = any(m.videos for m in request.messages)
        if video and not _has_torchvision():
            raise _video_error()
        hf_messages = [_to_hf_message(m) for m in request.messages]
        # The model card's settings for video: no image ids, one slice per frame.
        knobs = {
            "downsample_mode": mode,
            "max_slice_nums": options.max_slice_nums or (1 if video else None),
            "use_image_id": options.use_image_id if options.use_image_id is not None else (False if video else None),
            "max_num_frames": options.max_num_frames if video else None,
            "stack_frames": options.stack_frames if video else None,
        }
        template_kwargs: dict[str, Any] = {}
        if options.thinking is not None:
            template_kwargs["enable_thinking"] = options.thinking
        from jinja2 import TemplateError

        try:
            inputs = loaded.processor.apply_chat_template(
                hf_messages,
                tools=request.tools or None,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={key: value for key, value in knobs.items() if value is not None},
                **template_kwargs,
            )
        except TemplateError as exc:
            raise BadRequestError(f"the model's chat template refused the conversation: {exc}") from exc
        torch = _import_torch()
        return inputs.to(device=loaded.device, dtype=getattr(torch, loaded.dtype))

    @staticmethod
    def _generation_kwargs(
        loaded: LoadedModel, options: GenerationOptions, mode: str
    ) -> tuple[dict[str, Any], set[int]]:
        """Only what the call sets; everything else stays as the checkpoint's generation config says."""
        config = loaded.model.generation_config
        eos = config.eos_token_id
        stop_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        im_end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != loaded.tokenizer.unk_token_id:
            stop_ids.add(im_end)
        max_new_tokens = options.max_tokens or config.max_new_tokens or DEFAULT_MAX_TOKENS
        kwargs: dict[str, Any] = {
            "downsample_mode": mode,
            "max_new_tokens": max_new_tokens,
            "eos_token_id": sorted(stop_ids),
        }
        if options.temperature is not None:
            if options.temperature <= 0:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                kwargs.update(do_sample=True, temperature=options.temperature)
        if options.top_p is not None and kwargs.get("do_sample", True):
            kwargs["top_p"] = options.top_p
        if options.timeout is not None:
            kwargs["max_time"] = options.timeout
        if options.seed is not None:
            kwargs["seed"] = options.seed
        return kwargs, stop_ids

    def _new_run(self, prepared: _Prepared) -> Run:
        """The run that calls ``model.generate`` with the prepared inputs; from here on :meth:`close` stops it."""
        if self.cache is not None and prepared.layout is not None:
            run: Run = CachedRun(prepared.loaded, prepared.inputs, dict(prepared.kwargs), self.cache, prepared.layout)
        else:
            run = Run(prepared.loaded, prepared.inputs, dict(prepared.kwargs))
        self._runs.add(run)
        return run
