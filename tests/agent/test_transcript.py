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
from markup import call
from PIL import Image

from agentcpm import Agent, Client, Message, ScriptedBackend, ToolStarted, tool
from agentcpm.errors import TranscriptError
from agentcpm.tools import int_text
from agentcpm.transcript import Transcript, load_messages, save_messages


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
    from agentcpm.format import render_tool_calls

    def call(name):
        return render_tool_calls([{"name": name, "arguments": {}}])

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


# ---------------------------------------------------------------------------- hardening (issue 10)


def test_a_last_line_cut_inside_a_multibyte_character_is_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    save_messages(path, [Message("user", "hi"), Message("assistant", "hello")])
    record = {"type": "message", "step": 2, "message": {"role": "user", "content": "你好"}}
    line = json.dumps(record, ensure_ascii=False)
    encoded = line.encode()
    cut = encoded.index("你".encode()) + 1  # inside the first character's three bytes
    with open(path, "ab") as f:
        f.write(encoded[:cut])
    assert [m.text for m in load_messages(path)] == ["hi", "hello"]


def test_continuing_a_transcript_with_a_torn_last_line_repairs_it_first(tmp_path):
    path = tmp_path / "t.jsonl"
    Agent(Client(backend=ScriptedBackend(["one"]))).run("hi", transcript=path)
    with open(path, "ab") as f:
        f.write('{"type": "message", "step": 2, "message": {"role": "assistant", "content": "é'.encode()[:-1])
    history = Transcript.load(path)
    assert [m.text for m in history] == ["hi", "one"]
    Agent(Client(backend=ScriptedBackend(["two"]))).run("again", history=history, transcript=path)
    assert [m.text for m in Transcript.load(path)] == ["hi", "one", "again", "two"]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # the fragment is gone


def test_a_whole_last_record_without_its_newline_is_kept_when_continuing(tmp_path):
    path = tmp_path / "t.jsonl"
    save_messages(path, [Message("user", "hi")])
    record = {
        "type": "message",
        "step": 1,
        "message": {"role": "assistant", "content": [{"type": "text", "text": "yo"}]},
    }
    with open(path, "a") as f:
        f.write(json.dumps(record))  # no newline
    assert [m.text for m in Transcript.load(path)] == ["hi", "yo"]
    with Transcript(path) as t:
        t.message(Message("user", "more"), 1)
    assert [m.text for m in Transcript.load(path)] == ["hi", "yo", "more"]


@pytest.mark.parametrize(
    "damaged",
    [
        b'{"type": "message", "step": 1}',  # KeyError before
        b'{"type": "message", "step": 1, "message": 5}',  # TypeError / AttributeError
        b'{"type": "message", "step": 1, "message": {"role": "wizard", "content": []}}',  # pydantic
        b'{"type": "message", "step": 1, "message": {"content": [{"type": "text"}]}}',
        b'{"type": "message", "step": 1, "message": {"role": "user", "content": [5]}}',
        b'{"type": "message", "step": 1, "message": {"role": "assistant", "tool_calls": [{"x": []}]}}',
        b'{"type": ["run"]}',
        b"[1, 2, 3]",
        b'{"type": "message", "text": "\xff\xfe broken bytes"}',  # not UTF-8, in the middle
    ],
)
def test_a_damaged_middle_line_raises_transcript_error_naming_file_and_line(tmp_path, damaged):
    path = tmp_path / "t.jsonl"
    good = b'{"type": "run", "continues": false}\n'
    path.write_bytes(good + damaged + b"\n" + b'{"type": "end"}\n')
    with pytest.raises(TranscriptError, match=r"t\.jsonl:2 "):
        Transcript.load(path)


def test_model_output_with_a_lone_surrogate_is_written_and_loads_back(tmp_path):
    path = tmp_path / "t.jsonl"

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    backend = ScriptedBackend([call("echo", text="a\ud83db"), "broken emoji: \ud83d!"])
    result = Agent(Client(backend=backend), tools=[echo]).run("go", transcript=path)
    assert result.output == "broken emoji: \ud83d!"
    path.read_bytes().decode("utf-8")  # strict UTF-8 on disk
    loaded = Transcript.load(path)
    assert loaded[-1].text == "broken emoji: \ud83d!"
    assert loaded[1].tool_calls[0].arguments == {"text": "a\ud83db"}


