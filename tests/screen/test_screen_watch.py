"""watch(): answers about a real X display from a scripted model, asked only when the screen changed."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image
from xdisplay import TkApp

from agentcpm import Client, ScriptedBackend
from agentcpm.errors import ConfigurationError
from agentcpm.images import model_image_size
from agentcpm.screen import watch


@pytest.fixture(scope="module")
def app(xvfb):
    with TkApp(xvfb.name) as running:
        yield running


def sent_image(request) -> Image.Image:
    (part,) = [p for m in request.messages for p in m.images]
    return Image.open(io.BytesIO(base64.b64decode(str(part.source).split(",", 1)[1]))).convert("RGB")


def test_asks_only_when_the_screen_changed_and_stops_on_until(display, app):
    backend = ScriptedBackend(["Still building.", "Build passed: 12 tests OK."])
    region = (1100, 600, 300, 200)
    answers = watch(
        "Has the build finished?",
        every=0.1,
        until="PASSED",
        region=region,
        client=Client(backend=backend),
        timeout=20,
    )
    first = next(answers)
    assert (first.text, first.done) == ("Still building.", False)
    assert first.screenshot.rect.width == 300 and len(backend.requests) == 1
    started = time.time()
    app.send("rect 1200 650 50 50 #00ff00 600")  # the screen changes 0.6 s later
    second = next(answers)
    assert time.time() - started >= 0.5
    assert (second.text, second.done) == ("Build passed: 12 tests OK.", True)
    assert second.taken_at > first.taken_at
    # Several quiet looks in between cost no model call: exactly two requests were made.
    assert len(backend.requests) == 2
    assert backend.requests[1].messages[-1].text == "Has the build finished?"
    assert sent_image(backend.requests[1]).getpixel((125, 75)) == (0, 255, 0)
    with pytest.raises(StopIteration):
        next(answers)


def test_predicate_timeout_and_options(display, app):
    backend = ScriptedBackend(["3 files", "never asked"])
    client = Client(backend=backend, max_slice_nums=1)
    answers = list(
        watch("How many files?", every=0.1, until=lambda text: "5" in text, client=client, timeout=0.5, max_tokens=20)
    )
    # The screen did not change: one answer, then the timeout ended the watch without `until` holding.
    assert [(a.text, a.done) for a in answers] == [("3 files", False)]
    request = backend.requests[0]
    assert request.options.max_tokens == 20 and request.options.max_slice_nums == 1
    # The screenshot was sized for the client's slicing.
    assert sent_image(request).size == model_image_size(1920, 1080, 1)


def test_redaction_before_the_model_sees_it(display, app):
    backend = ScriptedBackend(["ok"])
    (answer,) = watch(
        "Anything?", client=Client(backend=backend), region=(0, 0, 400, 400), redact=[(100, 100, 200, 200)], timeout=0
    )
    assert answer.screenshot.image.getpixel((150, 150)) == (0, 0, 0)
    assert sent_image(backend.requests[0]).getpixel((150, 150)) == (0, 0, 0)


def test_bad_arguments(display):
    with pytest.raises(ConfigurationError):
        next(watch("?", every=0, client=Client(backend=ScriptedBackend([]))))
    with pytest.raises(ConfigurationError):
        next(watch("?", until=42, client=Client(backend=ScriptedBackend([]))))  # type: ignore[arg-type]
