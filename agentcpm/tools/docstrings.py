"""Docstrings -> a tool's description and its parameters' descriptions, read by the maintained
``docstring-parser`` package (Google, NumPy and reST/Sphinx styles, told apart automatically)."""

from __future__ import annotations

import inspect
import re

import docstring_parser


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google, NumPy or Sphinx docstring into (description, {parameter: description}).

    The description is the text before the first section (``Args:``, ``Returns:``, ...); a parameter's
    lines are joined into one. Sections other than the parameters (returns, raises, examples) are left out:
    the model does not need them to call the tool.

    >>> parse_docstring('''Add numbers.
    ...
    ...     Args:
    ...         a: The first.
    ...         b (int): The second,
    ...             continued.
    ...     ''')
    ('Add numbers.', {'a': 'The first.', 'b': 'The second, continued.'})
    """
    if not doc or not doc.strip():
        return "", {}
    text = inspect.cleandoc(doc)
    try:
        parsed = docstring_parser.parse(text)
    except docstring_parser.ParseError:  # a malformed section: keep the text, describe no parameter
        return text.strip(), {}
    parts = [parsed.short_description or "", parsed.long_description or ""]
    joiner = "\n\n" if parsed.blank_after_short_description else "\n"
    description = joiner.join(part.strip() for part in parts if part and part.strip())
    description = re.sub(r"\n{3,}", "\n\n", description)
    params: dict[str, str] = {}
    for param in parsed.params:
        name = param.arg_name.lstrip("*").strip()
        if name.isidentifier():
            params[name] = " ".join(line.strip() for line in (param.description or "").splitlines() if line.strip())
    return description, params
