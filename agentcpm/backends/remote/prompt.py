"""MiniCPM-V 4.6's tool format written into the prompt, for servers whose template has no tool section.

TRANSITION: these are text-format pieces; they move to ``agentcpm/format/markup.py`` (the lead's work), and
this module then imports them from there.
"""

from __future__ import annotations

import json
from typing import Any

from ...parsing import render_tool_calls
from ...types import Message, TextPart

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
            results.append(f"<tool_response>\n{message.text.strip()}\n</tool_response>")
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
