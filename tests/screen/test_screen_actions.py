"""GUI actions (the gui extra, pynput) on a real X display: a Tk app reports the events it receives."""

from __future__ import annotations

import pytest
from markup import call
from xdisplay import BUTTON, ENTRY, TkApp, needs

from agentcpm import Agent, Client, ImagePart, ScriptedBackend
from agentcpm.errors import ConfigurationError
from agentcpm.screen import ScreenSession

# pynput needs a display when it is imported, so only check that it is installed here.
pytestmark = needs("pynput")


@pytest.fixture(scope="module")
def app(xvfb):
    with TkApp(xvfb.name) as running:
        yield running


@pytest.fixture
def session(display, app):
    app.focus()
    app.drain()
    with ScreenSession(settle=0.1, settle_timeout=1.0) as session:
        session.capture()
        yield session


def normalised(session: ScreenSession, x: int, y: int) -> dict[str, int]:
    """The 0..1000 point (rounded, as the model writes it) on the latest screenshot for a screen pixel."""
    nx, ny = session.last.from_screen(x, y)
    return {"x": round(nx), "y": round(ny)}


def centre(rect: tuple[int, int, int, int]) -> tuple[int, int]:
    return rect[0] + rect[2] // 2, rect[1] + rect[3] // 2


def tool(session: ScreenSession, name: str):
    return next(t for t in session.tools(actions=True) if t.name == name)


def test_click_a_button_and_see_the_screen_after(session, app):
    before = session.last
    text, part = tool(session, "click").call(normalised(session, *centre(BUTTON)))
    app.wait_for("clicked")
    assert text.startswith("Done: click at (")
    assert isinstance(part, ImagePart)
    assert session.last is not before and session.last.taken_at > before.taken_at
    assert session.actions[-1].name == "click" and session.actions[-1].performed


def test_type_into_an_entry_then_press_keys(session, app):
    tool(session, "click").call(normalised(session, *centre(ENTRY)))
    tool(session, "type_text").call({"text": "Hello, World 42"})
    assert app.wait_for("entry Hello, World 42") == "entry Hello, World 42"
    tool(session, "press").call({"keys": "backspace"})
    assert app.wait_for("entry Hello, World 4") == "entry Hello, World 4"
    tool(session, "press").call({"keys": "ctrl+a"})  # Tk: to the start of the line
    tool(session, "type_text").call({"text": ">"})
    assert app.wait_for("entry >Hello") == "entry >Hello, World 4"


def test_unknown_keys_go_back_to_the_model(session, app):
    with pytest.raises(ConfigurationError, match="unknown key 'hyper'"):
        tool(session, "press").call({"keys": "ctrl+hyper"})


def test_pointer_actions_land_on_exact_screen_pixels(session, app):
    # 0..1000 points the model would write, mapped through the latest screenshot.
    point = normalised(session, 1000, 700)
    target = session.last.to_screen(point["x"], point["y"])
    tool(session, "move").call(point)
    assert app.wait_for("moved") == f"moved {target[0]} {target[1]}"
    tool(session, "double_click").call(point)
    assert app.wait_for("double") == f"double {target[0]} {target[1]}"
    end = normalised(session, 1200, 800)
    end_target = session.last.to_screen(end["x"], end["y"])
    tool(session, "drag").call({"x1": point["x"], "y1": point["y"], "x2": end["x"], "y2": end["y"]})
    app.wait_for("dragging")
    assert app.wait_for("released") == f"released {end_target[0]} {end_target[1]}"
    tool(session, "scroll").call({**point, "direction": "down", "amount": 2})
    app.wait_for("scrolled down")
    tool(session, "scroll").call({**point, "direction": "up"})
    app.wait_for("scrolled up")


def test_dry_run_records_instead_of_acting(display, app):
    session = ScreenSession(dry_run=True)
    session.capture()
    app.drain()
    point = normalised(session, *centre(BUTTON))
    text = tool(session, "click").call(point)
    assert text.startswith("Dry run: click at (") and "not performed" in text
    tool(session, "type_text").call({"text": "secret"})
    assert [(a.name, a.performed) for a in session.actions] == [("click", False), ("type_text", False)]
    assert session.actions[0].screen_points == [session.last.to_screen(point["x"], point["y"])]
    with pytest.raises(AssertionError):
        app.wait_for("clicked", timeout=0.5)


def test_an_agent_needs_approval_to_click(session, app):
    point = normalised(session, *centre(BUTTON))
    click = call("click", x=point["x"], y=point["y"])
    backend = ScriptedBackend([click, "I was not allowed."])
    denied = Agent(Client(backend=backend), tools=session.tools(), approval="deny")
    assert denied.run("Press the button").output == "I was not allowed."
    with pytest.raises(AssertionError):
        app.wait_for("clicked", timeout=0.5)
    asked = []
    allowed = Agent(
        Client(backend=ScriptedBackend([click, "Pressed."])),
        tools=session.tools(),
        approval=lambda call: asked.append(call.name) or True,
    )
    assert allowed.run("Press the button").output == "Pressed."
    assert asked == ["click"]
    app.wait_for("clicked")
