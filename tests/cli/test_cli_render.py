"""What the terminal shows for an event stream, and how typed or pasted image paths are read."""

from __future__ import annotations

import argparse
from io import StringIO
from pathlib import Path

import pytest
from markup import call
from rich.console import Console

from agentcpm import Client, Reply, ScriptedBackend
from agentcpm.cli.app import parse_args
from agentcpm.cli.render import TurnView, describe_result, format_arguments, preview
from agentcpm.cli.repl import split_image_paths
from agentcpm.cli.shared import image_source
from agentcpm.types import ContentDelta, ReasoningDelta, ToolCall, ToolCallFinished, ToolResult

CALL = call("click", x=500, y=120)


def render(events: list[object], **options: bool) -> str:
    out = StringIO()
    with TurnView(Console(file=out, width=80), **options) as view:
        for event in events:
            view.show(event)
    return out.getvalue()


def test_a_streamed_answer_is_rendered_as_markdown() -> None:
    backend = ScriptedBackend([Reply("# Plan\n\n- **first** step\n- second step\n", chunk_size=3)])
    shown = render(list(Client(backend=backend).stream("hi")))
    assert "Plan" in shown and "• first step" in shown and "• second step" in shown
    assert "**" not in shown and "#" not in shown


def test_reasoning_is_shown_before_the_answer_and_can_be_hidden() -> None:
    events = [ReasoningDelta("Let me think."), ContentDelta("Answer.")]
    shown = render(events)
    assert shown.index("Let me think.") < shown.index("Answer.")
    assert "Let me think." not in render(events, show_reasoning=False)


def test_tool_calls_show_their_arguments() -> None:
    backend = ScriptedBackend([f"I will click.\n{CALL}"])
    shown = render(list(Client(backend=backend).stream("click it")))
    assert "I will click." in shown
    assert "→ click(x='500', y='120')" in shown


def test_a_cut_off_call_says_it_will_not_run() -> None:
    call = ToolCall(name="click", arguments={"x": 5}, complete=False)
    assert "cut off, not run" in render([ToolCallFinished(0, call)])


def test_tool_results_and_errors_show_with_durations() -> None:
    from agentcpm.agent import ToolRunFinished

    call = ToolCall(name="lookup", arguments={"word": "x"})
    ok = ToolRunFinished(1, call, ToolResult(call_id=call.id, name="lookup", content="a letter"), None, 0.25)
    failed = ToolRunFinished(1, call, None, "ValueError: no such word", 0.01)  # type: ignore[arg-type]
    shown = render([ok, failed])
    assert "← lookup (0.25 s): a letter" in shown
    assert "✗ lookup failed (0.01 s): ValueError: no such word" in shown


def test_result_text_and_images_are_summarised() -> None:
    from PIL import Image

    result = ToolResult(call_id="c", name="shot", content=["see this", Image.new("RGB", (30, 20))])
    assert describe_result(result) == "see this [image 30x20]"
    assert preview("x" * 1000).endswith("…") and len(preview("x" * 1000)) <= 301
    assert format_arguments({"text": "y" * 500}).endswith("…")


def test_output_to_a_file_has_no_control_codes() -> None:
    shown = render([ContentDelta("plain")])
    assert "\x1b" not in shown and shown.strip() == "plain"


@pytest.mark.parametrize(
    "typed",
    [
        "'{folder}/my cat.png' what is it?",  # dragged, quoted
        '"{folder}/my cat.png" what is it?',
        "{folder}/my\\ cat.png what is it?",  # dragged, backslash-escaped
        "file://{folder}/my%20cat.png what is it?",  # pasted from a file manager
    ],
)
def test_pasted_and_dragged_paths_are_recognised(tmp_path: Path, typed: str) -> None:
    (tmp_path / "my cat.png").write_bytes(b"")
    paths, text = split_image_paths(typed.format(folder=tmp_path))
    assert paths == [str(tmp_path / "my cat.png")] and text == "what is it?"


def test_text_that_is_not_a_path_stays_text(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert split_image_paths(f"{tmp_path}/notes.txt please") == ([], f"{tmp_path}/notes.txt please")
    assert split_image_paths("/help") == ([], "/help")
    assert split_image_paths("missing.png is a file name") == ([], "missing.png is a file name")
    assert split_image_paths("https://example.com/cat.jpg and?") == (["https://example.com/cat.jpg"], "and?")


def test_image_source_forms() -> None:
    assert image_source("~/a.png").endswith("/a.png") and not image_source("~/a.png").startswith("~")
    assert image_source("'x y.png'") == "x y.png"
    assert image_source("https://e.com/a.png") == "https://e.com/a.png"


def test_options_go_before_or_after_the_command() -> None:
    before = parse_args(["--base-url", "http://h/v1", "ask", "q", "--json"])
    after = parse_args(["ask", "q", "--base-url", "http://h/v1", "--thinking"])
    assert before.base_url == after.base_url == "http://h/v1"
    assert after.thinking and not before.thinking
    assert parse_args([]).command == "chat"
    assert isinstance(parse_args(["doctor"]), argparse.Namespace)
    with pytest.raises(SystemExit):
        parse_args(["watch", "q"])  # --every is required


def test_arguments_show_while_the_call_is_written() -> None:
    from agentcpm.types import ToolCallArgumentsDelta, ToolCallStarted

    view = TurnView(Console(file=StringIO(), width=100))
    view.show(ToolCallStarted(0, "c1", "type_text"))
    view.show(ToolCallArgumentsDelta(0, "c1", "text", "Dear Sir,\nI am wri"))
    live = StringIO()
    Console(file=live, width=100).print(view)  # what the live region shows right now
    assert "calling type_text(text='Dear Sir,\\nI am wri'" in live.getvalue()
