"""Errors from MCP tool servers. Each names the server and says what to do.

They derive from :class:`~agentcpm.errors.AgentCPMError` and from the built-in exception a caller would
expect (``ConnectionError``, ``TimeoutError``, ``ValueError``). Raised inside a tool call, the agent hands
them back to the model as that tool's error (like any Python tool that raised), and the run goes on.
"""

from __future__ import annotations

from ..errors import AgentCPMError

__all__ = [
    "MCPApprovalDenied",
    "MCPConfigError",
    "MCPConnectionError",
    "MCPError",
    "MCPTimeoutError",
    "MCPToolError",
]


class MCPError(AgentCPMError):
    """Base class of the MCP errors; ``server`` is the name of the server concerned."""

    def __init__(self, message: str, server: str = "") -> None:
        super().__init__(message)
        self.server = server


class MCPConfigError(MCPError, ValueError):
    """An ``mcpServers`` config file or an :class:`~agentcpm.mcp.MCPServer` argument is wrong."""


class MCPConnectionError(MCPError, ConnectionError):
    """The server could not be started or reached, or it went away (its process exited, the URL stopped
    answering). The message says which server, what happened, and the end of its stderr when there is one."""


class MCPTimeoutError(MCPError, TimeoutError):
    """The server did not answer in time (starting up, listing tools, or running a tool)."""


class MCPToolError(MCPError):
    """The tool ran and reported an error (an ``isError`` result); the message is the server's text."""

    def __init__(self, message: str, server: str = "", tool: str = "") -> None:
        super().__init__(message, server)
        self.tool = tool


class MCPApprovalDenied(MCPError, PermissionError):
    """The server's approval callback did not allow the call, so it was not sent to the server."""
