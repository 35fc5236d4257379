"""MiniCPM-V 4.6 in this process, with transformers (``pip install "agentcpm[local]"``).

torch and transformers are imported on the first call, never at ``import agentcpm``. Each checkpoint is
loaded once per (model, device, dtype) and shared by every :class:`LocalBackend` (and so every Client)
in the process; it generates one answer at a time.

>>> from agentcpm import Client
>>> client = Client(model="openbmb/MiniCPM-V-4.6")  # doctest: +SKIP
>>> client.chat("What is in this picture?", images=["photo.jpg"]).content  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendError, BadRequestError, ConfigurationError, MissingDependencyError, ModelNotFoundError
from ..parsing import StreamParser
from ..types import Completed, Completion, ImagePart, Message, StreamEvent, TextPart, Usage, VideoPart
from .base import GenerationOptions, final_completion, move_tool_images

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


# ---------------------------------------------------------------------------- loading


#: What loading a checkpoint needs (transformers asks accelerate for ``device_map``), in install order.
LOAD_PACKAGES = ("torch", "transformers", "accelerate")

#: Show transformers' "Loading weights" progress bar while a checkpoint loads (the ``agentcpm`` command turns
#: it off unless --verbose). The hub's download bars are not affected.
show_load_progress = True


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
        if key in _MODELS:
            return _MODELS[key]
        started = time.perf_counter()
        checkpoint = resolve_checkpoint(model)
        logger.info("loading %s on %s (%s)", model, device, dtype)
        from transformers import AutoModelForImageTextToText
        from transformers.utils import logging as transformers_logging

        bar_was_on = transformers_logging.is_progress_bar_enabled()
        if not show_load_progress:
            transformers_logging.disable_progress_bar()
        try:
            network = AutoModelForImageTextToText.from_pretrained(
                checkpoint, dtype=getattr(torch, dtype), attn_implementation="sdpa", device_map=device
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
        processor = load_processor(checkpoint)
        loaded = LoadedModel(name, network, processor, device, dtype, time.perf_counter() - started)
        _MODELS[key] = loaded
        return loaded


def unload_models() -> None:
    """Forget every loaded model, so that its memory is freed once no generation uses it."""
    with _MODELS_LOCK:
        _MODELS.clear()


# ---------------------------------------------------------------------------- one generation


class _Run:
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
                    **self.inputs, **self.kwargs, streamer=self, stopping_criteria=StoppingCriteriaList([self])
                )
        except Exception as exc:  # reported by _Answer.finish as a BackendError
            self.error = exc
        finally:
            self.loaded.lock.release()

    def cancel(self) -> None:
        self.cancelled.set()


class _Batches:
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


def _generate_in_thread(run: _Run, batches: _Batches) -> threading.Thread:
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


class _Detokenizer:
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


class _StopStrings:
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


@dataclass
class _Prepared:
    loaded: LoadedModel
    inputs: Any
    kwargs: dict[str, Any]
    prompt_tokens: int
    thinking: bool  # the prompt ends inside <think>
    stop_ids: set[int]
    started: float


class _Answer:
    """Turns the token ids of one run into parser events and, at the end, the Completion."""

    def __init__(self, run: _Run, prepared: _Prepared, tools: list[dict[str, Any]], stop: list[str] | None) -> None:
        self.run, self.prepared = run, prepared
        self.detokenizer = _Detokenizer(run.loaded.tokenizer)
        self.stops = _StopStrings(stop)
        self.parser = StreamParser(tools or None, thinking=prepared.thinking)
        self.text: list[str] = []
        self.last_id: int | None = None

    def feed(self, ids: list[int]) -> list[Any]:
        self.last_id = ids[-1] if ids else self.last_id
        text = self.stops.push(self.detokenizer.push(ids))
        if self.stops.hit:
            self.run.cancel()
        return self._parse(text)

    def _parse(self, text: str) -> list[Any]:
        if not text:
            return []
        self.text.append(text)
        return self.parser.feed(text)

    def finish(self) -> list[Any]:
        run = self.run
        if run.error is not None:
            raise BackendError(f"generation failed: {type(run.error).__name__}: {run.error}") from run.error
        events = self._parse(self.stops.push(self.detokenizer.flush()))
        events += self._parse(self.stops.flush())
        if self.stops.hit or self.last_id in self.prepared.stop_ids:
            finish = "stop"
        elif run.cancelled.is_set():
            finish = "cancelled"  # close() was called while this answer was being written
        else:
            finish = "length"  # max_tokens or the timeout cut it off
        events += self.parser.close(finish_reason=finish)
        parsed = self.parser.result()
        if finish == "stop" and parsed.tool_calls:
            finish = "tool_calls"
        first, last = run.first_token_at, run.last_token_at
        decode_seconds = (last - first) if first is not None and last is not None else 0.0
        usage = Usage(
            prompt_tokens=self.prepared.prompt_tokens,
            completion_tokens=run.generated,
            time_to_first_token=(first - self.prepared.started) if first is not None else None,
            tokens_per_second=(run.generated - 1) / decode_seconds if decode_seconds > 0 else None,
            duration=time.perf_counter() - self.prepared.started,
        )
        completion = Completion(
            content=parsed.content,
            reasoning=parsed.reasoning,
            tool_calls=parsed.tool_calls,
            finish_reason=finish,
            usage=usage,
            raw="".join(self.text),
        )
        return [*events, Completed(completion)]


# ---------------------------------------------------------------------------- the backend


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
    """Runs MiniCPM-V 4.6 with transformers in this process (see the module docstring).

    ``model``: a hub id (``openbmb/MiniCPM-V-4.6``, ``-Thinking``, ``-GPTQ``, ``-AWQ``) or a checkpoint folder.
    ``device``: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``. ``dtype``:
    ``auto`` (bfloat16 on CUDA, float16 on MPS, float32 on CPU), ``bfloat16``, ``float16``, ``float32``.
    Nothing is loaded until the first call (or :meth:`load`).

    >>> backend = LocalBackend("openbmb/MiniCPM-V-4.6", device="cpu")  # doctest: +SKIP
    >>> Client(backend=backend).chat("Hi").content  # doctest: +SKIP
    """

    def __init__(self, model: str, *, device: str | None = None, dtype: str | None = None) -> None:
        self.model = str(model)
        self.device = device
        self.dtype = dtype
        self._runs: set[_Run] = set()

    def __repr__(self) -> str:
        return f"LocalBackend({self.model!r}, device={self.device!r}, dtype={self.dtype!r})"

    def load(self) -> LoadedModel:
        """Load the model now (it is shared with every backend asking for the same model, device and dtype)."""
        return load_model(self.model, device=self.device, dtype=self.dtype)

    # preparing a request --------------------------------------------------------------------------------
    def _prepare(self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions) -> _Prepared:
        started = time.perf_counter()
        loaded = self.load()
        video = any(m.videos for m in messages)
        if video and not _has_torchvision():
            raise _video_error()
        hf_messages = [_to_hf_message(m) for m in move_tool_images(messages)]
        mode = options.downsample_mode or loaded.processor.image_processor.downsample_mode
        # The model card's settings for video: no image ids, one slice per frame.
        knobs = {
            "downsample_mode": mode,
            "max_slice_nums": options.max_slice_nums or (1 if video else None),
            "use_image_id": options.use_image_id if options.use_image_id is not None else (False if video else None),
            "max_num_frames": options.max_num_frames if video else None,
            "stack_frames": options.stack_frames if video else None,
        }
        processor_kwargs = {key: value for key, value in knobs.items() if value is not None}
        template_kwargs: dict[str, Any] = {}
        if options.thinking is not None:
            template_kwargs["enable_thinking"] = options.thinking
        from jinja2 import TemplateError

        try:
            inputs = loaded.processor.apply_chat_template(
                hf_messages,
                tools=tools or None,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs=processor_kwargs,
                **template_kwargs,
            )
        except TemplateError as exc:
            raise BadRequestError(f"the model's chat template refused the conversation: {exc}") from exc
        torch = _import_torch()
        inputs = inputs.to(device=loaded.device, dtype=getattr(torch, loaded.dtype))
        input_ids = inputs["input_ids"]
        tail = loaded.tokenizer.decode(input_ids[0, -4:].tolist())
        kwargs, stop_ids = self._generation_kwargs(loaded, options, mode)
        return _Prepared(
            loaded=loaded,
            inputs=inputs,
            kwargs=kwargs,
            prompt_tokens=int(input_ids.shape[1]),
            thinking=tail.rstrip("\n").endswith("<think>"),
            stop_ids=stop_ids,
            started=started,
        )

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

    def _new_run(
        self, prepared: _Prepared, tools: list[dict[str, Any]], stop: list[str] | None
    ) -> tuple[_Run, _Answer]:
        run = _Run(prepared.loaded, prepared.inputs, dict(prepared.kwargs))
        self._runs.add(run)  # from here on close() stops it
        return run, _Answer(run, prepared, tools, stop)

    # Backend protocol ------------------------------------------------------------------------------------
    def stream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Iterator[StreamEvent]:
        prepared = self._prepare(messages, tools, options)
        run, answer = self._new_run(prepared, tools, options.stop)
        ready = threading.Event()
        batches = _Batches(ready.set)
        prepared.loaded.lock.acquire()
        thread = _generate_in_thread(run, batches)
        try:
            done = False
            while not done:
                ready.wait(0.1)  # a timeout keeps Ctrl-C responsive
                ready.clear()
                ids, done = batches.take()
                if ids:
                    yield from answer.feed(ids)
            yield from answer.finish()
        finally:
            run.cancel()
            thread.join()
            self._runs.discard(run)

    def complete(self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions) -> Completion:
        # Generates on this thread: nothing to hand over between threads, and Ctrl-C stops generate itself.
        prepared = self._prepare(messages, tools, options)
        run, answer = self._new_run(prepared, tools, options.stop)
        prepared.loaded.lock.acquire()
        try:
            run.generate(answer.feed)
        finally:
            self._runs.discard(run)
        return final_completion(iter(answer.finish()))

    async def astream(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> AsyncIterator[StreamEvent]:
        prepared = await asyncio.to_thread(self._prepare, messages, tools, options)
        run, answer = self._new_run(prepared, tools, options.stop)
        try:
            await _acquire(prepared.loaded.lock)
            loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            batches = _Batches(lambda: loop.call_soon_threadsafe(ready.set))
            _generate_in_thread(run, batches)
            done = False
            while not done:
                await ready.wait()
                ready.clear()
                ids, done = batches.take()
                for event in answer.feed(ids) if ids else []:
                    yield event
            for event in answer.finish():
                yield event
        finally:
            run.cancel()  # the generation thread stops at the next token and releases the model
            self._runs.discard(run)

    async def acomplete(
        self, messages: list[Message], tools: list[dict[str, Any]], options: GenerationOptions
    ) -> Completion:
        prepared = await asyncio.to_thread(self._prepare, messages, tools, options)
        run, answer = self._new_run(prepared, tools, options.stop)
        try:
            await _acquire(prepared.loaded.lock)
            # One worker thread keeps the loop free; the tokens stay on it (no hand-off per token).
            await asyncio.shield(asyncio.to_thread(run.generate, answer.feed))
            return final_completion(iter(answer.finish()))
        finally:
            run.cancel()  # if this task was cancelled, generation stops at the next token and frees the model
            self._runs.discard(run)

    def close(self) -> None:
        """Stop this backend's running generations. The model stays loaded for other clients
        (:func:`unload_models` forgets it)."""
        for run in list(self._runs):
            run.cancel()

    async def aclose(self) -> None:
        self.close()


async def _acquire(lock: threading.Lock) -> None:
    """Acquire a threading lock without blocking the event loop, and without leaking it on cancellation."""
    if lock.acquire(blocking=False):
        return
    waiter = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        waiter.add_done_callback(lambda done: lock.release() if not done.cancelled() and done.result() else None)
        raise
