"""An MCP server for agentcpm's tests, written with the ``mcp`` SDK's server API (FastMCP).

    python demo_server.py                 # stdio
    python demo_server.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp

Tools: ``echo`` (text), ``add`` (structured result), ``get_weather`` (the tiny model's scripted call),
``picture`` (an image), ``report`` (an embedded text resource), ``fail`` (an isError result), ``hang``
(sleeps), ``crash`` (the process exits mid-call), ``pid`` (its process id), ``grow`` (adds a tool and
sends tools/list_changed), ``needs_token`` (the Authorization header it got, over HTTP).
"""

from __future__ import annotations

import io
import os
import sys

import anyio
from mcp import types
from mcp.server.fastmcp import Context, FastMCP, Image
from PIL import Image as PILImage

PORT = int(sys.argv[sys.argv.index("--http") + 1]) if "--http" in sys.argv else 8000
server = FastMCP("demo", host="127.0.0.1", port=PORT, log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Repeat the text."""
    return text


@server.tool()
def add(a: int, b: int) -> dict:
    """Add two integers."""
    return {"sum": a + b}


@server.tool()
def get_weather(city: str) -> str:
    """Get the weather.

    Args:
        city: City name.
    """
    return f"sunny, 21 C in {city}"


@server.tool()
def picture(color: str = "red") -> Image:
    """A small picture of one color."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (32, 24), color).save(buffer, format="PNG")
    return Image(data=buffer.getvalue(), format="png")


@server.tool()
def report() -> types.EmbeddedResource:
    """A report, as an embedded resource."""
    contents = types.TextResourceContents(uri="file:///report.txt", mimeType="text/plain", text="all systems go")
    return types.EmbeddedResource(type="resource", resource=contents)


@server.tool()
def fail(message: str) -> str:
    """Always fails."""
    raise ValueError(message)


@server.tool()
async def hang(seconds: float = 60.0) -> str:
    """Sleep, then answer (the server keeps answering other calls meanwhile)."""
    await anyio.sleep(seconds)
    return "woke up"


@server.tool()
def crash() -> str:
    """The server process exits in the middle of the call."""
    print("demo server: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a tool named 'extra' and tell the client that the tool list changed."""

    def extra() -> str:
        """A tool added at run time."""
        return "extra!"

    server.add_tool(extra)
    await ctx.session.send_tool_list_changed()
    return "added extra"


@server.tool()
def needs_token(ctx: Context) -> str:
    """The Authorization header of the HTTP request (empty over stdio)."""
    request = ctx.request_context.request
    return request.headers.get("authorization", "") if request is not None else ""


if __name__ == "__main__":
    server.run("streamable-http" if "--http" in sys.argv else "stdio")
