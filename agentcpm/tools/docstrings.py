"""Docstrings -> a tool's description and its parameters' descriptions, read by the maintained
``docstring-parser`` package (Google, NumPy and reST/Sphinx styles, told apart automatically)."""

from __future__ import annotations

import inspect
import re

import docstring_parser
from docstring_parser import epydoc, numpydoc, rest
from docstring_parser.google import DEFAULT_SECTIONS, GoogleParser, Section, SectionType

_KEYWORD_TITLES = ("Keyword Args", "Keyword Arguments", "Other Parameters", "Other Params")
_PROSE_TITLES = ("Note", "Notes", "Warning", "Warnings", "See Also", "References", "Todo", "Return", "Yield")

# Google sections docstring-parser does not know by default: keyword arguments are parameters too, and the
# prose sections end the description (the model needs neither notes nor references to call a tool).
_GOOGLE = GoogleParser(
    [
        *DEFAULT_SECTIONS,
        *(Section(title, "param", SectionType.MULTIPLE) for title in _KEYWORD_TITLES),
        *(Section(title, title.lower(), SectionType.SINGULAR) for title in _PROSE_TITLES),
    ]
)


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
    parsed = _parse(text)
    if parsed is None:  # no style reads it (a malformed section): keep the text, describe no parameter
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


def _parse(text: str) -> docstring_parser.Docstring | None:
    """The reading of the style that finds the most sections and parameters, as docstring-parser's own
    automatic style does (with the extra Google sections above)."""
    readings = []
    for parse in (rest.parse, _GOOGLE.parse, numpydoc.parse, epydoc.parse):
        try:
            readings.append(parse(text))
        except docstring_parser.ParseError:
            continue
    return max(readings, key=lambda reading: len(reading.meta), default=None)
