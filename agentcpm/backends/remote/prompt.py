"""TRANSITION: the text-format pieces live in :mod:`agentcpm.format.markup`."""

from ...format.markup import STOP_TOKEN_IDS, prompt_mode_messages, tools_system_prompt

__all__ = ["STOP_TOKEN_IDS", "prompt_mode_messages", "tools_system_prompt"]
