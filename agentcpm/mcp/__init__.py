"""MCP tool servers: any Model Context Protocol server's tools, as agentcpm :class:`~agentcpm.Tool` objects.

Needs the optional extra: ``pip install "agentcpm[mcp]"`` (the official ``mcp`` SDK). Importing this
package does not import the SDK; starting a server does (and says how to install it when it is missing).

>>> from agentcpm.mcp import MCPServer                                          # doctest: +SKIP
>>> with MCPServer.stdio("python", ["server.py"], approval="allow") as server:  # doctest: +SKIP
...     Agent(client, tools=server.tools()).run("...")

See docs/mcp.md.
"""

from .config import load_mcp_config
from .errors import (
    MCPApprovalDenied,
    MCPConfigError,
    MCPConnectionError,
    MCPError,
    MCPTimeoutError,
    MCPToolError,
)
from .naming import amcp_tools, mcp_tools
from .server import Approval, MCPServer

__all__ = [
    "Approval",
    "MCPApprovalDenied",
    "MCPConfigError",
    "MCPConnectionError",
    "MCPError",
    "MCPServer",
    "MCPTimeoutError",
    "MCPToolError",
    "amcp_tools",
    "load_mcp_config",
    "mcp_tools",
]
