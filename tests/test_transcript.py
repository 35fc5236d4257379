"""Transcripts: JSONL written as the run goes, images as files, loaded back to continue a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from agentcpm import Agent, Client, Message, ScriptedBackend, ToolStarted, tool
from agentcpm.errors import TranscriptError
from agentcpm.transcript import Transcript, load_messages, save_messages


def call(name: str, **arguments: object) -> str:
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in arguments.items())
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


@tool
def screenshot() -> list:
    """Take a screenshot."""
    return ["Screen:", Image.new("RGB", (32, 16), (10, 200, 30))]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_message_is_on_disk_as_it_happens_and_images_are_files(tmp_path):
    path = tmp_path / "runs" / "today.jsonl"
    on_disk_at_tool_start: list[list[str]] = []

    def watch(event):
        if isinstance(event, ToolStarted):
            on_disk_at_tool_start.append([r["type"] for r in lines(path)])

    backend = ScriptedBackend([call("screenshot"), "A green screen."])
    agent = Agent(Client(backend=backend), tools=[screenshot], system="S", on_event=watch)
    result = agent.run("What is on screen?", transcript=path)

    # When the tool starts, the model's call is already written (and flushed).
    assert on_disk_at_tool_start == [["run", "message", "message", "message"]]
    records = lines(path)
    expected = ["run", "message", "message", "message", "message", "step", "message", "step", "end"]
    assert [r["type"] for r in records] == expected
    assert records[-1]["output"] == "A green screen."
    text = path.read_text()
    assert "base64" not in text
    (image_ref,) = [
        p for r in records if r["type"] == "message" for p in r["message"]["content"] if p["type"] == "image"
    ]
    image_file = path.parent / image_ref["path"]
    assert image_file.parent == tmp_path / "runs" / "today.images"
    assert Image.open(image_file).getpixel((0, 0)) == (10, 200, 30)

    loaded = Transcript.load(path)
    assert [m.role for m in loaded] == [m.role for m in result.messages]
    assert loaded[3].images[0].open().getpixel((0, 0)) == (10, 200, 30)
    assert loaded[2].tool_calls[0].name == "screenshot"
    assert loaded[3].tool_call_id == loaded[2].tool_calls[0].id


def test_continuing_into_the_same_file_and_starting_over(tmp_path):
    path = tmp_path / "chat.jsonl"
    backend = ScriptedBackend(["Hello!", "Still here.", "New topic."])
    agent = Agent(Client(backend=backend))
    first = agent.run("hi", transcript=path)
    agent.run("are you there?", history=Transcript.load(path), transcript=path)
    assert [m.text for m in Transcript.load(path)] == ["hi", "Hello!", "are you there?", "Still here."]
    assert len(first.messages) == 2
    # A run without history starts a new conversation in the same file.
    agent.run("something else", transcript=path)
    assert [m.text for m in Transcript.load(path)] == ["something else", "New topic."]


def test_a_cut_off_last_line_is_skipped_and_damage_elsewhere_is_reported(tmp_path):
    path = tmp_path / "t.jsonl"
    save_messages(path, [Message("user", "hi"), Message("assistant", "hello")])
    with open(path, "a") as f:
        f.write('{"type": "message", "step": 1, "mess')  # the line in flight when the process died
    assert [m.text for m in load_messages(path)] == ["hi", "hello"]

    damaged = tmp_path / "d.jsonl"
    damaged.write_text('{"type": "run"}\nnot json\n{"type": "end"}\n')
    with pytest.raises(TranscriptError, match=r"d\.jsonl:2"):
        Transcript.load(damaged)
    with pytest.raises(TranscriptError, match="cannot read"):
        Transcript.load(tmp_path / "missing.jsonl")


KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from PIL import Image
    from agentcpm import Agent, Client, ScriptedBackend, tool

    def call(name):
        return f"<tool_call>\\n<function={name}>\\n</function>\\n</tool_call>"

    @tool
    def screenshot() -> Image.Image:
        '''Take a screenshot.'''
        return Image.new("RGB", (16, 16), (200, 0, 0))

    @tool
    def deploy() -> str:
        '''Deploy (slow).'''
        Path(sys.argv[2]).write_text("running")
        time.sleep(60)
        return "deployed"

    backend = ScriptedBackend([call("screenshot"), call("deploy"), "never"])
    Agent(Client(backend=backend), tools=[screenshot, deploy]).run("Deploy it.", transcript=sys.argv[1])
    """
)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_can_be_loaded_and_continued(tmp_path):
    script, path, marker = tmp_path / "run.py", tmp_path / "killed.jsonl", tmp_path / "marker"
    script.write_text(KILLED_RUN)
    process = subprocess.Popen([sys.executable, str(script), str(path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)

    messages = Transcript.load(path)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[2].images[0].open().getpixel((0, 0)) == (200, 0, 0)
    assert messages[3].tool_calls[0].name == "deploy"  # the step in flight: called, no result yet

    @tool
    def deploy() -> str:
        """Deploy (fast this time)."""
        return "deployed"

    backend = ScriptedBackend(["Deployed."])
    result = Agent(Client(backend=backend), tools=[screenshot, deploy]).run(history=messages, transcript=path)
    assert result.output == "Deployed."
    assert result.messages[4].role == "tool" and result.messages[4].text == "deployed"
    assert [m.role for m in Transcript.load(path)] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]


def test_continuing_with_a_system_prompt_writes_only_the_new_turn(tmp_path):
    path = tmp_path / "run.jsonl"
    Agent(Client(backend=ScriptedBackend(["one"]))).run("hi", transcript=path)
    history = Transcript.load(path)
    agent = Agent(Client(backend=ScriptedBackend(["two"])), system="Be brief.")
    result = agent.run("again", history=history, transcript=path)
    assert [m.role for m in result.messages] == ["system", "user", "assistant", "user", "assistant"]
    loaded = Transcript.load(path)
    assert [(m.role, m.text) for m in loaded] == [
        ("user", "hi"),
        ("assistant", "one"),
        ("user", "again"),
        ("assistant", "two"),
    ]
