"""Screen capture on a real X display (Xvfb) showing a Tk window with known content."""

from __future__ import annotations

import base64
import io
import os
import threading

import pytest
from PIL import Image
from xdisplay import BUTTON, GREEN, GREEN_SQUARE, RED, RED_SQUARE, WHITE, TkApp, needs

from agentcpm.errors import ConfigurationError, DisplayError
from agentcpm.images import estimate_image_tokens, model_image_size
from agentcpm.screen import Rect, Screenshot, capture, list_monitors, wait_for_change


@pytest.fixture(scope="module")
def app(xvfb):
    with TkApp(xvfb.name) as running:
        yield running


def centre(rect: tuple[int, int, int, int]) -> tuple[int, int]:
    left, top, width, height = rect
    return left + width // 2, top + height // 2


def test_monitors_of_the_display(display):
    monitors = list_monitors()
    assert [(m.index, m.left, m.top, m.width, m.height) for m in monitors] == [
        (0, 0, 0, 1920, 1080),
        (1, 0, 0, 1920, 1080),
    ]


def test_full_screen_pixels_and_geometry(display, app):
    shot = capture()
    assert shot.image.mode == "RGB" and shot.image.size == (1920, 1080)
    assert (shot.left, shot.top, shot.width, shot.height, shot.scale, shot.monitor) == (0, 0, 1920, 1080, 1.0, 1)
    assert shot.image.getpixel(centre(RED_SQUARE)) == RED
    assert shot.image.getpixel(centre(GREEN_SQUARE)) == GREEN
    assert shot.image.getpixel((1000, 700)) == WHITE
    # The square's edges land on the exact pixels Tk painted: colour conversion and offsets are right.
    assert shot.image.getpixel((100, 100)) == RED and shot.image.getpixel((99, 100)) == WHITE
    assert shot.image.getpixel((299, 299)) == RED and shot.image.getpixel((300, 299)) == WHITE


def test_region_capture_has_its_own_origin(display, app):
    shot = capture(region=(1550, 750, 300, 300))
    assert shot.image.size == (300, 300)
    assert (shot.left, shot.top, shot.monitor) == (1550, 750, 1)
    assert shot.image.getpixel((50, 50)) == GREEN  # screen (1600, 800)
    assert shot.image.getpixel((49, 49)) == WHITE
    # The model's 0..1000 coordinates on this region map to absolute screen pixels.
    assert shot.to_screen(0, 0) == (1550, 750)
    assert shot.to_screen(500, 500) == (1700, 900)
    assert shot.to_screen(*shot.from_screen(1700, 900)) == (1700, 900)


def test_region_is_clipped_to_the_desktop(display, app):
    shot = capture(region=(1800, 1000, 500, 500))
    assert (shot.width, shot.height) == (120, 80)
    with pytest.raises(DisplayError, match="outside the desktop"):
        capture(region=(5000, 5000, 10, 10))
    with pytest.raises(ConfigurationError):
        capture(region=(0, 0, 0, 10))


def test_round_trips_are_exact_to_a_pixel(display, app):
    shot = capture()
    for x in range(0, 1920, 7):
        y = (x * 37) % 1080
        assert shot.to_screen(*shot.from_screen(x, y)) == (x, y)
    # Integer model coordinates land on the pixel they point into: its centre is at most half a pixel away.
    for n in range(0, 1001, 25):
        x, y = shot.to_screen(n, n)
        back = shot.from_screen(x, y)
        assert abs(back[0] - n) <= 500 / 1920 + 1e-9 and abs(back[1] - n) <= 500 / 1080 + 1e-9
    assert shot.to_screen(1000, 1000) == (1919, 1079)  # the far edge stays on the screen


def test_redaction_blacks_out_before_encoding(display, app):
    shot = capture(redact=[(80, 80, 100, 100), (1500, 700, 120, 120)])
    assert shot.image.getpixel((120, 120)) == (0, 0, 0)
    assert shot.image.getpixel((179, 179)) == (0, 0, 0)
    assert shot.image.getpixel((180, 180)) == RED
    assert shot.image.getpixel((1610, 810)) == (0, 0, 0)  # part of the green square
    assert shot.image.getpixel((1620, 820)) == GREEN
    # What leaves the machine is the redacted image.
    sent = Image.open(io.BytesIO(base64.b64decode(shot.data_url("png").split(",", 1)[1])))
    x, y = shot.to_image(*shot.from_screen(130, 130))
    sent_x, sent_y = round(x * sent.width / shot.image.width), round(y * sent.height / shot.image.height)
    assert sent.getpixel((sent_x, sent_y)) == (0, 0, 0)
    # Regions in screen coordinates apply to region captures too.
    part = capture(region=(50, 50, 200, 200), redact=[(100, 100, 20, 20)])
    assert part.image.getpixel((55, 55)) == (0, 0, 0) and part.image.getpixel((75, 75)) == RED


