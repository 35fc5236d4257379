"""Run ``transformers serve`` on a MiniCPM-V 4.6 checkpoint without torchvision (a test helper).

Plain ``transformers serve`` loads the processor with ``AutoProcessor``, which needs torchvision for
MiniCPM-V 4.6's video processor (and no CPU torchvision exists here). This launcher loads it with
:func:`agentcpm.backends.local.load_processor` instead, then runs the serve CLI with the given arguments::

    python tests/transformers_serve.py MODEL_DIR --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str]) -> None:
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.transformers import main as transformers_cli

    from agentcpm.backends.local import load_processor

    def load_image_processor(self: Any, model_id_and_revision: str, gguf_file: str | None = None) -> Any:
        model_id, _, revision = model_id_and_revision.partition("@")
        return load_processor(model_id, revision=revision or None)

    ModelManager._load_processor = load_image_processor  # type: ignore[method-assign]
    sys.argv = ["transformers", "serve", *argv]
    transformers_cli()


if __name__ == "__main__":
    main(sys.argv[1:])
