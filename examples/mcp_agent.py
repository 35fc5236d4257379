"""An agent whose tools come from an MCP server (examples/mcp_server.py, started over stdio).

    python examples/mcp_agent.py                       # a scripted model (ScriptedBackend): runs anywhere
    python examples/mcp_agent.py --base-url http://localhost:8000/v1 "Note that the demo is at 3 pm."
    python examples/mcp_agent.py --mcp-config mcp.json # the servers of an {"mcpServers": {...}} file

Needs ``pip install "agentcpm[mcp]"``. Without --base-url or --model the "model" replays what MiniCPM-V 4.6
writes here, so the example shows the whole loop (MCP tools listed, called, their image sent back) with no model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentcpm import Agent, Client, ContentDelta, ScriptedBackend, ToolFinished, ToolStarted
from agentcpm.format import render_tool_calls
from agentcpm.mcp import MCPServer, load_mcp_config, mcp_tools

SERVER = Path(__file__).with_name("mcp_server.py")

SCRIPT = [
    render_tool_calls([{"name": "add_note", "arguments": {"text": "The demo is at 3 pm."}}]),
    render_tool_calls([{"name": "list_notes", "arguments": {}}, {"name": "notes_picture", "arguments": {}}]),
    "Saved: the demo is at 3 pm. It is your only note so far.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="Note that the demo is at 3 pm, then show me my notes.")
    parser.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="model name on the server, or a checkpoint to run in-process")
    parser.add_argument("--mcp-config", help='an {"mcpServers": {...}} file instead of examples/mcp_server.py')
    args = parser.parse_args()

    if args.base_url or args.model:
        client = Client(base_url=args.base_url, model=args.model)
    else:
        print("(no --base-url or --model: using a scripted model)\n")
        client = Client(backend=ScriptedBackend(SCRIPT))

    # approval="allow": this example server only keeps notes in memory. The default, "ask", has the
    # agent ask before each call, since an MCP server can act on your machine.
    if args.mcp_config:
        servers = load_mcp_config(args.mcp_config)
    else:
        servers = [MCPServer.stdio(sys.executable, [str(SERVER)], name="notes", approval="allow", timeout=30)]
    try:
        tools = mcp_tools(servers)  # starts the servers; names two servers share get a server__ prefix
        print("MCP tools:", ", ".join(f"{t.name} ({t.mcp_server})" for t in tools))
        agent = Agent(client, tools=tools, system="Answer briefly.", max_steps=6)
        for event in agent.stream(args.question):
            if isinstance(event, ContentDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, ToolStarted):
                print(f"-> {event.call.name}({event.call.arguments})")
            elif isinstance(event, ToolFinished):
                images = len(event.result.images)
                outcome = event.result.text if event.error is None else f"error: {event.error}"
                print(f"<- {event.call.name}: {outcome!r}" + (f" + {images} image(s)" if images else ""))
        print()
    finally:
        for server in servers:
            server.close()  # stops the server process


if __name__ == "__main__":
    main()
