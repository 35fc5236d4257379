"""Loading MiniCPM-V 4.6 for the in-process backend: the model stack's imports, checkpoint folders and the hub,
the processor (with or without torchvision), device and dtype, and the process-wide model cache.

torch and transformers are imported on the first call, never at ``import agentcpm``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ...errors import ConfigurationError, MissingDependencyError, ModelNotFoundError

logger = logging.getLogger("agentcpm.local")

#: Used when neither the call nor the checkpoint's generation config sets a token limit.
DEFAULT_MAX_TOKENS = 4096
#: The checkpoint files worth downloading (not GGUF, ONNX or other formats that share a repository).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py"]

_DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}

#: What loading a checkpoint needs (transformers asks accelerate for ``device_map``), in install order.
LOAD_PACKAGES = ("torch", "transformers", "accelerate")


def missing_packages() -> list[str]:
    """The packages in :data:`LOAD_PACKAGES` that cannot be imported here (empty when loading can work)."""
    import importlib.util

    return [name for name in LOAD_PACKAGES if importlib.util.find_spec(name) is None]


def _import_torch() -> Any:
    missing = missing_packages()
    try:
        if missing:
            raise ImportError(", ".join(missing))
        import accelerate  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        names = missing or [str(exc.name or exc)]
        package = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        raise MissingDependencyError(package, "local", "running the model in-process") from exc
    return torch


class _NoVideoProcessor:
    """Stands in for the video processor when torchvision is missing: images work, videos raise."""

    def __init__(self, image_processor: Any) -> None:
        self.slice_mode = image_processor.slice_mode
        self.downsample_mode = image_processor.downsample_mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _video_error()


def _video_error() -> MissingDependencyError:
    return MissingDependencyError(
        "torchvision",
        purpose="video input to the in-process model (there is no CPU build for some platforms: serve the "
        "model with vLLM or SGLang and pass base_url= instead)",
    )


def _has_torchvision() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def load_processor(model: str | Path, **kwargs: Any) -> Any:
    """The model's processor (tokenizer, image processor, chat template), with or without torchvision.

    ``AutoProcessor`` needs torchvision for MiniCPM-V 4.6's video processor; without it the processor is
    assembled from the tokenizer and the PIL image processor, and video input raises
    :class:`~agentcpm.errors.MissingDependencyError`. ``kwargs`` go to ``from_pretrained``.

    >>> processor = load_processor("openbmb/MiniCPM-V-4.6")  # doctest: +SKIP
    >>> processor.tokenizer.image_token  # doctest: +SKIP
    '<|image_pad|>'
    """
    _import_torch()
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.models.minicpmv4_6 import MiniCPMV4_6ImageProcessorPil, MiniCPMV4_6Processor

    if _has_torchvision():
        return AutoProcessor.from_pretrained(model, **kwargs)

    class ImageOnlyProcessor(MiniCPMV4_6Processor):
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if isinstance(argument, _NoVideoProcessor):
                return _NoVideoProcessor
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    image_processor = MiniCPMV4_6ImageProcessorPil.from_pretrained(model, **kwargs)
    return ImageOnlyProcessor(
        image_processor=image_processor,
        video_processor=_NoVideoProcessor(image_processor),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def resolve_device(device: str | None = None) -> str:
    """``device`` checked, or the best available: cuda, then mps, then cpu."""
    torch = _import_torch()
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    assert device is not None
    kind = device.split(":")[0]
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "xpu": hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if kind not in available:
        raise ConfigurationError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N, mps or xpu")
    if not available[kind]:
        raise ConfigurationError(f"device {device!r} is not available here: use device='auto' or 'cpu'")
    return device


def resolve_dtype(dtype: str | None, device: str) -> str:
    """``dtype`` checked, or the default for the device: bfloat16 on CUDA, float16 on MPS, float32 on CPU."""
    if dtype in (None, "", "auto"):
        torch = _import_torch()
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float16" if device.startswith("mps") else "float32"
    assert dtype is not None
    if dtype.lower() not in _DTYPES:
        raise ConfigurationError(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    return _DTYPES[dtype.lower()]


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model


def _not_found(model: str, reason: str) -> ModelNotFoundError:
    if _looks_like_path(model) or Path(model).expanduser().exists():
        return ModelNotFoundError(
            f"cannot load the model {model!r}: {reason}. Pass a MiniCPM-V 4.6 checkpoint folder (model=PATH: the "
            "folder with config.json and the .safetensors files) or a hub id such as openbmb/MiniCPM-V-4.6, or use "
            "a server running the model (base_url=URL)."
        )
    return ModelNotFoundError(
        f"cannot load the model {model!r}: {reason}. Either pass a checkpoint folder (model=PATH), or use a server "
        f"running the model (base_url=URL), or download it on a machine with internet (`hf download {model} "
        "--local-dir DIR`), copy DIR here and pass it as the model path."
    )


def check_model_path(model: str) -> None:
    """Raise :class:`ModelNotFoundError` at once when ``model`` names a folder (it looks like a path, or exists)
    that is not a checkpoint; a hub id passes. Cheap: imports nothing, touches only the file system."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _not_found(model, f"the folder {path} has no config.json, so it is not a checkpoint")
    elif _looks_like_path(model) or path.exists():
        raise _not_found(model, f"there is no folder at {path}")