def test_data_url_is_model_sized_and_cached(display, app):
    shot = capture()
    url = shot.data_url()
    assert shot.data_url() is url
    kind, payload = url.split(",", 1)
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.size == model_image_size(1920, 1080) == (1792, 1008)
    assert kind in ("data:image/png;base64", "data:image/jpeg;base64")
    assert shot.tokens() == estimate_image_tokens(1792, 1008) == estimate_image_tokens(1920, 1080)
    # With 36 slices the model upscales 1080p: it is sent as captured.
    assert Image.open(io.BytesIO(shot.encode("jpeg", max_slice_nums=36)[0])).size == (1920, 1080)
    # The decoded JPEG still shows the content where it should be.
    decoded = Image.open(io.BytesIO(shot.encode("jpeg")[0])).convert("RGB")
    x, y = shot.to_screen(*shot.from_screen(*centre(RED_SQUARE)))
    red = decoded.getpixel((round(x * 1792 / 1920), round(y * 1008 / 1080)))
    assert red[0] > 200 and red[1] < 50 and red[2] < 50


def test_format_choice(display, app):
    flat = capture(region=(1000, 600, 400, 150))  # white and nothing else
    assert flat.data_url().startswith("data:image/png")
    busy = Screenshot(Image.frombytes("RGB", (800, 600), os.urandom(800 * 600 * 3)), 0, 0, 800, 600)  # a photo
    assert busy.data_url().startswith("data:image/jpeg")
    with pytest.raises(ConfigurationError):
        busy.encode("gif")  # type: ignore[arg-type]


def test_crop_keeps_screen_coordinates(display, app):
    shot = capture()
    zoomed = shot.crop(*shot.from_screen(1550, 750), *shot.from_screen(1850, 1050))
    assert (zoomed.left, zoomed.top, zoomed.width, zoomed.height) == (1550, 750, 301, 301)
    assert zoomed.image.size == (301, 301)
    assert zoomed.image.getpixel((50, 50)) == GREEN
    assert zoomed.to_screen(500, 500) == (1700, 900)


def test_wait_for_change_sees_a_delayed_repaint(display, app):
    region = (700, 700, 200, 100)
    before = capture(region=region)
    app.send("rect 760 720 30 20 #0000ff 300")
    change = wait_for_change(region=region, timeout=10, interval=0.05, baseline=before)
    assert change is not None
    assert change.rect == Rect(760, 720, 30, 20)
    assert change.after.image.getpixel((70, 30)) == (0, 0, 255)
    assert 0 < change.fraction < 0.05
    assert "left=760 top=720" in change.describe()
    # A quiet screen: None after the timeout.
    assert wait_for_change(region=(0, 600, 50, 50), timeout=0.3, interval=0.05) is None


def test_each_thread_captures_with_its_own_grabber(display, app):
    results: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []

    def grab() -> None:
        try:
            for _ in range(3):
                results.append(capture(region=RED_SQUARE).image.getpixel((5, 5)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [RED] * 12


def test_clear_errors_without_a_display(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":1999")
    with pytest.raises(DisplayError, match="Xvfb"):
        capture()


def test_no_such_monitor(display):
    with pytest.raises(DisplayError, match="no monitor 3"):
        capture(monitor=3)


def test_the_button_is_where_tk_put_it(display, app):
    # The geometry the GUI tests rely on: the button face differs from the white background.
    shot = capture(region=BUTTON)
    assert shot.image.getpixel((100, 5)) != WHITE


@needs("Xvfb")  # starts its own servers, not the session's display
def test_a_restarted_x_server_is_reconnected(monkeypatch):
    from xdisplay import Xvfb

    with Xvfb(320, 240) as first:
        monkeypatch.setenv("DISPLAY", first.name)
        assert capture().image.size == (320, 240)
    # The server is gone: a typed error, not a crash or a hang.
    with pytest.raises(DisplayError):
        capture()
    # A new server on the same display number: the next capture connects to it.
    server = Xvfb(400, 300)
    monkeypatch.setattr("xdisplay.free_display_number", lambda: int(first.name[1:]))
    with server:
        assert server.name == first.name
        assert capture().image.size == (400, 300)
