"""An unattended automation: a nightly clean-up that stays in budget and leaves risky calls for a human.

The run has a budget (UsageLimits) and approval="later": reading the disk runs, deleting waits. The run ends
with the pending calls saved in its transcript; a later process (this script with --approve / --reject, or
`agentcpm resume`) decides them and the run goes on. Nothing runs twice, nothing unapproved runs.

    python examples/unattended.py                      # scripted model: runs anywhere, no server
    python examples/unattended.py --approve ID         # later, after reading the pending calls
    AGENTCPM_BASE_URL=http://localhost:8000/v1 python examples/unattended.py   # a real model (or several: u1,u2)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from agentcpm import Agent, Client, ScriptedBackend, tool
from agentcpm.agent import Rejected, UsageLimits
from agentcpm.errors import UsageLimitExceeded
from agentcpm.transcript import Transcript

TRANSCRIPT = Path("runs/cleanup.jsonl")


@tool
def disk_usage() -> str:
    """How full the disk is, and the largest folders."""
    return "disk 91% full; /var/log/app: 38 GB (logs from the last 120 days)"


@tool(requires_approval=True)
def delete_old_logs(days: int) -> str:
    """Delete the application's logs older than `days` days.

    Args:
        days: keep the logs of the last `days` days
    """
    return f"deleted logs older than {days} days; disk now 64% full"


def scripted() -> ScriptedBackend:
    """What the model would say, so the example runs without a server."""
    call = "<tool_call>\n<function={}>\n{}</function>\n</tool_call>"
    return ScriptedBackend(
        [
            call.format("disk_usage", ""),
            call.format("delete_old_logs", "<parameter=days>\n30\n</parameter>\n"),
            "The disk was 91% full; I deleted the logs older than 30 days and it is now 64% full.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approve", action="append", default=[], metavar="ID")
    parser.add_argument("--reject", action="append", default=[], metavar="ID[:MESSAGE]")
    args = parser.parse_args()

    client = Client() if os.environ.get("AGENTCPM_BASE_URL") else Client(backend=scripted())
    agent = Agent(
        client,
        tools=[disk_usage, delete_old_logs],
        approval="later",
        limits=UsageLimits(requests=8, total_tokens=50_000, seconds=300, final_answer=True),
    )
    decisions: dict[str, bool | Rejected] = {call_id: True for call_id in args.approve}
    for item in args.reject:
        call_id, _, message = item.partition(":")
        decisions[call_id] = Rejected(message or None)
    try:
        if decisions:  # a later process: continue the saved run with the decisions
            history = Transcript.load(TRANSCRIPT)
            result = agent.run(history=history, transcript=TRANSCRIPT, approvals=decisions)
        else:
            TRANSCRIPT.unlink(missing_ok=True)
            result = agent.run("Check the disk and free space if it is over 90% full.", transcript=TRANSCRIPT)
    except UsageLimitExceeded as exc:
        print(f"stopped: {exc}")
        return
    if result.pending:
        print("waiting for approval:")
        for call in result.pending:
            print(f"  {call.id}: {call.tool}({call.arguments})  - {call.reason}")
        ids = " ".join(f"--approve {call.id}" for call in result.pending)
        print(f"decide with: python examples/unattended.py {ids}   (or agentcpm resume {TRANSCRIPT})")
        if isinstance(client.backend, ScriptedBackend):  # the scripted model lives in this process only:
            print("(scripted model: deciding now, as a later process would)")
            approved = {call.id: True for call in Transcript.load_pending(TRANSCRIPT)}
            result = agent.run(history=Transcript.load(TRANSCRIPT), transcript=TRANSCRIPT, approvals=approved)
    if result.output is not None:
        print(result.output)
        print(f"({result.usage.requests} requests, {result.usage.tool_calls} tool calls)")


if __name__ == "__main__":
    main()
