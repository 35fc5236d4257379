"""The earlier home of the parser, kept importable for one release: use :mod:`agentcpm.format`."""

from .format import ParsedOutput, StreamParser, convert_arguments, normalize_text, parse_output, render_tool_calls

__all__ = ["ParsedOutput", "StreamParser", "convert_arguments", "normalize_text", "parse_output", "render_tool_calls"]
