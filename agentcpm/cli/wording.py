"""Errors as one line that says what to do, with the command's flags instead of Python's arguments."""

from __future__ import annotations

import re

# The library's messages name Python arguments; on the command line they are flags.
_PYTHON_ARGUMENTS = re.compile(
    r"\bClient\((model|base_url|api_key)=([^)]*)\)"  # Client(model=PATH)
    r"|(?<![\w.?&/=-])(model|base_url|api_key)=(\S*)"  # model=PATH, but not ?model= in a URL
)
_BARE_ARGUMENTS = re.compile(r"(?<![\w.?&/=-])(base_url|api_key)\b")  # "fix base_url", "leave base_url out"
_FLAG_VALUES = {"model": "NAME", "base_url": "URL", "api_key": "KEY"}


def cli_wording(message: str) -> str:
    """``Client(model=PATH)``, ``base_url=URL`` and ``model=...`` in a library message -> ``--model PATH``,
    ``--base-url URL``, ``--model NAME``.

    >>> cli_wording("pass a checkpoint folder (model=PATH) or use a server (Client(base_url=...))")
    'pass a checkpoint folder (--model PATH) or use a server (--base-url URL)'
    >>> cli_wording("fix base_url, or leave base_url out")
    'fix --base-url, or leave --base-url out'
    """

    def flag(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        value = match.group(2) if match.group(1) else match.group(4)
        if not value or value.startswith("..."):
            value = _FLAG_VALUES[name] + (value[3:] if value else "")
        return f"--{name.replace('_', '-')} {value}"

    message = _PYTHON_ARGUMENTS.sub(flag, message)
    return _BARE_ARGUMENTS.sub(lambda match: "--" + match.group(1).replace("_", "-"), message)


def friendly_error(exc: BaseException) -> str:
    """One line that says what went wrong and what to do (with the command's flags, not Python's arguments)."""
    from ..errors import AgentCPMError
    from ..mcp.errors import MCPError

    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = cli_wording(message)
    if isinstance(exc, MCPError):  # what a server printed before it failed (its stderr's end) says why
        rest = str(exc).strip().splitlines()[1:]
        return "\n  ".join([f"error: {message}", *rest])
    if isinstance(exc, AgentCPMError):
        return f"error: {message}"
    return f"error: {type(exc).__name__}: {message} (run with --verbose for the traceback)"


# ---------------------------------------------------------------------------- commands
