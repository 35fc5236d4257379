"""Safe display of tool calls for a person who must approve them: hidden characters escaped, ints of any
size written whole."""

from __future__ import annotations

import unicodedata
from typing import Any

from ..format.coerce import int_text

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
