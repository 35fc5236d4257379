"""One generation of the in-process model: a stoppable ``generate`` call (:class:`Run`), the hand-off of its
token ids to another thread or the event loop (:class:`Batches`), and token ids turned into raw chunks
(:class:`Output`: detokenizer, stop strings, usage, finish reason)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ...errors import BackendError
from ..base import FinishChunk, RawChunk, TextChunk, UsageChunk
from .loading import LoadedModel

#: Up to this many prompt tokens go to ``generate`` as they are: their logits (248k each) cost less than one
#: more pass over the weights would.
SHORT_REST = 64


class Run:
    """One ``generate`` call, stoppable at any token: :meth:`cancel` (from any thread) ends it after the
    current token. :meth:`generate` runs on the calling thread and hands token ids to ``on_tokens`` as they come.
    """

    def __init__(self, loaded: LoadedModel, inputs: Any, kwargs: dict[str, Any]) -> None:
        self.loaded, self.inputs, self.kwargs = loaded, inputs, kwargs
        self.cancelled = threading.Event()
        self.on_tokens: Callable[[list[int]], Any] = lambda ids: None
        self.error: Exception | None = None
        self.generated = 0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self._prompt_seen = False

    # the streamer interface of transformers.generate
    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        ids = [int(i) for i in value.reshape(-1).tolist()]
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        self.generated += len(ids)
        self.on_tokens(ids)

    def end(self) -> None:
        pass

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """The stopping criterion of transformers.generate: True once :meth:`cancel` was called."""
        import torch

        return torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    def generate(self, on_tokens: Callable[[list[int]], Any]) -> None:
        """Generate on this thread. The caller holds the model's lock; it is released here when generation
        ends. A failure is kept in :attr:`error`; Ctrl-C (KeyboardInterrupt) goes through."""
        self.on_tokens = on_tokens
        try:
            import torch
            from transformers import StoppingCriteriaList, set_seed

            seed = self.kwargs.pop("seed", None)
            if seed is not None:
                set_seed(seed)
            with torch.inference_mode():
                self.loaded.model.generate(
                    **self._arguments(), **self.kwargs, streamer=self, stopping_criteria=StoppingCriteriaList([self])
                )
            self._succeeded()
        except Exception as exc:  # raised by Output.finish as a BackendError
            self.error = exc
        finally:
            self._finished()
            self.loaded.lock.release()

    # the hooks of generate (a run that starts from a kept state, .cached, changes them) ------------------
    def _arguments(self) -> dict[str, Any]:
        """The model inputs ``generate`` gets (inside inference mode, under the model's lock): all of the
        prompt but its last token already through the language model (:meth:`_prefill`), so that ``generate``
        computes the vocabulary's logits for that one token (a prompt of at most :data:`SHORT_REST` tokens
        goes to ``generate`` whole). The model's forward has no ``logits_to_keep``: on
        the whole prompt it computes 248k logits per position, about 1 GB per 1,000 prompt tokens in float32
        and on CPU as long as the language model's own work."""
        inputs = dict(self.inputs)
        input_ids = inputs.pop("input_ids")
        inputs.pop("attention_mask", None)
        if input_ids.shape[1] <= SHORT_REST:
            return dict(self.inputs)
        cache = self._new_cache()
        self._prefill(cache, input_ids[:, :-1], **inputs)
        return self._continue(input_ids, cache)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.loaded.model.config)

    def _prefill(self, cache: Any, input_ids: Any, **inputs: Any) -> None:
        """Run ``input_ids`` (with the images or videos in ``inputs``) through the language model into
        ``cache``; no logits."""
        self.loaded.model.model(
            input_ids=input_ids,
            use_cache=True,
            downsample_mode=self.kwargs.get("downsample_mode"),
            **{self.loaded.cache_argument: cache},
            **inputs,
        )

    def _continue(self, input_ids: Any, cache: Any) -> dict[str, Any]:
        """The ``generate`` arguments for the rest of the prompt after what ``cache`` holds."""
        import torch

        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            self.loaded.cache_argument: cache,
        }

    def _succeeded(self) -> None:
        """After ``generate`` returned without error."""

    def _finished(self) -> None:
        """After ``generate``, whatever happened."""

    def cancel(self) -> None:
        self.cancelled.set()


class Batches:
    """Token ids handed from a generation thread to a reader in batches. Waking the reader costs a thread
    switch and the GIL (0.5 to 1 ms per token on a small CPU, more than a tiny model's token), so the reader
    is woken for the first token, then only once ``BATCH_SECONDS`` have passed since the last wake-up, and at
    the end. A model slower than that per token hands over every token at once; a faster one holds a token
    back by at most ``BATCH_SECONDS`` and one token's time."""

    BATCH_SECONDS = 0.05

    def __init__(self, wake: Callable[[], Any]) -> None:
        self.wake = wake
        self.lock = threading.Lock()
        self.ids: list[int] = []
        self.done = False
        self.woken_at: float | None = None

    def put(self, ids: list[int]) -> None:
        with self.lock:
            self.ids += ids
        now = time.perf_counter()
        if self.woken_at is None or now - self.woken_at >= self.BATCH_SECONDS:
            self.woken_at = now
            self.wake()

    def close(self) -> None:
        with self.lock:
            self.done = True
        self.wake()

    def take(self) -> tuple[list[int], bool]:
        """The ids handed over since the last call, and whether generation has ended."""
        with self.lock:
            ids, self.ids = self.ids, []
            return ids, self.done


