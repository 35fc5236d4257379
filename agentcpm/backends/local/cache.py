"""What the in-process model keeps between requests, so that each request computes only what it has not seen.

Two kinds of entry share one memory budget, least recently used first out:

- **model states**: the language model's cache (a transformers ``DynamicCache``: the key/values of the
  full-attention layers AND the convolution and recurrent states of the linear-attention layers) copied at up
  to three points of each prompt: the start of the turn of its first image (the text before any image: the
  system prompt, the tools, an agent's task; when an agent drops its oldest screenshots, the next request
  continues from here), the end of the last user turn (where the generation prompt starts: a follow-up
  question continues from there, since the template re-renders the previous answer) and the end of the prompt
  (an agent's next step continues from there when the template renders its history append-only). A new
  prompt continues from the longest kept state whose tokens AND images are a prefix of its own; only the rest
  is computed.
- **vision features**: each image's encoder output, by content (a hash of its pixel values, slice layout,
  downsample mode and dtype), so an image is encoded once, also when the prefix breaks.

Kept states are copies: a generation works on its own copy, and its new states are stored only after the
model ran without error, so a cancelled or failed generation leaves nothing half-written. Linear-attention
states cannot be cut back to an earlier position, which is why whole states are kept at these points instead
of one growing cache per conversation.

torch and transformers are imported on first use, never at ``import agentcpm``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any

from ...errors import ConfigurationError

#: The default budget for kept states and features, per backend (one Client).
DEFAULT_CACHE_BYTES = 2 * 1024**3

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30})


@dataclass(frozen=True)
class CacheConfig:
    """How much the in-process model may keep between requests. ``max_bytes``: the budget for kept model
    states and vision features together (0 switches the cache off).

    >>> CacheConfig(max_bytes=512 * 2**20)
    CacheConfig(max_bytes=536870912)
    """

    max_bytes: int = DEFAULT_CACHE_BYTES

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0


CacheSetting = bool | int | str | CacheConfig | None


def cache_config(value: CacheSetting) -> CacheConfig:
    """``Client(cache=...)`` read: True/None (the default budget), False or 0 (off), a size in bytes, a string
    such as ``"512MB"`` or ``"2GiB"``, or a :class:`CacheConfig`."""
    if isinstance(value, CacheConfig):
        return value
    if value is None or value is True:
        return CacheConfig()
    if value is False:
        return CacheConfig(max_bytes=0)
    if isinstance(value, int) and value >= 0:
        return CacheConfig(max_bytes=value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            return CacheConfig(max_bytes=int(float(match.group(1)) * _UNITS[match.group(2).lower()]))
    raise ConfigurationError(
        f"cache={value!r} is not a cache setting: use True (the default, {DEFAULT_CACHE_BYTES // 2**30} GiB), "
        'False (off), a size such as "512MB" or "2GiB", a number of bytes, or CacheConfig(max_bytes=...)'
    )


# ---------------------------------------------------------------------------- the prompt's layout


@dataclass(frozen=True)
class PromptImage:
    """One image of a prompt: its key (content), its token span, and its slices (rows of ``target_sizes``)."""

    key: bytes
    start: int  # first token of its block (``<image>``)
    end: int  # one past its last placeholder
    slices: range  # rows of target_sizes / entries of the encoder's output, in order
    columns: tuple[int, int]  # its columns of the packed pixel values


@dataclass(frozen=True)
class Layout:
    """What a cached run needs to know about a prompt: its tokens (as bytes, for prefix tests), its images,
    where the generation prompt starts (``split``: the end of the last user turn) and where the turn of its
    first image starts (``anchor``: everything before it is text that dropping or changing images leaves as
    it is)."""

    tokens: bytes
    length: int
    images: tuple[PromptImage, ...]
    split: int | None
    anchor: int | None = None

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(image.key for image in self.images)

    def keys_before(self, position: int) -> tuple[bytes, ...]:
        return tuple(image.key for image in self.images if image.end <= position)

    def inside_an_image(self, position: int) -> bool:
        return any(image.start < position < image.end for image in self.images)


def _token_id(tokenizer: Any, attribute: str, default: str) -> int:
    return int(tokenizer.convert_tokens_to_ids(getattr(tokenizer, attribute, None) or default))


def analyse(loaded: Any, inputs: Any, mode: str) -> Layout | None:
    """The prompt's layout, or None when this prompt cannot be cached (video, or images that do not split)."""
    if inputs.get("pixel_values_videos") is not None:
        return None
    tokenizer = loaded.tokenizer
    ids: list[int] = inputs["input_ids"][0].tolist()
    image_start = _token_id(tokenizer, "image_start_token", "<image>")
    slice_start = _token_id(tokenizer, "slice_start_token", "<slice>")
    pad = _token_id(tokenizer, "image_token", "<|image_pad|>")
    groups: list[list[int]] = []  # per image: [start, end, slice count]
    for position, token in enumerate(ids):
        if token == image_start:
            groups.append([position, position, 1])
        elif token == slice_start and groups:
            groups[-1][2] += 1
        elif token == pad and groups:
            groups[-1][1] = position + 1
    images: list[PromptImage] = []
    if groups:
        pixels, sizes = inputs.get("pixel_values"), inputs.get("target_sizes")
        if pixels is None or sizes is None or sizes.shape[0] != sum(g[2] for g in groups):
            return None
        patch = int(pixels.shape[2])
        widths = [int(h) * int(w) * patch for h, w in sizes.tolist()]
        if sum(widths) != int(pixels.shape[-1]):
            return None
        edges = [0, *itertools.accumulate(widths)]
        row = 0
        for start, end, count in groups:
            rows = range(row, row + count)
            columns = (edges[row], edges[row + count])
            key = _image_key(pixels[..., columns[0] : columns[1]], sizes[row : row + count], mode)
            images.append(PromptImage(key, start, end, rows, columns))
            row += count
    im_start = _token_id(tokenizer, "im_start", "<|im_start|>")
    starts = [i for i, token in enumerate(ids) if token == im_start]
    tokens = inputs["input_ids"][0].to("cpu").numpy().astype("<i8").tobytes()
    split = starts[-1] if starts and starts[-1] > 0 else None
    anchor = max((s for s in starts if images and s <= images[0].start), default=0) or None
    return Layout(tokens, len(ids), tuple(images), split, anchor)


