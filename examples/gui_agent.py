"""A GUI agent: MiniCPM-V sees the screen and works the mouse and keyboard, asking before every action.

    pip install "agentcpm[gui]"
    AGENTCPM_BASE_URL=http://localhost:8000/v1 python examples/gui_agent.py "Open the File menu"

Without AGENTCPM_BASE_URL the model runs in this process. AGENTCPM_DRY_RUN=1 records actions without doing them.
"""

import os
import sys

from agentcpm import Agent, Client
from agentcpm.screen import screen_tools

agent = Agent(
    Client(),
    tools=screen_tools(actions=True, dry_run=os.environ.get("AGENTCPM_DRY_RUN") == "1"),
    system="You operate this computer. Look with screenshot (zoom to read small text), then act. "
    "Points are 0..1000 across the latest screenshot.",
    approval="ask",  # every click, keystroke and scroll waits for y/N in this terminal
    parallel_tool_calls=False,  # GUI actions one at a time, in order
    max_steps=30,
)
print(agent.run(" ".join(sys.argv[1:]) or "What is on the screen?").output)
