"""A generation that starts from a kept model state (:mod:`.cache`): under the model's lock it finds the longest
kept prefix, encodes only the images it has no features for, computes the prompt up to the start of its first
image's turn and the end of the last user turn (keeping a copy at each), hands the rest to ``generate``
(keeping a copy at the end of the prompt) and stores its new states only once the model ran without error."""

from __future__ import annotations

import copy
from typing import Any

from ..base import UsageChunk
from .cache import CacheUse, Layout, PrefixCache, PromptImage, keep, state_key
from .generation import SHORT_REST, Output, Run
from .loading import LoadedModel


class CachedRun(Run):
    """A :class:`~.generation.Run` that computes only the part of its prompt no kept state covers."""

    def __init__(
        self, loaded: LoadedModel, inputs: Any, kwargs: dict[str, Any], store: PrefixCache, layout: Layout
    ) -> None:
        super().__init__(loaded, inputs, kwargs)
        self.store, self.layout = store, layout
        self.use = CacheUse(prompt_tokens=layout.length, images=len(layout.images))
        self._request = 0
        self._cache: Any = None
        self._pending: list[Any] = []
        self._prompt_kept = False

    # the hooks of Run.generate: start from the longest kept state; store new states only on success
    def _succeeded(self) -> None:
        for state in self._pending:
            self.store.put_state(state)
        self.store.record(self.use)

    def _finished(self) -> None:
        self._cache, self._pending = None, []

    def put(self, value: Any) -> None:
        if self._prompt_seen and not self._prompt_kept:  # the first new token: the cache holds the whole prompt
            self._prompt_kept = True
            self._keep(self.layout.length)
        super().put(value)

    # ------------------------------------------------------------------------------------------------------
    def _arguments(self) -> dict[str, Any]:
        """Take the longest kept state, encode the missing images, compute up to each point worth keeping (the
        start of the first image's turn, the end of the last user turn) and keep a copy there; the ``generate``
        arguments for the rest."""
        layout = self.layout
        self._request = self.store.bind(self.loaded.model)
        kept = self.store.lookup(layout, limit=layout.length - 1)  # generate needs at least one new token
        start = kept.length if kept is not None else 0
        cache = self._cache = copy.deepcopy(kept.cache) if kept is not None else self._new_cache()
        features = self._features([image for image in layout.images if image.end > start])
        input_ids = self.inputs["input_ids"]
        # the points worth keeping; then all but the last token, unless what is left is short (see SHORT_REST)
        # and holds no image (generate gets no vision features)
        points = sorted({p for p in (layout.anchor, layout.split) if p and p > start})
        last = max([start, *points])
        if layout.length - last > SHORT_REST or any(image.end > last for image in layout.images):
            points.append(layout.length - 1)
        for point in points:
            self._prefill(cache, input_ids[:, start:point], mm_encoder_outputs=self._images_in(start, point, features))
            if point in (layout.anchor, layout.split):
                self._keep(point, anchor=point == layout.anchor)
            start = point
        self.use.cached_tokens = kept.length if kept is not None else 0
        self.use.tokens_computed = layout.length - self.use.cached_tokens
        return self._continue(input_ids, cache)

    def _features(self, images: list[PromptImage]) -> dict[bytes, list[Any]]:
        """Each image's encoder output: kept ones as they are, the others encoded together now and kept."""
        found: dict[bytes, list[Any]] = {}
        missing: dict[bytes, PromptImage] = {}
        for image in images:
            kept = self.store.feature(image.key)
            if kept is not None:
                found[image.key] = kept
            else:
                missing.setdefault(image.key, image)
        if missing:
            import torch

            pixels, sizes = self.inputs["pixel_values"], self.inputs["target_sizes"]
            todo = list(missing.values())
            packed = torch.cat([pixels[..., i.columns[0] : i.columns[1]] for i in todo], dim=-1)
            rows = torch.cat([sizes[i.slices.start : i.slices.stop] for i in todo], dim=0)
            output = self.loaded.model.model.get_image_features(
                packed, rows, downsample_mode=self.kwargs.get("downsample_mode")
            )
            slices = list(output.pooler_output)
            for image in todo:
                found[image.key] = slices[: len(image.slices)]
                del slices[: len(image.slices)]
                self.store.put_feature(image.key, found[image.key])
            self.use.images_encoded = len(todo)
        return found

    def _images_in(self, start: int, end: int, features: dict[bytes, list[Any]]) -> Any:
        """The vision features of the images between ``start`` and ``end``, as the model takes them, or None."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        slices = [s for image in self.layout.images if start <= image.start < end for s in features[image.key]]
        # the model takes a list of per-slice tensors here (it concatenates them)
        return {"image": BaseModelOutputWithPooling(pooler_output=slices)} if slices else None  # type: ignore[arg-type]

    def _keep(self, length: int, anchor: bool = False) -> None:
        """Keep a copy of the cache as it is now (after ``length`` prompt tokens), stored once the run succeeds."""
        tokens = self.layout.tokens[: length * 8]
        images = self.layout.keys_before(length)
        if self._cache is None or self.store.has_state(state_key(tokens, images)):
            return
        self._pending.append(keep(self._cache, tokens, length, images, self._request, anchor))


class CachedOutput(Output):
    """The usage of a cached run says how many prompt tokens came from the cache and how many images were
    encoded."""

    def usage(self) -> UsageChunk:
        usage = super().usage()
        run = self.run
        if isinstance(run, CachedRun):
            usage.cached_tokens = run.use.cached_tokens
            usage.images_encoded = run.use.images_encoded
        return usage
