"""MiniCPM-V 4.6's text format: the markup (:mod:`.markup`), the parser (:mod:`.parser`), the conversion of
tool-call arguments to the tools' schemas (:mod:`.arguments`) and the JSON-type coercion of values shared with
tool validation (:mod:`.coerce`).

>>> from agentcpm.format import parse_output
>>> parse_output("<tool_call>\\n<function=f>\\n</function>\\n</tool_call>").tool_calls[0].name
'f'
"""

from .arguments import convert_arguments
from .markup import STOP_TOKEN_IDS, prompt_mode_messages, render_tool_calls, tool_response, tools_system_prompt
from .parser import ParsedOutput, StreamParser, normalize_text, parse_output

__all__ = [
    "STOP_TOKEN_IDS",
    "ParsedOutput",
    "StreamParser",
    "convert_arguments",
    "normalize_text",
    "parse_output",
    "prompt_mode_messages",
    "render_tool_calls",
    "tool_response",
    "tools_system_prompt",
]
