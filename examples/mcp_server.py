"""A small MCP server for examples/mcp_agent.py: notes kept in memory, and a picture of them.

    python examples/mcp_server.py                  # stdio (what mcp_agent.py starts)
    python examples/mcp_server.py --http 8000      # streamable HTTP on http://127.0.0.1:8000/mcp

Written with the official ``mcp`` SDK (``pip install "agentcpm[mcp]"``); any MCP client can use it.
"""

from __future__ import annotations

import io
import sys

from mcp.server.fastmcp import FastMCP, Image
from PIL import Image as PILImage
from PIL import ImageDraw

PORT = int(sys.argv[sys.argv.index("--http") + 1]) if "--http" in sys.argv else 8000
server = FastMCP("notes", host="127.0.0.1", port=PORT, log_level="WARNING")
NOTES: list[str] = []


@server.tool()
def add_note(text: str) -> str:
    """Save a short note.

    Args:
        text: The note.
    """
    NOTES.append(text)
    return f"saved note {len(NOTES)}"


@server.tool()
def list_notes() -> str:
    """All saved notes, one per line."""
    return "\n".join(f"{n}. {note}" for n, note in enumerate(NOTES, 1)) or "no notes yet"


@server.tool()
def notes_picture() -> Image:
    """The notes drawn on a sticky note, as an image."""
    picture = PILImage.new("RGB", (320, 40 + 24 * max(1, len(NOTES))), (255, 240, 150))
    draw = ImageDraw.Draw(picture)
    for n, note in enumerate(NOTES or ["(empty)"]):
        draw.text((16, 20 + 24 * n), note, fill=(40, 40, 40))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Image(data=buffer.getvalue(), format="png")


if __name__ == "__main__":
    server.run("streamable-http" if "--http" in sys.argv else "stdio")
