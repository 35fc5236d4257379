"""What a tool returns -> content parts: text stays text, data becomes JSON, images stay images."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from pydantic import BaseModel

from ..types import ImagePart, Part, TextPart


def _is_pil_image(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("PIL.") and hasattr(value, "size") and hasattr(value, "mode")


def _json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, BaseModel):
            return obj.model_dump(mode="json")
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        return str(obj)

    return json.dumps(value, ensure_ascii=False, default=default)


def _has_image(value: Any) -> bool:
    return isinstance(value, (ImagePart, TextPart)) or _is_pil_image(value)


def to_content(value: Any) -> list[Part]:
    """What a tool returned -> content parts for its :class:`~agentcpm.types.ToolResult`.

    Strings stay text; numbers, booleans, dicts, lists, dataclasses and pydantic models become JSON;
    PIL images and :class:`~agentcpm.types.ImagePart` become images; a list mixing text and images keeps
    each item in order. ``None`` becomes ``"null"``.

    >>> [p.text for p in to_content({"temp": 21})]
    ['{"temp": 21}']
    """
    if isinstance(value, str):
        return [TextPart(value)]
    if isinstance(value, (TextPart, ImagePart)):
        return [value]
    if _is_pil_image(value):
        return [ImagePart(value)]
    if isinstance(value, (list, tuple)) and any(_has_image(item) for item in value):
        parts: list[Part] = []
        for item in value:
            parts.extend(to_content(item))
        return parts
    if isinstance(value, BaseModel):
        return [TextPart(value.model_dump_json())]
    if value is None or isinstance(value, (bool, int, float, dict, list, tuple, set, frozenset)):
        return [TextPart(_json(value))]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [TextPart(_json(dataclasses.asdict(value)))]
    if isinstance(value, enum.Enum):
        return [TextPart(str(value.value))]
    return [TextPart(str(value))]
