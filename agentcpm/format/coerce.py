"""JSON types of values: the one check shared by the parser's value conversion and tool validation.

The parser converts parameter text to the types a tool's schema allows (:func:`try_type`); tools with a
hand-written schema check the arguments they get (:func:`check_arguments`). Both ask the same questions
here: which JSON types a schema allows (:func:`schema_types`), which type a value has (:func:`json_type`)
and whether it fits (:func:`matches`). Ints of any size stay exact (:func:`int_text`, :func:`text_int`,
:func:`dumps_exact`): CPython refuses ``str(int)`` and ``int(str)`` beyond 4300 digits.

>>> schema_types({"anyOf": [{"type": "int"}, {"type": "null"}]})
['integer', 'null']
>>> matches(True, "integer"), matches(3, "number")
(False, True)
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "check_arguments",
    "dumps_exact",
    "int_text",
    "json_type",
    "load_structured",
    "matches",
    "schema_types",
    "text_int",
    "try_type",
]

TYPE_ALIASES = {
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "str": "string",
    "dict": "object",
    "list": "array",
}
_KNOWN = ("string", "integer", "number", "boolean", "object", "array", "null")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INTEGRAL = re.compile(r"([+-]?[0-9]+)\.0*")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT_DIGITS = 4000  # below CPython's int/str conversion limit (4300 digits)


# ---------------------------------------------------------------------------- types


def schema_types(schema: Any) -> list[str]:
    """The JSON types a schema allows, in the order to try them ([] when it says nothing): ``type`` (a name
    or a list, Python spellings such as ``int`` accepted), then ``anyOf``/``oneOf``, else the enum's values."""
    if not isinstance(schema, dict):
        return []
    out: list[str] = []
    kind = schema.get("type")
    for name in [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []:
        if isinstance(name, str):
            out.append(TYPE_ALIASES.get(name, name))
    for key in ("anyOf", "oneOf"):
        subs = schema.get(key)
        if isinstance(subs, list):
            for sub in subs:
                out.extend(schema_types(sub))
    if not out and isinstance(schema.get("enum"), list):
        out = [json_type(v) for v in schema["enum"]]
    return list(dict.fromkeys(out))


def json_type(value: Any) -> str:
    """The JSON type name of a Python value (anything else counts as a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return "string"


def matches(value: Any, kind: str) -> bool:
    """Whether ``value`` is of JSON type ``kind``: an int is a number, a bool is no integer, a tuple is no
    array (JSON never decodes to one), and a type name nobody knows constrains nothing."""
    if kind not in _KNOWN:
        return True
    if kind == "string":
        return isinstance(value, str)
    actual = json_type(value)
    if kind == "number":
        return actual in ("integer", "number")
    return actual == kind and not (kind == "array" and isinstance(value, tuple))


def check_arguments(arguments: dict[str, Any], schema: dict[str, Any], show: Callable[[Any], str] = repr) -> list[str]:
    """A small validator for hand-written schemas: required names, unknown names, top-level types and enums.
    One line per problem, values written by ``show``.

    >>> check_arguments({"n": "3", "x": 1}, {"properties": {"n": {"type": "integer"}}, "required": ["m"],
    ...                  "additionalProperties": False})
    ['m: field required', 'x: unknown parameter', "n: expected integer, got str '3'"]
    """
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
        kinds = schema_types(spec) if "type" in spec or "anyOf" in spec or "oneOf" in spec else []
        if kinds and not any(matches(value, kind) for kind in kinds):
            errors.append(f"{name}: expected {' or '.join(kinds)}, got {type(value).__name__} {show(value)}")
            continue
        if isinstance(spec.get("enum"), list) and value not in spec["enum"]:
            errors.append(f"{name}: must be one of {spec['enum']}, got {show(value)}")
    return errors


# ---------------------------------------------------------------------------- text -> value


def try_type(kind: str, text: str) -> tuple[bool, Any]:
    """Convert value text to one JSON type: ``(ok, value)``. Strings stay as written; numbers, booleans and
    null are read leniently (``3.0`` is the integer 3, ``True`` a boolean, ``None`` null); objects and
    arrays are JSON or, as older templates wrote them, Python literals.

    >>> try_type("integer", " 3.0 "), try_type("boolean", "yes")
    ((True, 3), (False, None))
    """
    if kind == "string":
        return True, text
    s = text.strip()
    if kind == "integer" or kind == "number":
        if _INTEGER.fullmatch(s):
            return True, text_int(s)
        if kind == "integer":
            m = _INTEGRAL.fullmatch(s)
            return (True, text_int(m.group(1))) if m else (False, None)
        if _FLOAT.fullmatch(s):
            number = float(s)
            return (True, number) if math.isfinite(number) else (False, None)
        return False, None
    if kind == "boolean":
        low = s.lower()
        return (True, low == "true") if low in ("true", "false") else (False, None)
    if kind == "object" or kind == "array":
        try:
            value = load_structured(s)
            if isinstance(value, str):  # JSON-encoded once more: '"{\\"a\\": 1}"', '"[True, None]"'
                value = load_structured(value.strip())
        except ValueError:
            return False, None
        return (True, value) if isinstance(value, dict if kind == "object" else list) else (False, None)
    if kind == "null":
        return (True, None) if s in ("null", "None") else (False, None)
    return True, text  # an unknown type name: keep the text


def load_structured(text: str) -> Any:
    """JSON (ints of any size exact), else a Python literal (older templates wrote dicts as repr);
    raises ValueError."""
    try:
        return json.loads(text, strict=False, parse_int=text_int)
    except (ValueError, RecursionError):
        pass
    if text[:1] in "{[(" and len(text) < 1_000_000:
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        else:
            return _jsonable(value)
    raise ValueError("not JSON")


def _jsonable(value: Any) -> Any:
    """A Python literal as the JSON data it stands for: tuples and sets become lists, keys strings."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, complex)):
        return str(value)
    return value


# ---------------------------------------------------------------------------- exact integers


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
    """``int(text)`` for a decimal of any length (the inverse of :func:`int_text`).

    >>> text_int(int_text(-(10**5000))) == -(10**5000)
    True
    """
    if len(text) <= _INT_DIGITS:
        return int(text)
    negative, digits = text[:1] == "-", text.lstrip("+-") if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(text) - len(digits) > 1:
        return int(text)  # raises ValueError as int() does
    return -_digits_int(digits) if negative else _digits_int(digits)


def _digits_int(digits: str) -> int:
    if len(digits) <= _INT_DIGITS:
        return int(digits)
    half = len(digits) // 2
    return _digits_int(digits[:half]) * 10 ** (len(digits) - half) + _digits_int(digits[half:])


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
