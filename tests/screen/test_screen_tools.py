"""The screen tools on a real X display: screenshot, zoom, list_monitors, wait_for_change, and an agent using them."""

from __future__ import annotations

import base64
import io
import sys

import markup
import pytest
from PIL import Image
from xdisplay import GREEN_SQUARE, RED, RED_SQUARE, TkApp, needs

from agentcpm import Agent, Client, ImagePart, ScriptedBackend
from agentcpm.errors import MissingDependencyError
from agentcpm.images import model_image_size
from agentcpm.screen import ScreenSession, screen_tools
from agentcpm.screen import actions as screen_actions

LOOKING = ["screenshot", "zoom", "list_monitors", "wait_for_change"]
ACTING = ["click", "double_click", "type_text", "press", "scroll", "drag", "move"]


@pytest.fixture(scope="module")
def app(xvfb):
    with TkApp(xvfb.name) as running:
        yield running


def decode(part: ImagePart) -> Image.Image:
    header, payload = str(part.source).split(",", 1)
    assert header.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


def call(tools, name: str, **arguments):
    return next(t for t in tools if t.name == name).call(arguments)


@needs("pynput")  # actions=True asks for the gui extra
def test_tool_sets_and_approval():
    assert [t.name for t in screen_tools(actions=False)] == LOOKING
    tools = screen_tools(actions=True)
    assert [t.name for t in tools] == LOOKING + ACTING
    assert all(t.requires_approval == (t.name in ACTING) for t in tools)
    schema = next(t for t in tools if t.name == "click").parameters
    assert schema["properties"]["x"]["minimum"] == 0 and schema["properties"]["x"]["maximum"] == 1000
    assert schema["required"] == ["x", "y"]


def test_without_the_gui_extra_the_actions_are_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynput", None)  # installed here or not, now it cannot be imported
    assert not screen_actions.gui_available()
    assert [t.name for t in screen_tools()] == LOOKING
    with pytest.raises(MissingDependencyError, match=r"agentcpm\[gui\]"):
        screen_tools(actions=True)


def test_screenshot_tool_returns_a_model_ready_image(display, app):
    session = ScreenSession()
    text, part = call(session.tools(actions=False), "screenshot")
    assert "monitor 1 (1920x1080)" in text
    image = decode(part)
    assert image.size == model_image_size(1920, 1080)
    assert session.last is not None and session.last.image.size == (1920, 1080)


def test_zoom_enlarges_a_region_of_the_latest_screenshot(display, app):
    session = ScreenSession()
    tools = session.tools(actions=False)
    call(tools, "screenshot")
    shot = session.last
    # A box a little larger than the red square.
    x1, y1 = (round(v) for v in shot.from_screen(80, 80))
    x2, y2 = (round(v) for v in shot.from_screen(320, 320))
    text, part = call(tools, "zoom", x1=x1, y1=y1, x2=x2, y2=y2)
    assert "enlarged" in text
    image = decode(part)
    assert image.width > 400 and abs(image.width - image.height) <= 8  # 4x of about 240 pixels square
    # The red square fills the middle; white margins remain around it.
    assert image.getpixel((image.width // 2, image.height // 2)) == pytest.approx(RED, abs=12)
    corner = image.getpixel((3, 3))
    assert min(corner) > 230
    # The zoom does not change what the other tools' coordinates refer to.
    assert session.last is shot


def test_zoom_keeps_large_regions_as_they_are(display, app):
    session = ScreenSession()
    tools = session.tools(actions=False)
    text, part = call(tools, "zoom", x1=0, y1=0, x2=1000, y2=1000)
    assert "enlarged" not in text
    assert decode(part).size == model_image_size(1920, 1080)


def test_list_monitors_tool(display):
    text = call(screen_tools(actions=False), "list_monitors")
    assert text.splitlines() == ["0: 1920x1080 at (0, 0), all monitors", "1: 1920x1080 at (0, 0), screen"]


def test_wait_for_change_tool(display, app):
    session = ScreenSession()
    tools = session.tools(actions=False)
    call(tools, "screenshot")
    shot = session.last
    box = [round(v) for v in (*shot.from_screen(1100, 200), *shot.from_screen(1299, 399))]
    app.send("rect 1150 250 40 40 #ff00ff 300")
    text, part = call(tools, "wait_for_change", timeout=10, region=box)
    assert text.startswith("The screen changed in <box>")
    assert isinstance(part, ImagePart)
    # The box it reports is where the magenta square appeared, in the screenshot's 0..1000 space.
    reported = [float(v) for v in text.split("<box>")[1].split("</box>")[0].split()]
    left, top = shot.to_screen(reported[0], reported[1])
    assert abs(left - 1150) <= 2 and abs(top - 250) <= 2
    assert session.last is not shot  # the new screenshot is now the latest
    quiet = call(tools, "wait_for_change", timeout=0.3, region=[0, 900, 30, 950])
    assert quiet == "Nothing changed in 0.3 s."


def test_redaction_applies_to_every_tool_image(display, app):
    session = ScreenSession(redact=[GREEN_SQUARE])
    tools = session.tools(actions=False)
    _, part = call(tools, "screenshot")
    image = decode(part)
    shot = session.last
    x, y = shot.to_screen(*shot.from_screen(1700, 900))
    assert image.getpixel((round(x * image.width / 1920), round(y * image.height / 1080))) == (0, 0, 0)
    zoom_box = [round(v) for v in (*shot.from_screen(1600, 800), *shot.from_screen(1799, 999))]
    _, zoomed = call(tools, "zoom", x1=zoom_box[0], y1=zoom_box[1], x2=zoom_box[2], y2=zoom_box[3])
    assert max(decode(zoomed).getpixel((50, 50))) < 10


def test_an_agent_sees_the_screenshot(display, app):
    x, y = (round(v) for v in ScreenSession().capture().from_screen(RED_SQUARE[0] + 100, RED_SQUARE[1] + 100))
    backend = ScriptedBackend(
        [
            markup.call("screenshot"),
            markup.call("zoom", x1=x - 60, y1=y - 100, x2=x + 60, y2=y + 100),
            "A red square.",
        ]
    )
    result = Agent(Client(backend=backend), tools=screen_tools(actions=False)).run("What is on the screen?")
    assert result.output == "A red square."
    # The second request carries the screenshot, the third the close-up, as images the model sees.
    second = backend.requests[1].messages
    images = [p for m in second for p in m.images]
    assert len(images) == 1 and decode(images[0]).size == model_image_size(1920, 1080)
    third_images = [p for m in backend.requests[2].messages for p in m.images]
    close_up = decode(third_images[-1])
    assert close_up.getpixel((close_up.width // 2, close_up.height // 2)) == pytest.approx(RED, abs=12)
