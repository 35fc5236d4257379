"""Unattended runs: approval later (across processes, from the transcript) and budgets (UsageLimits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from openai_server import OpenAIServer, ServerReply

from agentcpm import Agent, Client, ScriptedBackend, tool
from agentcpm.agent import PendingCall, Rejected, UsageLimits
from agentcpm.errors import ConfigurationError, UsageLimitExceeded
from agentcpm.transcript import Transcript
from agentcpm.types import Completion, ImagePart, ToolCall, Usage

ROOT = Path(__file__).resolve().parents[2]


def call(tool_name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": tool_name, "arguments": arguments}


# ---------------------------------------------------------------------------- approval later, two processes

# The script each process runs: tools that log every run to a file, approval="later", the transcript.
PROCESS = textwrap.dedent(
    """
    import json, sys
    from agentcpm import Agent, Client, tool
    from agentcpm.agent import Rejected
    from agentcpm.transcript import Transcript

    base_url, path, log, mode = sys.argv[1:5]

    @tool(requires_approval=True)
    def delete(name: str) -> str:
        '''Delete a file.'''
        with open(log, "a") as f:
            f.write(f"delete {name}\\n")
        return f"deleted {name}"

    @tool
    def listing() -> str:
        '''List the files.'''
        with open(log, "a") as f:
            f.write("listing\\n")
        return "a.txt b.txt"

    agent = Agent(Client(base_url=base_url, model="m"), tools=[delete, listing], approval="later")
    if mode == "start":
        result = agent.run("Clean up", transcript=path)
    else:
        decisions = json.loads(sys.argv[5])
        approvals = {k: True if v is True else Rejected(v) for k, v in decisions.items()}
        result = agent.run(history=Transcript.load(path), transcript=path, approvals=approvals)
    print(json.dumps({"output": result.output, "pending": [p.to_dict() for p in result.pending]}))
    """
)


def run_process(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "process.py"
    script.write_text(PROCESS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_approval_later_across_two_processes(tmp_path: Path) -> None:
    path, log = tmp_path / "run.jsonl", tmp_path / "tools.log"
    first = ServerReply(
        tool_calls=[call("listing", "c_list"), call("delete", "c_a", name="a.txt"), call("delete", "c_b", name="b.txt")]
    )
    with OpenAIServer([first, "Deleted a.txt; b.txt was kept."]) as server:
        started = run_process(tmp_path, server.base_url, str(path), str(log), "start")
        assert started.returncode == 0, started.stderr
        out = json.loads(started.stdout)
        assert out["output"] is None
        assert [(p["id"], p["tool"], p["arguments"]) for p in out["pending"]] == [
            ("c_a", "delete", {"name": "a.txt"}),
            ("c_b", "delete", {"name": "b.txt"}),
        ]
        assert "requires_approval" in out["pending"][0]["reason"]
        assert log.read_text() == "listing\n"  # the call that needs no approval ran; the others wait
        pending = Transcript.load_pending(path)
        assert [p.id for p in pending] == ["c_a", "c_b"]
        assert len(server.requests) == 1

        decisions = json.dumps({"c_a": True, "c_b": "keep b, it is still used"})
        resumed = run_process(tmp_path, server.base_url, str(path), str(log), "resume", decisions)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout) == {"output": "Deleted a.txt; b.txt was kept.", "pending": []}
        assert log.read_text() == "listing\ndelete a.txt\n"  # nothing twice, b never
        sent = server.requests[1]["messages"]
        results = {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}
        assert results["c_list"] == "a.txt b.txt" and results["c_a"] == "deleted a.txt"
        assert "did not allow delete" in results["c_b"] and "keep b, it is still used" in results["c_b"]
        assert [m["role"] for m in sent].count("assistant") == 1  # the same conversation, not a new one

        # Deciding again: nothing is pending any more, so nothing runs.
        again = run_process(tmp_path, server.base_url, str(path), str(log), "resume", decisions)
        assert again.returncode != 0 and "no pending call with id 'c_a'" in again.stderr
        assert log.read_text() == "listing\ndelete a.txt\n"
        assert Transcript.load_pending(path) == []


@tool(requires_approval=True)
def wipe(target: str) -> str:
    """Wipe a target."""
    WIPED.append(target)
    return f"wiped {target}"


WIPED: list[str] = []


def test_undecided_calls_stay_pending_and_new_input_waits(tmp_path: Path) -> None:
    WIPED.clear()
    backend = ScriptedBackend(
        [
            Completion(
                tool_calls=[ToolCall(id="w1", name="wipe", arguments={"target": "x"})], finish_reason="tool_calls"
            ),
            "done",
        ]
    )
    agent = Agent(Client(backend=backend), tools=[wipe], approval="later")
    result = agent.run("wipe x")
    assert result.pending == [PendingCall("w1", "wipe", {"target": "x"}, "wipe is marked requires_approval", 1)]
    again = agent.run(history=result.messages)  # no decision: still pending, the model is not asked again
    assert [p.id for p in again.pending] == ["w1"] and len(backend.requests) == 1 and WIPED == []
    with pytest.raises(ConfigurationError, match="still pending"):
        agent.run("and y", history=result.messages)
    with pytest.raises(ConfigurationError, match="True, False or Rejected"):
        agent.run(history=result.messages, approvals={"w1": "yes"})  # type: ignore[dict-item]
    done = agent.run(history=result.messages, approvals={"w1": False})
    assert done.output == "done" and WIPED == []
    assert "did not allow wipe" in backend.requests[1].messages[-1].text


def test_approval_later_without_tty_never_blocks_and_allow_runs_directly() -> None:
    WIPED.clear()
    backend = ScriptedBackend([Completion(tool_calls=[ToolCall(id="w", name="wipe", arguments={"target": "y"})]), "ok"])
    result = Agent(Client(backend=backend), tools=[wipe], approval="later").run("go")
    assert result.pending and WIPED == []
    assert (
        Agent(Client(backend=backend), tools=[wipe], approval="later")
        .run(history=result.messages, approvals={"w": True})
        .output
        == "ok"
    )
    assert WIPED == ["y"]


# ---------------------------------------------------------------------------- budgets


@tool
def look(what: str) -> str:
    """Look at something."""
    LOOKED.append(what)
    return f"{what} looks fine"


LOOKED: list[str] = []


def calls_then_answer(steps: int, prompt: int = 10, completion: int = 5) -> list[Any]:
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
    script: list[Any] = [
        Completion(
            tool_calls=[ToolCall(name="look", arguments={"what": f"item{i}"})], usage=usage, finish_reason="tool_calls"
        )
        for i in range(steps)
    ]
    return [*script, Completion(content="all fine", usage=usage, finish_reason="stop")]


@pytest.mark.parametrize(
    ("limits", "limit", "requests", "looked"),
    [
        (UsageLimits(requests=2), "requests", 2, 2),
        (UsageLimits(tool_calls=2), "tool_calls", 3, 2),  # the third answer's call is not run
        (UsageLimits(input_tokens=25), "input_tokens", 3, 2),  # 30 > 25 after the third answer
        (UsageLimits(output_tokens=10), "output_tokens", 2, 2),  # 10 reached: no third request
        (UsageLimits(total_tokens=40), "total_tokens", 3, 2),  # 45 > 40 after the third answer
    ],
)
def test_each_budget_ends_the_run_once_with_its_error(
    limits: UsageLimits, limit: str, requests: int, looked: int, tmp_path: Path
) -> None:
    LOOKED.clear()
    backend = ScriptedBackend(calls_then_answer(5))
    agent = Agent(Client(backend=backend), tools=[look], limits=limits)
    with pytest.raises(UsageLimitExceeded) as info:
        agent.run("check everything", transcript=tmp_path / "t.jsonl")
    assert info.value.limit == limit and info.value.value == getattr(limits, limit)
    assert len(backend.requests) == requests and len(LOOKED) == looked
    assert info.value.messages[0].text == "check everything"
    # Every call the model made is answered (not run ones say so): no later process runs them.
    messages = Transcript.load(tmp_path / "t.jsonl")
    assert not [c for m in messages for c in m.tool_calls if c.id not in {r.tool_call_id for r in messages}]


def test_per_run_limits_replace_the_agents() -> None:
    LOOKED.clear()
    agent = Agent(Client(backend=ScriptedBackend(calls_then_answer(2))), tools=[look], limits=UsageLimits(requests=1))
    assert agent.run("go", limits=UsageLimits(requests=5)).output == "all fine"


def test_images_budget_counts_each_image_per_request() -> None:
    image = ImagePart(Image_bytes())
    backend = ScriptedBackend(calls_then_answer(3))
    agent = Agent(Client(backend=backend), tools=[look], limits=UsageLimits(images=2))
    with pytest.raises(UsageLimitExceeded) as info:
        agent.run("what is this?", images=[image])
    assert info.value.limit == "images" and len(backend.requests) == 2 and info.value.usage.images == 2


def Image_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_time_limit_covers_tools_and_stops_a_running_tool() -> None:
    @tool
    def slow() -> str:
        """Take long."""
        time.sleep(3)
        return "late"

    backend = ScriptedBackend([Completion(tool_calls=[ToolCall(name="slow")]), "never"])
    agent = Agent(Client(backend=backend), tools=[slow], limits=UsageLimits(seconds=0.5))
    with pytest.raises(UsageLimitExceeded) as info:
        agent.run("go")
    assert info.value.limit == "seconds" and len(backend.requests) == 1
    assert "time limit ran out" in info.value.messages[-1].text


def test_time_limit_bounds_a_request_over_http() -> None:
    with OpenAIServer([ServerReply("slow", delay=3)]) as server:
        agent = Agent(Client(base_url=server.base_url, model="m"), limits=UsageLimits(seconds=0.5))
        with pytest.raises(UsageLimitExceeded) as info:
            agent.run("hi")
    assert info.value.limit == "seconds"


def test_final_answer_when_a_limit_is_reached() -> None:
    LOOKED.clear()
    backend = ScriptedBackend([*calls_then_answer(5)[:2], "Here is what I found."])
    agent = Agent(Client(backend=backend), tools=[look], limits=UsageLimits(requests=2, final_answer=True))
    result = agent.run("check")
    assert result.output == "Here is what I found." and result.limit == "requests"
    assert len(backend.requests) == 3 and backend.requests[2].tools == []  # one more, without tools
    assert "requests limit" in backend.requests[2].messages[-1].text or "model requests" in (
        backend.requests[2].messages[-1].text
    )


def test_final_answer_after_too_many_calls_runs_none_of_them() -> None:
    LOOKED.clear()
    backend = ScriptedBackend([*calls_then_answer(1)[:1], "Summary."])
    agent = Agent(Client(backend=backend), tools=[look], limits=UsageLimits(tool_calls=0, final_answer=True))
    result = agent.run("check")
    assert result.output == "Summary." and result.limit == "tool_calls" and LOOKED == []
    assert "Not run" in backend.requests[1].messages[-2].text


def test_usage_limits_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        UsageLimits(requests=-1)
    with pytest.raises(ConfigurationError):
        Agent(Client(backend=ScriptedBackend([])), limits={"requests": 1})  # type: ignore[arg-type]
    assert Rejected().message is None


# ---------------------------------------------------------------------------- the command line


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_cli_run_approve_later_then_resume_rejects_with_a_message(home: Path, tmp_path: Path, xvfb: Any) -> None:
    from cli_process import agentcpm

    transcript = str(tmp_path / "run.jsonl")
    with OpenAIServer([ServerReply(tool_calls=[call("press", "k1", keys="ctrl+s")]), "Left it unsaved."]) as server:
        common = ("--base-url", server.base_url, "--tools", "gui")
        started = agentcpm(
            home, "run", "Save the file", *common, "--approve", "later", "--transcript", transcript, DISPLAY=xvfb.name
        )
        assert started.returncode == 3, started.stderr
        assert "k1" in started.stdout and "press" in started.stdout and "waiting for approval" in started.stdout
        assert [p.id for p in Transcript.load_pending(transcript)] == ["k1"]
        resumed = agentcpm(home, "resume", transcript, "--reject", "k1:not now", *common, DISPLAY=xvfb.name)
        assert resumed.returncode == 0, resumed.stderr
        assert "Left it unsaved." in resumed.stdout
        result = next(m for m in server.requests[1]["messages"] if m["role"] == "tool")
        assert "not now" in result["content"] and result["tool_call_id"] == "k1"
        unknown = agentcpm(home, "resume", transcript, "--approve", "k1", *common, DISPLAY=xvfb.name)
        assert unknown.returncode == 1 and "no pending call with id k1" in unknown.stderr


def test_cli_approve_later_needs_a_transcript_and_budget_flags_stop_the_run(home: Path) -> None:
    from cli_process import agentcpm

    with OpenAIServer(default=ServerReply(tool_calls=[call("look", "x1", what="a")])) as server:
        common = ("--base-url", server.base_url, "--tools", "none")
        later = agentcpm(home, "run", "go", *common, "--approve", "later", "--no-log")
        assert later.returncode == 1 and "--approve later needs a transcript" in later.stderr
        limited = agentcpm(home, "run", "go", *common, "--max-requests", "2", "--no-log")
        assert limited.returncode == 1 and "model requests limit" in limited.stderr
        assert len(server.requests) == 2


def test_the_unattended_example_runs_on_the_scripted_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCPM_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "unattended.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "waiting for approval" in done.stdout and "now 64% full" in done.stdout
    assert Transcript.load_pending(tmp_path / "runs" / "cleanup.jsonl") == []
