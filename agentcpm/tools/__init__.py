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

The package: :mod:`.definition` (Tool, @tool, as_tools), :mod:`.schema` (the JSON schema from the signature,
validation messages), :mod:`.docstrings` (descriptions, by ``docstring-parser``), :mod:`.content` (return
values -> content parts), :mod:`.threads` (the daemon worker pool for sync tools), :mod:`.display` (calls
shown for approval). The JSON-type check shared with the parser lives in :mod:`agentcpm.format.coerce`.
"""

from ..format.coerce import dumps_exact, int_text, text_int
from .content import to_content
from .definition import Tool, ToolArgumentsError, as_tools, tool
from .display import display_arguments, display_call, display_text
from .docstrings import parse_docstring
from .schema import _check_json_schema as _check_json_schema  # private: used by agentcpm.mcp and tests
from .schema import _clean_schema as _clean_schema
from .schema import format_validation_error
from .threads import DEFAULT_THREAD_LIMIT, run_in_thread, set_thread_limit
from .threads import _DaemonThreads as _DaemonThreads

__all__ = [
    "DEFAULT_THREAD_LIMIT",
    "Tool",
    "ToolArgumentsError",
    "as_tools",
    "display_arguments",
    "display_call",
    "display_text",
    "dumps_exact",
    "format_validation_error",
    "int_text",
    "parse_docstring",
    "run_in_thread",
    "set_thread_limit",
    "text_int",
    "to_content",
    "tool",
]
