"""MiniCPM-V 4.6 in this process, with transformers (``pip install "agentcpm[local]"``).

torch and transformers are imported on first use, never at ``import agentcpm``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError


class _NoVideoProcessor:
    """Stands in for the video processor when torchvision is missing: images work, videos raise."""

    def __init__(self, image_processor: Any) -> None:
        self.slice_mode = image_processor.slice_mode
        self.downsample_mode = image_processor.downsample_mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise MissingDependencyError(
            "torchvision",
            purpose="video input to the in-process model (no CPU build exists for some platforms; "
            "serve the model with vLLM or SGLang and pass base_url= instead)",
        )


def load_processor(model: str | Path, **kwargs: Any) -> Any:
    """The model's processor (tokenizer, image processor, chat template), with or without torchvision.

    ``AutoProcessor`` needs torchvision for MiniCPM-V 4.6's video processor; without it the processor is
    assembled from the tokenizer and the PIL image processor, and video input raises
    :class:`~agentcpm.errors.MissingDependencyError`. ``kwargs`` go to ``from_pretrained``.

    >>> processor = load_processor("openbmb/MiniCPM-V-4.6")  # doctest: +SKIP
    >>> processor.tokenizer.image_token
    '<|image_pad|>'
    """
    try:
        from transformers import AutoProcessor, AutoTokenizer
        from transformers.models.minicpmv4_6 import MiniCPMV4_6ImageProcessorPil, MiniCPMV4_6Processor
        from transformers.utils import is_torchvision_available
    except ImportError as exc:
        raise MissingDependencyError("transformers", "local", "running the model in-process") from exc

    if is_torchvision_available():
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