def test_a_huge_integer_argument_is_written_and_loaded_exactly(tmp_path):
    path = tmp_path / "t.jsonl"
    huge = 10**5000 + 7
    seen = []

    @tool
    def count(n: int) -> str:
        """Count."""
        seen.append(n)
        return "counted"

    backend = ScriptedBackend([call("count", n=int_text(huge)), "ok"])
    result = Agent(Client(backend=backend), tools=[count]).run("go", transcript=path)
    assert result.output == "ok"
    assert len(seen) == 1 and seen[0] == huge  # (no ==-list: pytest's repr of a failure would hit the limit)
    assert Transcript.load(path)[1].tool_calls[0].arguments["n"] == huge


def test_each_tool_result_is_on_disk_as_soon_as_its_call_ends(tmp_path):
    path = tmp_path / "t.jsonl"
    seen_by_slow: list[bool] = []

    @tool
    def fast() -> str:
        """Fast."""
        return "fast done"

    @tool
    def slow() -> str:
        """Slow: waits for fast's result to be on disk."""
        deadline = time.monotonic() + 20
        while '"fast done"' not in path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_by_slow.append('"fast done"' in path.read_text())
        return "slow done"

    backend = ScriptedBackend([call("slow") + call("fast"), "ok"])
    result = Agent(Client(backend=backend), tools=[fast, slow]).run("go", transcript=path)
    assert seen_by_slow == [True]
    assert [m.text for m in result.messages if m.role == "tool"] == ["slow done", "fast done"]  # call order
    assert [m.text for m in Transcript.load(path) if m.role == "tool"] == ["slow done", "fast done"]


PARALLEL_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agentcpm import Agent, Client, Reply, ScriptedBackend, tool
    from agentcpm.format import render_tool_calls
    from agentcpm.transcript import Transcript

    transcript, folder, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def act(name):
        (folder / f"started-{name}").touch()
        while mode == "first" and not (folder / f"go-{name}").exists():
            time.sleep(0.01)
        with open(folder / "effects", "a") as f:  # the side effect that must happen exactly once
            f.write(name + "\\n")
        return f"{name} done"

    @tool
    def first() -> str:
        '''First action.'''
        return act("first")

    @tool
    def second() -> str:
        '''Second action.'''
        return act("second")

    calls = render_tool_calls([{"name": n, "arguments": {}} for n in ("first", "second")])
    agent_tools = [first, second]
    if mode == "first":
        backend = ScriptedBackend([calls, Reply("Still thinking about it all " * 20, chunk_size=1, chunk_delay=0.2)])
        Agent(Client(backend=backend), tools=agent_tools).run("Do both.", transcript=transcript)
    else:
        history = Transcript.load(transcript)
        result = Agent(Client(backend=ScriptedBackend(["All done."])), tools=agent_tools).run(
            history=history, transcript=transcript
        )
        print(result.output)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("release", "recorded"),
    [
        ((), ()),  # both running, neither finished
        (("first",), ("first",)),  # the first recorded, the second running
        (("second",), ("second",)),  # the second recorded first (out of call order), the first running
        (("first", "second"), ("first", "second")),  # both recorded, the next model answer streaming
    ],
)
def test_sigkill_during_parallel_calls_then_resume_runs_each_call_exactly_once(tmp_path, release, recorded):
    script, path = tmp_path / "run.py", tmp_path / "run.jsonl"
    script.write_text(PARALLEL_RUN)
    process = subprocess.Popen([sys.executable, str(script), str(path), str(tmp_path), "first"])
    try:

        def wait_for(condition) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                assert process.poll() is None, "the run ended before it was killed"
                assert time.monotonic() < deadline, "the run never got there"
                time.sleep(0.02)

        wait_for(lambda: (tmp_path / "started-first").exists() and (tmp_path / "started-second").exists())
        for name in release:
            (tmp_path / f"go-{name}").touch()
        wait_for(lambda: all(f'"{name} done"' in path.read_text() for name in recorded))
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)

    resumed = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path), "resume"], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "All done."
    assert sorted((tmp_path / "effects").read_text().split()) == ["first", "second"]  # each exactly once
    messages = Transcript.load(path)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m.text for m in messages if m.role == "tool"] == ["first done", "second done"]
