"""Tools: Python functions the model can call, with a JSON schema built from the signature and docstring.

>>> from typing import Literal
>>> @tool
... def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
...     '''Get the current weather for a location.
...
...     Args:
...         location: City name.
...         unit: Temperature unit.
...     '''
...     return f"22 degrees {unit.upper()} in {location}"
>>> get_weather.parameters["required"]
['location']
>>> get_weather.call({"location": "Beijing"})
'22 degrees C in Beijing'
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import dataclasses
import enum
import functools
import inspect
import json
import os
import re
import threading
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from typing import Annotated, Any, get_args, get_origin, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from .errors import ToolDefinitionError
from .types import ImagePart, Part, TextPart

__all__ = [
    "Tool",
    "ToolArgumentsError",
    "display_arguments",
    "display_call",
    "display_text",
    "parse_docstring",
    "set_thread_limit",
    "to_content",
    "tool",
]


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's parameters; ``errors`` lists what is wrong, one per line."""

    def __init__(self, tool_name: str, errors: list[str]) -> None:
        super().__init__(f"invalid arguments for {tool_name}: " + "; ".join(errors))
        self.tool_name = tool_name
        self.errors = errors


# ---------------------------------------------------------------------------- docstrings

_GOOGLE_ARGS = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments)\s*:\s*$", re.I)
_GOOGLE_OTHER = re.compile(
    r"^(Returns?|Yields?|Raises?|Examples?|Notes?|Warnings?|See Also|Attributes|References|Todo)\s*:\s*$", re.I
)
_NUMPY_HEADER = re.compile(r"^-{3,}\s*$")
_SPHINX_PARAM = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_SPHINX_OTHER = re.compile(r"^:\w+")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google, NumPy or Sphinx docstring into (description, {parameter: description}).

    >>> parse_docstring('''Add numbers.
    ...
    ...     Args:
    ...         a: The first.
    ...         b (int): The second,
    ...             continued.
    ...     ''')
    ('Add numbers.', {'a': 'The first.', 'b': 'The second, continued.'})
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    params: dict[str, list[str]] = {}
    section = "description"  # description | params | other
    current: str | None = None
    param_indent = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        # NumPy section header: a title underlined with dashes.
        if stripped and _NUMPY_HEADER.match(following):
            name = stripped.lower()
            section = "params" if name in ("parameters", "params", "other parameters", "arguments") else "other"
            current, param_indent = None, -1
            i += 2
            continue
        if _GOOGLE_ARGS.match(stripped) and indent == 0:
            section, current, param_indent = "params", None, -1
            i += 1
            continue
        if _GOOGLE_OTHER.match(stripped) and indent == 0:
            section, current = "other", None
            i += 1
            continue
        sphinx = _SPHINX_PARAM.match(stripped)
        if sphinx:
            section, current = "sphinx", sphinx.group(1)
            params[current] = [sphinx.group(2).strip()] if sphinx.group(2).strip() else []
            i += 1
            continue
        if _SPHINX_OTHER.match(stripped):
            section, current = "other", None
            i += 1
            continue
        if section == "description":
            description.append(line)
        elif section == "sphinx" and current is not None and stripped:
            params[current].append(stripped)
        elif section == "params" and stripped:
            if param_indent < 0:
                param_indent = indent
            if indent <= param_indent:
                # Google "name (type): text" or NumPy "name : type".
                match = re.match(r"^\*{0,2}(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", stripped) or re.match(
                    r"^\*{0,2}(\w+)\s*$", stripped
                )
                if match:
                    current = match.group(1)
                    numpy_style = bool(re.match(r"^\*{0,2}\w+\s+:", stripped)) or match.lastindex == 1
                    text = "" if numpy_style else (match.group(3) or "").strip()
                    params[current] = [text] if text else []
                    i += 1
                    continue
            if current is not None:
                params[current].append(stripped)
        i += 1
    summary = "\n".join(description).strip()
    summary = re.sub(r"\n{3,}", "\n\n", summary)
    return summary, {name: " ".join(parts).strip() for name, parts in params.items()}


