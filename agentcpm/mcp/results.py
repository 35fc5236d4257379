"""What an MCP server sends, as agentcpm types: a tool's input schema as the model sees it, and a call's
result as a string or parts (or :class:`MCPToolError` for an ``isError`` result)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..tools import _clean_schema
from ..types import ImagePart, Part, TextPart
from .errors import MCPToolError


def _input_schema(raw: Any) -> dict[str, Any]:
    """The tool's input schema as agentcpm shows it to the model: refs inlined, titles dropped (as for
    Python tools, via tools._clean_schema)."""
    schema = dict(raw) if isinstance(raw, dict) else {}
    schema.pop("$schema", None)
    defs = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}
    cleaned: dict[str, Any] = _clean_schema(schema, defs)
    if defs and '"$ref"' in json.dumps(cleaned):
        cleaned["$defs"] = {name: _clean_schema(d, defs, (name,)) for name, d in defs.items()}
    cleaned["type"] = "object"
    cleaned.setdefault("properties", {})
    return cleaned


def _decode(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def _result_parts(result: Any, server: str) -> list[Part]:
    """MCP content -> parts: text stays text, images become :class:`ImagePart`, embedded text resources
    become text, other blobs and links a line that says what they are. Structured content is added as
    JSON when no text block already carries it."""
    from mcp import types

    parts: list[Part] = []
    for block in result.content or []:
        if isinstance(block, types.TextContent):
            parts.append(TextPart(block.text))
        elif isinstance(block, types.ImageContent):
            data = _decode(block.data)
            parts.append(ImagePart(data) if data else TextPart(f"[an image from {server} that is not valid base64]"))
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(TextPart(resource.text))
            elif (resource.mimeType or "").startswith("image/") and (data := _decode(resource.blob)):
                parts.append(ImagePart(data))
            else:
                size = len(resource.blob) * 3 // 4
                parts.append(
                    TextPart(f"[binary resource {resource.uri} ({resource.mimeType or 'unknown type'}, ~{size} bytes)]")
                )
        elif isinstance(block, types.ResourceLink):
            parts.append(TextPart(f"[resource {block.uri}" + (f": {block.name}]" if block.name else "]")))
        elif isinstance(block, types.AudioContent):
            parts.append(TextPart(f"[audio ({block.mimeType}) omitted: this model reads text and images]"))
        else:
            parts.append(TextPart(f"[{getattr(block, 'type', 'unknown')} content omitted]"))
    structured = getattr(result, "structuredContent", None)
    if structured is not None and not any(isinstance(p, TextPart) for p in parts):
        parts.append(TextPart(json.dumps(structured, ensure_ascii=False)))
    return parts


def _tool_content(result: Any, server: str, name: str) -> str | list[Part]:
    """A call's result: a string when it is all text, else the parts; :class:`MCPToolError` with the
    server's text for an ``isError`` result."""
    parts = _result_parts(result, server)
    if result.isError:
        text = "\n".join(p.text for p in parts if isinstance(p, TextPart)).strip() or "the tool reported an error"
        raise MCPToolError(text, server, name)
    if all(isinstance(p, TextPart) for p in parts):
        return "\n".join(p.text for p in parts if isinstance(p, TextPart))
    return parts