def generate_in_thread(run: Run, batches: Batches) -> threading.Thread:
    """Start ``run`` on a background thread that hands its tokens to ``batches``; the caller holds the model's
    lock, which is released when generation ends (or here, if the thread cannot start)."""

    def target() -> None:
        try:
            run.generate(batches.put)
        finally:
            batches.close()

    thread = threading.Thread(target=target, name="agentcpm-generate", daemon=True)
    try:
        thread.start()
    except BaseException:
        run.loaded.lock.release()
        raise
    return thread


async def acquire(lock: threading.Lock) -> None:
    """Acquire a threading lock without blocking the event loop, and without leaking it on cancellation."""
    if lock.acquire(blocking=False):
        return
    waiter = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        waiter.add_done_callback(lambda done: lock.release() if not done.cancelled() and done.result() else None)
        raise


def on_this_thread(run: Run, output: Output) -> str:
    """Generate on this thread (the caller holds the model's lock) and return the text: no hand-off between
    threads, and a Ctrl-C in the main thread lands inside ``generate`` itself."""
    pieces: list[str] = []
    run.generate(lambda ids: pieces.append(output.feed(ids)))
    return "".join(pieces)


async def handed_over(run: Run, output: Output, *, blocking: bool) -> AsyncGenerator[str, None]:
    """Generate on a background thread (the caller holds the model's lock) and yield the text as it comes.

    ``blocking``: the caller drives a private event loop, so this waits on a :class:`threading.Event` (with
    a 0.1 s timeout that keeps Ctrl-C responsive) instead of a wake-up through the loop; when it is over (or
    closed early) the generation thread has ended. Else the loop never blocks, and closing this only cancels
    the run: the thread stops at its next token and frees the model."""
    ready: threading.Event | asyncio.Event
    if blocking:
        ready = threading.Event()
        wake: Callable[[], Any] = ready.set
    else:
        loop, ready = asyncio.get_running_loop(), asyncio.Event()
        wake = partial(loop.call_soon_threadsafe, ready.set)
    batches = Batches(wake)
    thread = generate_in_thread(run, batches)
    done = False
    try:
        while not done:
            if isinstance(ready, threading.Event):
                ready.wait(0.1)
            else:
                await ready.wait()
            ready.clear()
            ids, done = batches.take()
            text = output.feed(ids)
            if text:
                yield text
    finally:
        if not done:  # closed early (else a cancel here would turn "length" into "cancelled")
            run.cancel()
        if blocking:
            thread.join()


class Detokenizer:
    """Token ids in, text deltas out. Decodes only a short window of recent tokens each time, and holds back
    the bytes of a character that is not complete yet."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # the window starts here: its first tokens were already emitted ...
        self.read = 0  # ... up to here

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, ids: list[int]) -> str:
        self.ids += ids
        done = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done) :]

    def flush(self) -> str:
        done = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(done) :]


class StopStrings:
    """Cuts the text at the first stop string, holding back a tail that might be the start of one."""

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in stops or [] if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.hit = False

    def push(self, text: str) -> str:
        if not self.stops:
            return text
        if self.hit:
            return ""
        self.buffer += text
        cuts = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.hit = True
            out, self.buffer = self.buffer[: min(cuts)], ""
            return out
        split = max(0, len(self.buffer) - self.keep)
        out, self.buffer = self.buffer[:split], self.buffer[split:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.hit else self.buffer), ""
        return out


@dataclass(frozen=True)
class Prompt:
    """What the output of one run is measured against: the prompt's size, when the request started, and the
    ids and strings that end the answer."""

    tokens: int
    images: int
    started: float
    stop_ids: frozenset[int]
    stop: list[str] | None


class Output:
    """The token ids of one run turned into raw chunks: text deltas (detokenized, stop strings applied; a
    stop string cancels the run), then usage and the finish reason."""

    def __init__(self, run: Run, prompt: Prompt) -> None:
        self.run, self.prompt = run, prompt
        self.detokenizer = Detokenizer(run.loaded.tokenizer)
        self.stops = StopStrings(prompt.stop)
        self.last_id: int | None = None

    def feed(self, ids: list[int]) -> str:
        """The new text of these ids ("" while a character or a possible stop string is incomplete)."""
        if not ids:
            return ""
        self.last_id = ids[-1]
        text = self.stops.push(self.detokenizer.push(ids))
        if self.stops.hit:
            self.run.cancel()
        return text

    def finish(self) -> list[RawChunk]:
        """The last text, usage and finish reason; raises :class:`BackendError` when generation failed."""
        run = self.run
        if run.error is not None:
            raise BackendError(f"generation failed: {type(run.error).__name__}: {run.error}") from run.error
        text = self.stops.push(self.detokenizer.flush()) + self.stops.flush()
        chunks: list[RawChunk] = [TextChunk(text)] if text else []
        if self.stops.hit or self.last_id in self.prompt.stop_ids:
            reason = "stop"
        elif run.cancelled.is_set():
            reason = "cancelled"  # close() was called while this answer was being written
        else:
            reason = "length"  # max_tokens or the timeout cut it off
        return [*chunks, self.usage(), FinishChunk(reason)]

    def usage(self) -> UsageChunk:
        run = self.run
        first, last = run.first_token_at, run.last_token_at
        decode_seconds = (last - first) if first is not None and last is not None else 0.0
        return UsageChunk(
            prompt_tokens=self.prompt.tokens,
            completion_tokens=run.generated,
            images_encoded=self.prompt.images,
            time_to_first_token=(first - self.prompt.started) if first is not None else None,
            tokens_per_second=(run.generated - 1) / decode_seconds if decode_seconds > 0 else None,
        )
