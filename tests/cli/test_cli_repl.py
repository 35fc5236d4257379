"""The REPL's commands in-process: typed lines in, what the console shows and what the model was sent out.
(The real-terminal behaviour, Ctrl-C, readline and approval prompts, is in tests/test_repl.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

from markup import call
from rich.console import Console

from agentcpm import Client, ScriptedBackend, tool
from agentcpm.cli.app import parse_args
from agentcpm.cli.repl import Repl


@tool
def explode(reason: str) -> str:
    """Fail on purpose.

    Args:
        reason: Why.
    """
    raise ValueError(f"boom: {reason}")


def repl(script: list[Any], lines: list[str], *extra: str) -> tuple[str, ScriptedBackend, Repl]:
    """Run a REPL over ``lines`` (then Ctrl-D) with a scripted model; returns what it showed."""
    backend = ScriptedBackend(script)
    out = StringIO()
    typed: Iterator[str] = iter(lines)

    def read(prompt: str) -> str:
        out.write(prompt)
        line = next(typed, None)
        if line is None:
            raise EOFError
        out.write(line + "\n")
        return line

    session = Repl(
        parse_args(["chat", "--approve", "deny", *extra]),
        console=Console(file=out, width=100),
        client=Client(backend=backend),
        tools=[explode],
        read=read,
    )
    assert session.run() == 0
    return out.getvalue(), backend, session


def test_a_tool_that_raises_is_shown_and_the_answer_follows() -> None:
    shown, backend, _ = repl([call("explode", reason="test"), "It failed, sorry."], ["Try it."])
    assert "→ explode(reason='test')" in shown
    assert "✗ explode failed" in shown and "boom: test" in shown
    assert shown.index("boom: test") < shown.index("It failed, sorry.")
    assert len(backend.requests) == 2


def test_think_turns_reasoning_on_and_shows_it() -> None:
    shown, backend, _ = repl(["Because it is.</think>\n\nThe answer."], ["/think", "Why?"])
    assert "reasoning on" in shown
    assert backend.requests[0].options.thinking is True
    assert shown.index("Because it is.") < shown.index("The answer.")


def test_conversation_usage_and_reset() -> None:
    shown, backend, session = repl(
        ["First answer.", "Second answer.", "Fresh answer."],
        ["one", "two", "/usage", "/reset", "three"],
    )
    assert [m.text for m in backend.requests[1].messages] == ["one", "First answer.", "two"]
    assert [m.text for m in backend.requests[2].messages] == ["three"]  # /reset forgot the rest
    assert "last turn:" in shown and "session:" in shown and "completion tokens" in shown
    assert "new conversation" in shown
    assert [m.text for m in session.messages] == ["three", "Fresh answer."]


def test_images_by_command_and_by_pasted_path(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32), "green").save(tmp_path / "a.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "b b.jpg")
    lines = [f"/image {tmp_path / 'a.png'}", f"'{tmp_path / 'b b.jpg'}' and these?", "no image now"]
    shown, backend, _ = repl(["Green and blue.", "Fine."], lines)
    first = backend.requests[0].messages[-1]
    assert len(first.images) == 2 and first.text == "and these?"
    assert backend.requests[1].messages[-1].images == []  # attached images go with one message only
    assert "attached" in shown


def test_bad_input_is_one_line_and_the_session_goes_on(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image")
    lines = ["/image nowhere.png", f"/image {tmp_path / 'broken.png'}", "/load nowhere.jsonl", "/nope", "hi"]
    shown, backend, _ = repl(["Hello."], lines)
    errors = [line for line in shown.splitlines() if line.startswith(("error:", "unknown command"))]
    assert len(errors) == 4, shown
    assert "no image at nowhere.png" in errors[0]
    assert "broken.png" in errors[1]
    assert "nowhere.jsonl" in errors[2]
    assert "Hello." in shown and "Traceback" not in shown
    assert backend.requests[0].messages[-1].images == []


def test_save_and_load_keep_images_and_tool_calls(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "r.png")
    path = tmp_path / "chat.jsonl"
    _, _, first = repl([call("explode", reason="x"), "Done."], [f"/image {tmp_path / 'r.png'}", "Go.", f"/save {path}"])
    shown, backend, _ = repl(["Again."], [f"/load {path}", "And now?"])
    assert f"loaded {len(first.messages)} messages" in shown
    sent = backend.requests[0].messages
    assert sent[0].images and sent[0].images[0].open().getpixel((5, 5)) == (255, 0, 0)
    assert [c.name for m in sent for c in m.tool_calls] == ["explode"]
    assert sent[-1].text == "And now?"


def test_help_and_tools_list() -> None:
    shown, backend, _ = repl([], ["/help", "/tools", "/exit", "never sent"])
    for command in ("/image", "/screen", "/tools", "/think", "/reset", "/save", "/load", "/usage", "/exit"):
        assert command in shown
    assert "explode" in shown and "Fail on purpose." in shown
    assert "never sent" not in shown and backend.requests == []  # /exit left before reading it


def test_loading_text_mentions_a_download_only_for_a_hub_id(tmp_path: Path) -> None:
    from agentcpm.cli.repl import loading_text

    assert loading_text(str(tmp_path)) == f"loading {tmp_path}…"
    assert "downloaded from the hub on first use" in loading_text("openbmb/MiniCPM-V-4.6")
