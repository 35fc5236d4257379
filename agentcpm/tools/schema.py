"""The JSON schema of a tool's parameters: a pydantic model built from the signature (descriptions from the
docstring), cleaned for small models (``$ref`` inlined, titles dropped); validation messages, one line each."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from ..errors import ToolDefinitionError
from ..format.coerce import check_arguments
from .display import _short
from .docstrings import parse_docstring

_SCHEMA_KEYS_WITH_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_KEYS_WITH_VALUES = ("default", "enum", "const", "examples")  # data, not schemas: keep as is


def _clean_schema(schema: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Inline ``$ref``s (small models read flat schemas better) and drop pydantic's titles."""
    if isinstance(schema, list):
        return [_clean_schema(item, defs, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.split("/")[-1]
        if name in seen or name not in defs:  # recursive model: keep the reference
            return schema
        merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean_schema(merged, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_KEYS_WITH_SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: _clean_schema(v, defs, seen) for k, v in value.items()}
        elif key in _SCHEMA_KEYS_WITH_VALUES:
            out[key] = value
        else:
            out[key] = _clean_schema(value, defs, seen)
    return out


def _has_recursive_ref(schema: Any) -> bool:
    return '"$ref"' in json.dumps(schema)


def _field_description(annotation: Any) -> str | None:
    """The description of an ``Annotated[..., Field(description=...)]`` (it wins over the docstring)."""
    if get_origin(annotation) is Annotated:
        for meta in get_args(annotation)[1:]:
            if isinstance(meta, FieldInfo) and meta.description:
                return meta.description
    return None


def _build_model(fn: Callable[..., Any], skip_first: bool) -> tuple[type[BaseModel], list[str], str, dict[str, str]]:
    """A pydantic model of the parameters of ``fn``, the positional-only names, and the docstring parts."""
    qualname = getattr(fn, "__qualname__", repr(fn))
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"cannot read the signature of {qualname}: {exc}") from exc
    # The function that holds the annotations: the wrapped one of a partial, __call__ of a callable object.
    source = fn.func if isinstance(fn, functools.partial) else fn
    if not (inspect.isfunction(source) or inspect.ismethod(source)):
        source = getattr(type(source), "__call__", source)  # noqa: B004 - the class's __call__, not callable()
    try:
        hints = get_type_hints(source, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            f"cannot resolve the type hints of {qualname}: {exc}; define the types it names at module level"
        ) from exc
    description, docs = parse_docstring((inspect.getdoc(source) if source is not fn else None) or inspect.getdoc(fn))
    fields: dict[str, Any] = {}
    positional: list[str] = []
    parameters = list(signature.parameters.values())
    if skip_first and parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"{qualname} takes *{param.name}: a tool needs named parameters with types, "
                "so the model knows what to send; list them explicitly"
            )
        if param.name not in hints:
            raise ToolDefinitionError(
                f"parameter {param.name!r} of {qualname} has no type annotation: annotate it "
                f"(for example `{param.name}: str`) so the model knows what to send"
            )
        if param.name.startswith("_"):
            raise ToolDefinitionError(f"parameter {param.name!r} of {qualname}: names starting with _ cannot be sent")
        annotation = hints[param.name]
        default = ... if param.default is inspect.Parameter.empty else param.default
        doc = docs.get(param.name)
        if doc and not _field_description(annotation):
            fields[param.name] = (annotation, Field(default, description=doc))
        else:
            fields[param.name] = (annotation, default if default is not ... else Field(...))
        if param.kind == param.POSITIONAL_ONLY:
            positional.append(param.name)
    try:
        model = create_model(
            f"{getattr(fn, '__name__', 'tool')}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except Exception as exc:
        raise ToolDefinitionError(f"cannot build the parameters of {qualname}: {_culprit(fields, exc)}") from exc
    return model, positional, description, docs


def _culprit(fields: dict[str, Any], exc: Exception) -> str:
    """Name the parameter whose type pydantic could not handle, with the first line of its complaint."""
    for name, spec in fields.items():
        try:
            create_model("probe", **{name: spec}).model_json_schema()
        except Exception as inner:
            first = str(inner).strip().splitlines()[0]
            return (
                f"parameter {name!r} has type {spec[0]!r}, which has no JSON schema ({first}); "
                "use JSON-friendly types (str, int, float, bool, Literal, Enum, list, dict, pydantic models)"
            )
    return str(exc).strip().splitlines()[0]


def _model_schema(model: type[BaseModel], qualname: str) -> dict[str, Any]:
    try:
        raw = model.model_json_schema()
    except Exception as exc:
        fields = {name: (info.annotation, info) for name, info in model.model_fields.items()}
        raise ToolDefinitionError(
            f"cannot build a JSON schema for the parameters of {qualname}: {_culprit(fields, exc)}"
        ) from exc
    defs = raw.pop("$defs", {})
    schema = _clean_schema(raw, defs)
    if defs and _has_recursive_ref(schema):
        schema["$defs"] = {name: _clean_schema(d, defs, (name,)) for name, d in defs.items()}
    schema.setdefault("properties", {})
    schema["type"] = "object"
    if "required" not in schema:
        schema["required"] = []
    return schema


def _check_json_schema(arguments: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """A small validator for hand-written schemas: required names, unknown names, top-level types and enums
    (the JSON-type check the parser uses too, :mod:`agentcpm.format.coerce`)."""
    return check_arguments(arguments, schema, _short)


def format_validation_error(exc: ValidationError) -> list[str]:
    """One short line per error, ``where: what (got value)``, without pydantic's documentation links."""
    errors = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ())) or "arguments"
        message = error.get("msg", "invalid")
        if error.get("type") == "missing":
            message = "field required"
        elif error.get("type") == "extra_forbidden":
            message = "unknown parameter"
        elif "input" in error and error.get("type") != "missing":
            message += f" (got {_short(error['input'])})"
        errors.append(f"{where}: {message}")
    return errors