def _image_key(pixels: Any, sizes: Any, mode: str) -> bytes:
    import torch

    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{mode}|{pixels.dtype}|{tuple(pixels.shape[:-1])}|".encode())
    digest.update(sizes.to("cpu").to(torch.int64).numpy().tobytes())
    digest.update(pixels.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.digest()


# ---------------------------------------------------------------------------- the store


def nbytes(value: Any) -> int:
    """The memory of the tensors in a kept value (a cache, its layers, lists and dicts of tensors)."""
    import torch

    if isinstance(value, torch.Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value)
    layers = getattr(value, "layers", None)
    if layers is not None:
        return sum(nbytes(vars(layer)) for layer in layers)
    return 0


@dataclass
class KeptState:
    """A copy of the model's cache after ``tokens`` (with these images) went through it. Never mutated."""

    tokens: bytes
    length: int
    images: tuple[bytes, ...]
    cache: Any
    nbytes: int
    request: int
    anchor: bool = False  # kept before the first image: a later state extending it does not make it stale

    @property
    def key(self) -> bytes:
        """Tokens and images: the same tokens with other images (placeholders look alike) are another state."""
        return state_key(self.tokens, self.images)


def state_key(tokens: bytes, images: tuple[bytes, ...]) -> bytes:
    return tokens + b"|" + b"".join(images)


@dataclass
class CacheUse:
    """What one request took from the cache and what it computed."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    tokens_computed: int = 0
    images: int = 0
    images_encoded: int = 0


@dataclass
class PrefixCache:
    """The kept states and vision features of one backend, within ``config.max_bytes`` (LRU).

    Counters for tests and benchmarks: :attr:`last` (the last request's :class:`CacheUse`), :attr:`total`."""

    config: CacheConfig = field(default_factory=CacheConfig)
    last: CacheUse = field(default_factory=CacheUse)
    total: CacheUse = field(default_factory=CacheUse)
    _entries: OrderedDict[tuple[str, bytes], Any] = field(default_factory=OrderedDict, repr=False)
    _used: int = 0
    _model: Any = field(default=None, repr=False)
    _requests: itertools.count = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def bytes_used(self) -> int:
        return self._used

    @property
    def states(self) -> int:
        return sum(1 for kind, _ in self._entries if kind == "state")

    @property
    def features(self) -> int:
        return sum(1 for kind, _ in self._entries if kind == "image")

    def clear(self) -> None:
        """Forget every kept state and feature."""
        with self._lock:
            self._entries.clear()
            self._used = 0

    def bind(self, model: Any) -> int:
        """Use this cache with ``model`` (entries of another model are dropped); returns a request number."""
        with self._lock:
            if self._model is not model:
                self._entries.clear()
                self._used, self._model = 0, model
            return next(self._requests)

    def lookup(self, layout: Layout, limit: int) -> KeptState | None:
        """The longest kept state of at most ``limit`` tokens whose tokens and images start ``layout``."""
        best: KeptState | None = None
        with self._lock:
            for (kind, _), entry in self._entries.items():
                if kind != "state" or entry.length > limit or (best is not None and entry.length <= best.length):
                    continue
                same_images = layout.keys[: len(entry.images)] == entry.images
                if same_images and layout.tokens.startswith(entry.tokens) and not layout.inside_an_image(entry.length):
                    best = entry
            if best is not None:
                self._entries.move_to_end(("state", best.key))
        return best

    def feature(self, key: bytes) -> list[Any] | None:
        with self._lock:
            entry = self._entries.get(("image", key))
            if entry is not None:
                self._entries.move_to_end(("image", key))
            return entry

    def put_feature(self, key: bytes, slices: list[Any]) -> None:
        self._put(("image", key), slices, nbytes(slices))

    def put_state(self, state: KeptState) -> None:
        with self._lock:  # older states this one extends are the first to go when memory runs short
            for key, entry in list(self._entries.items()):
                if key[0] != "state" or entry.anchor or entry.request == state.request:
                    continue
                if state.tokens.startswith(entry.tokens):
                    self._entries.move_to_end(key, last=False)
        self._put(("state", state.key), state, state.nbytes)

    def has_state(self, key: bytes) -> bool:
        with self._lock:
            return ("state", key) in self._entries

    def _put(self, key: tuple[str, bytes], value: Any, size: int) -> None:
        with self._lock:
            if size > self.config.max_bytes:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old.nbytes if isinstance(old, KeptState) else nbytes(old)
            self._entries[key] = value
            self._used += size
            while self._used > self.config.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._used -= evicted.nbytes if isinstance(evicted, KeptState) else nbytes(evicted)

    def record(self, use: CacheUse) -> None:
        with self._lock:
            self.last = use
            for counter in fields(CacheUse):
                setattr(self.total, counter.name, getattr(self.total, counter.name) + getattr(use, counter.name))


def keep(
    cache: Any, tokens: bytes, length: int, images: tuple[bytes, ...], request: int, anchor: bool = False
) -> KeptState:
    """A kept copy of ``cache`` as it is now (after ``length`` tokens)."""
    kept = copy.deepcopy(cache)
    return KeptState(tokens, length, images, kept, nbytes(kept), request, anchor)