def resolve_checkpoint(model: str) -> Path:
    """A local checkpoint folder for ``model``: the folder itself, or the hub cache, downloading what is
    missing (with the hub's progress bars). Raises :class:`ModelNotFoundError` with what to do instead."""
    check_model_path(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        local = snapshot_download(model, allow_patterns=CHECKPOINT_FILES, local_files_only=offline)
    except GatedRepoError as exc:
        raise _not_found(
            model, "the repository is gated: accept its terms on the hub and log in (`hf auth login`)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise _not_found(model, "no such repository on the Hugging Face hub") from exc
    except (OSError, ValueError) as exc:
        where = "offline (HF_HUB_OFFLINE=1) and" if offline else "the hub is unreachable and it is"
        raise _not_found(model, f"{where} not in the local Hugging Face cache ({type(exc).__name__})") from exc
    return Path(local)


def _quantization(checkpoint: Path) -> str | None:
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    method = (config.get("quantization_config") or {}).get("quant_method")
    return str(method) if method else None


@dataclass
class LoadedModel:
    """A checkpoint in memory: model, processor, where it runs, and the lock that serialises generation."""

    name: str
    model: Any
    processor: Any
    device: str
    dtype: str
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @cached_property
    def cache_argument(self) -> str:
        """The name of the model's cache argument: ``cache`` since transformers 5.24, ``past_key_values``
        before (read once: every request passes it)."""
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"


_MODELS: dict[tuple[str, str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def load_model(model: str, *, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """The model loaded on ``device`` in ``dtype`` (auto when None), loading it on first use; later calls with
    the same arguments return the same object.

    >>> load_model("openbmb/MiniCPM-V-4.6").device  # doctest: +SKIP
    'cuda'
    """
    check_model_path(model)  # a mistyped folder fails before the seconds torch takes to import
    torch = _import_torch()
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    path = Path(model).expanduser()
    name = str(path.resolve()) if path.is_dir() else model
    key = (name, device, dtype)
    with _MODELS_LOCK:
        if key not in _MODELS:
            started = time.perf_counter()
            checkpoint = resolve_checkpoint(model)
            logger.info("loading %s on %s (%s)", model, device, dtype)
            network = _load_network(model, checkpoint, device, getattr(torch, dtype))
            processor = load_processor(checkpoint)
            _MODELS[key] = LoadedModel(name, network, processor, device, dtype, time.perf_counter() - started)
        return _MODELS[key]


def _load_network(model: str, checkpoint: Path, device: str, dtype: Any) -> Any:
    """The network from ``checkpoint``, in eval mode; a quantized checkpoint's missing package named."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as transformers_logging

    from . import show_load_progress  # the package's setting (the ``agentcpm`` command turns it off)

    bar_was_on = transformers_logging.is_progress_bar_enabled()
    if not show_load_progress:
        transformers_logging.disable_progress_bar()
    try:
        network = AutoModelForImageTextToText.from_pretrained(
            checkpoint, dtype=dtype, attn_implementation="sdpa", device_map=device
        )
    except ImportError as exc:
        method = _quantization(checkpoint)
        if method is None:
            raise
        package = re.search(r"pip install ([\w\-\[\].]+)", str(exc))
        raise MissingDependencyError(
            package.group(1) if package else str(exc),
            purpose=f"the {method.upper()}-quantized checkpoint {model} ({exc})",
        ) from exc
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()
    network.eval()
    return network


def unload_models() -> None:
    """Forget every loaded model, so that its memory is freed once no generation uses it."""
    with _MODELS_LOCK:
        _MODELS.clear()
