"""MiniCPM-V 4.6's text format, in one place: what the model writes and what its chat template writes for it.

The published chat template (``chat_template.jinja`` of the checkpoint) is the reference; every string here
matches it exactly. The parser (:mod:`agentcpm.format.parser`) reads the tags; the backends write tool
definitions, calls and results in this form where a server's own template cannot (``tool_mode="prompt"``).

>>> print(tool_response("Sunny, 24 C"))
<tool_response>
Sunny, 24 C
</tool_response>
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..types import Message, TextPart, ToolCall
from .coerce import int_text

# ---------------------------------------------------------------------------- tags

TOOL_CALL, TOOL_CALL_END = "<tool_call>", "</tool_call>"
FUNCTION, FUNCTION_END = "<function=", "</function>"
PARAMETER, PARAMETER_END = "<parameter=", "</parameter"  # the parser also accepts drifted closers
THINK, THINK_END = "<think>", "</think>"
TOOL_RESPONSE, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
#: Special tokens that end a turn; a server that does not stop on them may leak them into the text.
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
#: What the template writes to open the model's turn: with thinking off, an empty reasoning block is written
#: for the model; with thinking on, the model's text starts inside ``<think>``.
GENERATION_PROMPT = f"{IM_START}assistant\n{THINK}\n\n{THINK_END}\n\n"
GENERATION_PROMPT_THINKING = f"{IM_START}assistant\n{THINK}\n"

# ---------------------------------------------------------------------------- tool calls


def json_text(value: Any) -> str:
    """json.dumps as the chat template's tojson does it (ensure_ascii off), ints of any size included."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        pass
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return int_text(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}: {json_text(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _render_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json_text(value)
    if isinstance(value, int):
        return int_text(value)  # str() refuses ints above 4300 digits; booleans stay True/False
    return str(value)


def render_tool_calls(calls: Iterable[ToolCall | dict[str, Any]]) -> str:
    """Write calls exactly as the chat template renders them in the history (dict and list values as JSON,
    None as ``None``, booleans as ``True``/``False``). Accepts ToolCall objects or OpenAI tool_call dicts.

    >>> print(render_tool_calls([ToolCall(name="f", arguments={"x": 1})]))
    <tool_call>
    <function=f>
    <parameter=x>
    1
    </parameter>
    </function>
    </tool_call>
    """
    blocks = []
    for call in calls:
        if not isinstance(call, ToolCall):
            call = ToolCall.from_openai(call)
        parts = [f"<tool_call>\n<function={call.name}>\n"]
        for key, value in call.arguments.items():
            parts.append(f"<parameter={key}>\n{_render_value(value)}\n</parameter>\n")
        parts.append("</function>\n</tool_call>")
        blocks.append("".join(parts))
    return "\n".join(blocks)


# ---------------------------------------------------------------------------- tools in the prompt

#: ``<|endoftext|>`` and ``<|im_end|>``: without them some servers generate past the end of the answer.
STOP_TOKEN_IDS = [248044, 248046]


TOOLS_HEADER = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested "
    "within <tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language BEFORE the function call, "
    "but NOT after\n- If there is no function call available, answer the question like normal with your current "
    "knowledge and do not tell the user about function calls\n</IMPORTANT>"
)


def tools_system_prompt(tools: list[dict[str, Any]], system: str = "") -> str:
    """The system turn MiniCPM-V 4.6's chat template writes for ``tools``, followed by ``system``.

    For servers whose template has no tool section (Ollama's Modelfile): the model then sees exactly
    what it was trained on.

    >>> tools_system_prompt([{"type": "function", "function": {"name": "f"}}]).splitlines()[5]
    '{"type": "function", "function": {"name": "f"}}'
    """
    schemas = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    text = TOOLS_HEADER + schemas + TOOLS_INSTRUCTIONS
    system = system.strip()
    return f"{text}\n\n{system}" if system else text


def tool_response(text: str) -> str:
    """One tool result as the template writes it inside the user turn that follows the calls."""
    return f"{TOOL_RESPONSE}\n{text.strip()}\n{TOOL_RESPONSE_END}"


def prompt_mode_messages(messages: list[Message], tools: list[dict[str, Any]]) -> list[Message]:
    """The conversation as MiniCPM-V's chat template would write it, for servers without tool support.

    Tool definitions go into the system turn, assistant tool calls become markup in the text, and each
    run of tool results becomes one user turn of ``<tool_response>`` blocks.
    """
    system = ""
    if messages and messages[0].role == "system":
        system, messages = messages[0].text, messages[1:]
    out = [Message("system", tools_system_prompt(tools, system))]
    results: list[str] = []
    for message in messages:
        if message.role == "tool":
            results.append(tool_response(message.text))
            continue
        if results:
            out.append(Message("user", "\n".join(results)))
            results = []
        if message.role == "assistant" and message.tool_calls:
            text = message.text.strip()
            markup = render_tool_calls(message.tool_calls)
            content = f"{text}\n\n{markup}" if text else markup
            message = message.model_copy(update={"content": [TextPart(content)], "tool_calls": []})
        out.append(message)
    if results:
        out.append(Message("user", "\n".join(results)))
    return out
