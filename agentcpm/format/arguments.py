"""Tool-call arguments as the tools' schemas want them: the name check, the conversion of value text (and of
already-decoded values) to the schema's JSON types, and the reading of the older JSON call form.

The parser (:mod:`.parser`) uses these for the calls it reads; :func:`convert_arguments` applies the same
rules to a server's structured tool_calls.

>>> tools = [{"name": "add", "parameters": {"properties": {"a": {"type": "integer"}}}}]
>>> convert_arguments("add", {"a": "5"}, tools)
({'a': 5}, None)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..types import tool_schema
from .coerce import load_structured, matches, schema_types, try_type
from .markup import json_text

__all__ = ["convert_arguments"]

_BAD_NAME = re.compile(r"[\s<>{}\"']")


def function_schemas(tools: Iterable[Any] | None) -> dict[str, dict[str, Any]] | None:
    """name -> parameters schema, or None when no tools are given (then no name is unknown)."""
    if not tools:
        return None
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool_schema(tool)["function"]
        params = function.get("parameters")
        out[str(function.get("name", ""))] = params if isinstance(params, dict) else {}
    return out


def schema_properties(schemas: dict[str, dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    if schemas is None or name not in schemas:
        return None
    props = schemas[name].get("properties")
    return props if isinstance(props, dict) else {}


def convert_text(schema: Any, text: str) -> tuple[Any, str | None]:
    """Value text -> (value, None), or (raw text, what was expected) when no allowed type fits."""
    kinds = schema_types(schema)
    if not kinds:
        return text, None
    if "null" in kinds and text.strip() in ("null", "None"):
        return None, None
    for kind in kinds:
        if kind != "null":
            ok, value = try_type(kind, text)
            if ok:
                return value, None
    return text.strip(), " or ".join(kinds)


def schema_key(props: dict[str, Any] | None, name: str) -> str:
    """A parameter name as the schema spells it: whitespace around a known name (<parameter= city>) is dropped."""
    return name.strip() if props is not None and name not in props and name.strip() in props else name


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_error(name: str, schemas: dict[str, dict[str, Any]] | None) -> str | None:
    if not name or _BAD_NAME.search(name):
        return f"invalid function name {short(name)}: a name cannot be empty or contain whitespace or any of <>{{}}\"'"
    if schemas is not None and name not in schemas:
        return f"unknown tool {short(name)}; available tools: {', '.join(sorted(schemas)) or 'none'}"
    return None


def convert_values(
    name: str, arguments: dict[str, Any], schemas: dict[str, dict[str, Any]] | None
) -> tuple[dict[str, Any], list[str]]:
    props = schema_properties(schemas, name)
    out: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in arguments.items():
        schema = props.get(key) if props else None
        kinds = schema_types(schema)
        if not kinds or any(matches(value, kind) for kind in kinds):
            out[key] = value
            continue
        text = value if isinstance(value, str) else json_text(value)
        converted, expected = convert_text(schema, text)
        out[key] = converted if expected is None else value
        if expected is not None:
            errors.append(f"parameter {key!r}: expected {expected}, got {short(value)}")
    return out, errors


def convert_arguments(
    name: str, arguments: dict[str, Any], tools: Sequence[Any] | None = None
) -> tuple[dict[str, Any], str | None]:
    """Apply the parser's schema conversion to already-decoded arguments (a server's structured tool_calls).

    Values of an allowed JSON type pass through; others are converted from their text as the parser would
    (``"5"`` -> ``5`` for an integer). Returns the arguments and an error message (unknown tool, a value
    that does not convert) or None.

    >>> tools = [{"name": "add", "parameters": {"properties": {"a": {"type": "integer"}}}}]
    >>> convert_arguments("add", {"a": "5"}, tools)
    ({'a': 5}, None)
    """
    schemas = function_schemas(tools)
    errors = [e for e in [name_error(name, schemas)] if e]
    if not isinstance(arguments, dict):
        return {}, "; ".join([*errors, f"arguments must be an object, got {short(arguments)}"])
    out, conversion_errors = convert_values(name, arguments, schemas)
    return out, "; ".join(errors + conversion_errors) or None


def convert_texts(
    name: str, values: dict[str, str], schemas: dict[str, dict[str, Any]] | None
) -> tuple[dict[str, Any], list[str]]:
    props = schema_properties(schemas, name)
    out: dict[str, Any] = {}
    errors: list[str] = []
    for key, text in values.items():
        schema = props.get(key) if props else None
        if schema is None:
            out[key] = text
            continue
        out[key], expected = convert_text(schema, text)
        if expected is not None:
            errors.append(f"parameter {key!r}: expected {expected}, got {short(text.strip())}")
    return out, errors


def json_unescape(text: str) -> str:
    try:
        value = json.loads(f'"{text}"')
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def json_call(text: str) -> tuple[str, dict[str, Any], str | None] | None:
    """The JSON form {"name": ..., "arguments": {...}} -> (name, arguments, error); None if not a call."""
    try:
        obj = load_structured(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters"))
    error = None
    if isinstance(arguments, str):
        try:
            arguments = load_structured(arguments) if arguments.strip() else {}
        except ValueError:
            arguments, error = {}, f"arguments are not valid JSON: {short(arguments)}"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments, error = {}, f"arguments must be an object, got {short(arguments)}"
    return obj["name"], arguments, error
