"""Local images sent as data URLs, encoded once per conversation rather than on every turn."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

from ...images import DownsampleMode
from ...types import ImagePart, Message


class ImageCache:
    """Data URLs of recently sent images, so a conversation's images are encoded once, not every turn.

    Keyed by the ImagePart object (an agent resends the same parts each step); an entry dies with its part.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._urls: OrderedDict[tuple[int, int | None, str | None], tuple[weakref.ref[ImagePart], str]] = OrderedDict()
        self._lock = threading.Lock()

    def url(self, part: ImagePart, max_slice_nums: int | None, downsample_mode: DownsampleMode | None) -> str:
        key = (id(part), max_slice_nums, downsample_mode)
        with self._lock:
            entry = self._urls.get(key)
            if entry is not None and entry[0]() is part:
                self._urls.move_to_end(key)
                return entry[1]
        url = part.data_url(max_slice_nums=max_slice_nums, downsample_mode=downsample_mode)
        with self._lock:
            self._urls[key] = (weakref.ref(part), url)
            while len(self._urls) > self.size:
                self._urls.popitem(last=False)
        return url

    def encode(
        self, messages: list[Message], max_slice_nums: int | None, downsample_mode: DownsampleMode | None
    ) -> list[Message]:
        """The messages with local images replaced by data URLs (from the cache when sent before)."""
        out = []
        for message in messages:
            if any(needs_encoding(p) for p in message.content):
                parts = [
                    ImagePart(self.url(p, max_slice_nums, downsample_mode))
                    if isinstance(p, ImagePart) and needs_encoding(p)
                    else p
                    for p in message.content
                ]
                message = message.model_copy(update={"content": parts})
            out.append(message)
        return out


def needs_encoding(part: Any) -> bool:
    """A local image (a file, bytes, a PIL image): it goes to the server as a data URL."""
    return isinstance(part, ImagePart) and not part.is_url and not str(part.source).startswith("data:")


def any_needs_encoding(messages: list[Message]) -> bool:
    return any(needs_encoding(p) for m in messages for p in m.content)