# ---------------------------------------------------------------------------- schemas

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


# ---------------------------------------------------------------------------- return values


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


# ---------------------------------------------------------------------------- hand-written schemas

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _check_json_schema(arguments: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """A small validator for hand-written schemas: required names, unknown names, top-level types and enums."""
    errors: list[str] = []
    properties: dict[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in arguments:
            errors.append(f"{name}: field required")
    if schema.get("additionalProperties") is False:
        errors += [f"{name}: unknown parameter" for name in arguments if name not in properties]
    for name, value in arguments.items():
        spec = properties.get(name)
        if not isinstance(spec, dict):
            continue
        kinds = spec.get("type")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        if kinds:
            allowed = tuple(t for k in kinds for t in _JSON_TYPES.get(k, (object,)))
            wrong = not isinstance(value, allowed) or (isinstance(value, bool) and "boolean" not in kinds)
            if wrong:
                errors.append(f"{name}: expected {' or '.join(kinds)}, got {type(value).__name__} {_short(value)}")
                continue
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"{name}: must be one of {spec['enum']}, got {_short(value)}")
    return errors


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


# ---------------------------------------------------------------------------- exact integers and safe display


def int_text(value: int) -> str:
    """``str(value)`` for an int of any size (CPython refuses ``str()`` beyond 4300 digits by default).

    >>> len(int_text(10**5000))
    5001
    """
    try:
        return str(value)
    except ValueError:
        sign, value = ("-", -value) if value < 0 else ("", value)
        half = (value.bit_length() * 30103 // 100000 + 1) // 2  # about half its decimal digits
        high, low = divmod(value, 10**half)
        return sign + (int_text(high) if high else "") + int_text(low).rjust(half, "0")


def text_int(text: str) -> int:
    """``int(text)`` for a decimal of any length (the inverse of :func:`int_text`)."""
    try:
        return int(text)
    except ValueError:
        negative, digits = text.startswith("-"), text.lstrip("+-")
        if not digits.isdigit() or len(digits) <= 4000:
            raise
        half = len(digits) // 2
        value = text_int(digits[:half]) * 10 ** (len(digits) - half) + text_int(digits[half:])
        return -value if negative else value


def dumps_exact(value: Any, **options: Any) -> str:
    """``json.dumps`` that also writes ints beyond CPython's 4300-digit limit, exactly (as JSON numbers).
    The fast path is plain ``json.dumps``; only a value holding such an int takes the slow one."""
    try:
        return json.dumps(value, **options)
    except ValueError:
        pass
    token = f"agentcpm-int-{os.urandom(6).hex()}-"
    numbers: list[str] = []

    def swap(item: Any) -> Any:
        if isinstance(item, int) and not isinstance(item, bool):
            try:
                str(item)
                return item
            except ValueError:
                numbers.append(int_text(item))
                return f"{token}{len(numbers) - 1}"
        if isinstance(item, dict):
            return {key: swap(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [swap(v) for v in item]
        return item

    text = json.dumps(swap(value), **options)
    return re.sub(f'"{token}(\\d+)"', lambda m: numbers[int(m.group(1))], text)


# Characters that can hide or reorder what a reader sees: controls, format characters (bidi overrides and
# isolates, zero-width spaces and joiners, soft hyphen, tags), surrogates, line/paragraph separators,
# private use, and the other default-ignorable code points (invisible letters, variation selectors).
_HIDING_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
_INVISIBLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10)}


def _hides(char: str) -> bool:
    point = ord(char)
    if point < 0x7F:
        return point < 0x20
    return (
        unicodedata.category(char) in _HIDING_CATEGORIES
        or point in _INVISIBLE
        or 0xE0000 <= point <= 0xE0FFF  # tags and variation selectors supplement
    )


def display_text(text: str) -> str:
    r"""``text`` safe to show to a person who must judge it: every control, bidi, zero-width or other
    invisible character is written as an escape (``\u202e``), so what is shown is what will run.

    >>> display_text("delete_file\u202e(txt.exe)")
    'delete_file\\u202e(txt.exe)'
    """
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        if _hides(char):
            point = ord(char)
            out.append(
                f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"
            )
        else:
            out.append(char)
    return "".join(out)


def _value_text(value: Any) -> str:
    """``repr`` for argument values, also for ints of any size."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_value_text(k)}: {_value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_value_text(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break an error message or a prompt
        return f"<{type(value).__name__}>"


def _short(value: Any, limit: int = 200) -> str:
    text = display_text(_value_text(value))
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def display_arguments(arguments: dict[str, Any]) -> str:
    r"""Arguments as ``x=1, text='hi'``, whole, safe to show for approval (see :func:`display_text`).

    >>> display_arguments({"path": "a\u200bb", "n": 2})
    "path='a\\u200bb', n=2"
    """
    return ", ".join(f"{display_text(str(key))}={display_text(_value_text(v))}" for key, v in arguments.items())


def display_call(call: Any) -> str:
    """A tool call as ``name(x=1, text='hi')``, safe to show for approval (see :func:`display_text`)."""
    return f"{display_text(str(call.name))}({display_arguments(dict(call.arguments))})"


# ---------------------------------------------------------------------------- the Tool


class Tool:
    """A function the model can call: name, description, JSON schema of its parameters, and how to run it.

    Make one with :func:`tool` (from a function's signature and docstring) or :meth:`from_openai` (from a
    schema written by hand). Calling the Tool object itself calls the plain function.

    >>> def add(a: int, b: int = 1) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    >>> t = Tool(add)
    >>> t.to_openai()["function"]["name"], t.call({"a": "2"})
    ('add', 3)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        timeout: float | None = None,
        parameters: dict[str, Any] | None = None,
        sequential: bool | None = None,
    ) -> None:
        if not callable(fn):
            raise ToolDefinitionError(f"{fn!r} is not callable: a tool wraps a function or method")
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        self.fn: Callable[..., Any] = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not self.name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}", self.name):
            raise ToolDefinitionError(
                f"tool name {self.name!r} is not usable: use letters, digits, _ . - (at most 64), "
                "or pass name=... to @tool"
            )
        self.requires_approval = bool(requires_approval)
        # Tools that need approval act on the world, where order matters (click, then type).
        self.sequential = self.requires_approval if sequential is None else bool(sequential)
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"timeout of {self.name} must be positive seconds, got {timeout!r}")
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
        )
        self._bound: Any = None
        # A method decorated in a class body arrives as a plain function with ``self`` first.
        first = next(iter(inspect.signature(fn).parameters), "") if inspect.isfunction(fn) else ""
        self._skip_self = first in ("self", "cls")
        self._positional: list[str] = []
        self._model: type[BaseModel] | None = None
        qualname = getattr(fn, "__qualname__", self.name)
        if parameters is not None:
            if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
                raise ToolDefinitionError(f"parameters of {self.name} must be a JSON schema of type object")
            self.parameters: dict[str, Any] = {"type": "object", "properties": {}, **parameters}
            self.description = description if description is not None else parse_docstring(inspect.getdoc(fn))[0]
        else:
            model, self._positional, doc_description, _ = _build_model(fn, self._skip_self)
            self._model = model
            self.parameters = _model_schema(model, qualname)
            self.description = description if description is not None else doc_description
        functools.update_wrapper(self, fn, updated=())

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_openai(
        cls,
        schema: dict[str, Any],
        fn: Callable[..., Any],
        *,
        requires_approval: bool = False,
        timeout: float | None = None,
        sequential: bool | None = None,
    ) -> Tool:
        """A tool from a hand-written OpenAI schema (``{"type": "function", "function": {...}}`` or the bare
        ``{"name", "description", "parameters"}``); ``fn`` is called with the arguments as keywords.

        >>> t = Tool.from_openai({"name": "echo", "parameters": {"type": "object",
        ...     "properties": {"text": {"type": "string"}}, "required": ["text"]}}, lambda text: text)
        >>> t.call({"text": "hi"})
        'hi'
        """
        function = schema.get("function", schema) if isinstance(schema, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            raise ToolDefinitionError(f"not an OpenAI tool schema (no function name): {schema!r}")
        return cls(
            fn,
            name=str(function["name"]),
            description=str(function.get("description") or ""),
            parameters=dict(function.get("parameters") or {"type": "object", "properties": {}}),
            requires_approval=requires_approval,
            timeout=timeout,
            sequential=sequential,
        )

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI tool schema ``{"type": "function", "function": {name, description, parameters}}``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def __repr__(self) -> str:
        flags = ", requires_approval=True" if self.requires_approval else ""
        return f"Tool({self.name!r}{flags})"

    # methods: ``@tool`` inside a class body gives a Tool per instance ----------------------------------
    def __get__(self, instance: Any, owner: Any = None) -> Tool:
        if instance is None or not self._skip_self:
            return self
        cache = getattr(instance, "__dict__", {}).setdefault("__agentcpm_tools__", {})  # {}: __slots__ classes
        bound = cache.get(self.name)
        if bound is None:
            bound = copy.copy(self)
            bound._bound = instance
            cache[self.name] = bound
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._bound is not None:
            return self.fn(self._bound, *args, **kwargs)
        return self.fn(*args, **kwargs)

    # validation and calling -------------------------------------------------------------------------
    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check and convert the model's arguments; raises :class:`ToolArgumentsError` listing every problem.

        >>> def f(n: int) -> int: return n
        >>> Tool(f).validate({"n": "3"})
        {'n': 3}
        """
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(self.name, [f"arguments must be a JSON object, got {type(arguments).__name__}"])
        if self._model is None:
            errors = _check_json_schema(arguments, self.parameters)
            if errors:
                raise ToolArgumentsError(self.name, errors)
            return dict(arguments)
        try:
            model = self._model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, format_validation_error(exc)) from None
        # Keep nested models as model instances, as the function's annotations promise.
        return {name: getattr(model, name) for name in type(model).model_fields}

    def _invoke(self, arguments: dict[str, Any]) -> Any:
        args = [arguments.pop(name) for name in self._positional if name in arguments]
        return self(*args, **arguments)

    def call(self, arguments: dict[str, Any]) -> Any:
        """Validate ``arguments`` and run the tool here, returning what the function returned
        (an async tool is run to completion with ``asyncio.run``)."""
        result = self._invoke(self.validate(arguments))
        if inspect.isawaitable(result):
            return asyncio.run(_await(result))
        return result

    async def acall(self, arguments: dict[str, Any], *, validate: bool = True) -> Any:
        """Validate ``arguments`` (unless ``validate=False``: already done) and run the tool: async tools on
        this loop, sync tools in a daemon worker thread."""
        validated = self.validate(arguments) if validate else dict(arguments)
        if self.is_async:
            return await self._invoke(validated)
        result = await run_in_thread(self._invoke, validated)
        if inspect.isawaitable(result):
            result = await result
        return result


async def _await(value: Any) -> Any:
    return await value


DEFAULT_THREAD_LIMIT = 32


def _default_thread_limit() -> int:
    configured = os.environ.get("AGENTCPM_TOOL_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    # Tools mostly wait (network, subprocesses, sleeps), so the CPU count says little about how many may run
    # at once; 32 is more than a model's step asks for in parallel and bounds what a runaway answer costs.
    return DEFAULT_THREAD_LIMIT


class _Job:
    """One call waiting for or running in a worker; ``abandon`` when nobody waits for its result any more."""

    __slots__ = ("run", "state")

    def __init__(self, run: Callable[[], None]) -> None:
        self.run = run
        self.state = "queued"  # queued | running | abandoned | done


class _DaemonThreads:
    """Worker threads for sync tools: daemon threads (unlike ``asyncio.to_thread``'s pool), so a tool that
    hangs past its timeout, or runs when the user presses Ctrl-C, never keeps the process alive.

    At most ``limit`` workers run calls at once (``set_thread_limit``; default 32 or the
    ``AGENTCPM_TOOL_THREADS`` environment variable); more calls wait in order for a free worker. A call
    abandoned before it started (timed out or cancelled while waiting) never runs. A call abandoned while
    running (a hung tool past its timeout) no longer counts: its thread finishes it in the background and
    a fresh worker may take its place, so hung tools cannot starve the others."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or _default_thread_limit()
        self._queue: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._workers = 0  # workers counted against the limit
        self._idle = 0  # of those, waiting for a job

    def submit(self, run: Callable[[], None]) -> _Job:
        job = _Job(run)
        with self._lock:
            self._queue.append(job)
            if self._idle >= len(self._queue):
                self._ready.notify()
            elif self._workers < self.limit:
                self._start()
        return job

    def abandon(self, job: _Job) -> None:
        with self._lock:
            if job.state == "queued":
                job.state = "abandoned"
                self._queue.remove(job)
            elif job.state == "running":
                job.state = "abandoned"
                self._workers -= 1  # its thread leaves once the call returns, unless there is room again
                if self._queue and self._idle < len(self._queue) and self._workers < self.limit:
                    self._start()

    def _start(self) -> None:  # with the lock held
        self._workers += 1
        threading.Thread(target=self._work, name="agentcpm-tool", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue or self._workers > self.limit:
                    if self._workers > self.limit:  # the limit was lowered: this worker leaves
                        self._workers -= 1
                        return
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                job = self._queue.popleft()
                job.state = "running"
            job.run()
            with self._lock:
                if job.state == "abandoned":  # no longer counted: rejoin only if there is room
                    if self._workers >= self.limit:
                        return
                    self._workers += 1
                job.state = "done"


_threads = _DaemonThreads()


def set_thread_limit(limit: int | None = None) -> None:
    """How many sync tool calls may run at once in worker threads (None: the default, 32,
    or the ``AGENTCPM_TOOL_THREADS`` environment variable). Further calls wait for a free worker; a call's
    timeout counts from when it was submitted, so the wait counts too."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"the thread limit must be a positive int, got {limit!r}")
    with _threads._lock:
        _threads.limit = limit or _default_thread_limit()
        _threads._ready.notify_all()  # idle workers above the new limit leave


def run_in_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``fn(*args)`` in a daemon worker thread; the returned future resolves on the running loop.
    Cancelling the future before the call started means it never runs."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value, error = context.run(fn, *args), None
        except BaseException as exc:
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(settle, value, error)

    job = _threads.submit(run)
    future.add_done_callback(lambda f: _threads.abandon(job) if f.cancelled() else None)
    return future


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
    sequential: bool | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
    sequential: bool | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function (sync or async, or a method) into a :class:`Tool`; use bare or with options.

    The schema comes from the signature and the docstring (Google, NumPy or Sphinx style). A function
    whose schema cannot be built raises :class:`~agentcpm.errors.ToolDefinitionError` right here.
    ``requires_approval``: the agent asks before each call. ``timeout``: seconds per call. ``sequential``:
    an answer that calls this tool runs all its calls one by one, in order, instead of concurrently
    (default: the same as ``requires_approval``, since actions on the world must keep their order).

    >>> @tool(requires_approval=True, timeout=30)
    ... def delete_file(path: str) -> str:
    ...     '''Delete a file.'''
    ...     return "deleted"
    >>> delete_file.requires_approval, delete_file.timeout
    (True, 30)
    """

    def make(function: Callable[..., Any]) -> Tool:
        return Tool(
            function,
            name=name,
            description=description,
            requires_approval=requires_approval,
            timeout=timeout,
            sequential=sequential,
        )

    return make(fn) if fn is not None else make


def as_tools(tools: Sequence[Any]) -> list[Tool]:
    """Tools, plain functions and bound methods -> a list of :class:`Tool` (names must be unique)."""
    out = [t if isinstance(t, Tool) else Tool(t) for t in tools]
    names = [t.name for t in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ToolDefinitionError(f"two tools are named {', '.join(duplicates)}: give one of them name=...")
    return out
