"""MiniCPM-V 4.6 in this process, with transformers (``pip install "agentcpm[local]"``).

torch and transformers are imported on the first call, never at ``import agentcpm``. Each checkpoint is
loaded once per (model, device, dtype) and shared by every :class:`LocalBackend` (and so every Client)
in the process; it generates one answer at a time.

- :mod:`.loading`: the model stack's imports, checkpoints (folders and the hub), processor, device, dtype;
- :mod:`.generation`: one ``generate`` call, its token hand-off, detokenizing and stop strings;
- :mod:`.backend`: :class:`LocalBackend`, a request in, raw chunks out.

>>> from agentcpm import Client
>>> client = Client(model="openbmb/MiniCPM-V-4.6")  # doctest: +SKIP
>>> client.chat("What is in this picture?", images=["photo.jpg"]).content  # doctest: +SKIP
"""

from __future__ import annotations

from .backend import LocalBackend
from .loading import (
    CHECKPOINT_FILES,
    DEFAULT_MAX_TOKENS,
    LOAD_PACKAGES,
    LoadedModel,
    check_model_path,
    load_model,
    load_processor,
    missing_packages,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
    unload_models,
)
from .loading import _import_torch as _import_torch  # for `agentcpm doctor`

#: Show transformers' "Loading weights" progress bar while a checkpoint loads (the ``agentcpm`` command turns
#: it off unless --verbose). The hub's download bars are not affected. Read by :func:`load_model` when it loads.
show_load_progress = True

__all__ = [
    "CHECKPOINT_FILES",
    "DEFAULT_MAX_TOKENS",
    "LOAD_PACKAGES",
    "LoadedModel",
    "LocalBackend",
    "check_model_path",
    "load_model",
    "load_processor",
    "missing_packages",
    "resolve_checkpoint",
    "resolve_device",
    "resolve_dtype",
    "show_load_progress",
    "unload_models",
]
