"""Coordinates without a display: multi-monitor layouts with the offsets and scales real desktops report,
HiDPI, and points and boxes parsed from model text."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from agentcpm.errors import ConfigurationError
from agentcpm.screen import Box, Monitor, Rect, Screenshot, monitor_at, parse_boxes, parse_points
from agentcpm.screen.geometry import bounding_rect

# What mss.MSS().monitors reports on three real desktops (monitor 0 is the box around the others).
# macOS: a MacBook Pro's Retina panel (1512x982 points, 2 pixels per point) as primary, a 27" 2560x1440
# display above and to the left. Screen coordinates are points; captures are pixels.
MAC = [
    {"left": -1048, "top": -1440, "width": 2560, "height": 2422},
    {"left": 0, "top": 0, "width": 1512, "height": 982, "is_primary": True},
    {"left": -1048, "top": -1440, "width": 2560, "height": 1440},
]
MAC_SCALES = [1.0, 2.0, 1.0]
# Windows (per-monitor DPI aware, so everything is physical pixels): a 1440p primary and a 1080p screen on
# its left, lowered by 180 pixels.
WINDOWS = [
    {"left": -1920, "top": 0, "width": 4480, "height": 1440},
    {"left": 0, "top": 0, "width": 2560, "height": 1440, "is_primary": True},
    {"left": -1920, "top": 180, "width": 1920, "height": 1080},
]
# X11 with xrandr: a 4K DP-1 and a 1080p HDMI-1 to its right, centred vertically.
X11 = [
    {"left": 0, "top": 0, "width": 5760, "height": 2160},
    {"left": 0, "top": 0, "width": 3840, "height": 2160, "output": "DP-1"},
    {"left": 3840, "top": 540, "width": 1920, "height": 1080, "output": "HDMI-1"},
]
LAYOUTS = {"mac": (MAC, MAC_SCALES), "windows": (WINDOWS, [1.0] * 3), "x11": (X11, [1.0] * 3)}


def monitors_of(name: str) -> list[Monitor]:
    infos, scales = LAYOUTS[name]
    return [Monitor.from_mss(index, info, scale) for index, (info, scale) in enumerate(zip(infos, scales, strict=True))]


def shot_of(monitor: Monitor, marker: tuple[int, int] | None = None) -> Screenshot:
    """What capturing ``monitor`` gives: an image of its physical size; ``marker`` (screen coordinates)
    painted as a scale x scale block of red pixels."""
    size = (round(monitor.width * monitor.scale), round(monitor.height * monitor.scale))
    image = Image.new("RGB", size, "white")
    if marker is not None:
        x = (marker[0] - monitor.left) * monitor.scale
        y = (marker[1] - monitor.top) * monitor.scale
        ImageDraw.Draw(image).rectangle((x, y, x + monitor.scale - 1, y + monitor.scale - 1), fill="red")
    return Screenshot(image, monitor.left, monitor.top, monitor.width, monitor.height, monitor.scale, monitor.index)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_monitor_zero_bounds_the_others(layout):
    monitors = monitors_of(layout)
    desktop = bounding_rect(monitors[1:])
    assert (desktop.left, desktop.top, desktop.width, desktop.height) == (
        monitors[0].left,
        monitors[0].top,
        monitors[0].width,
        monitors[0].height,
    )


def test_points_on_each_monitor_of_a_mac():
    monitors = monitors_of("mac")
    builtin, external = monitors[1:]
    assert builtin.primary and builtin.scale == 2.0
    # The centre of the Retina panel is (756, 491) points, whatever the capture's pixel size.
    shot = shot_of(builtin)
    assert shot.image.size == (3024, 1964)
    assert shot.to_screen(500, 500) == (756, 491)
    assert shot.to_image(500, 500) == (1512, 982)
    # The external display's top-left corner is at negative coordinates.
    top = shot_of(external)
    assert top.to_screen(0, 0) == (-1048, -1440)
    assert top.to_screen(1000, 1000) == (1511, -1)
    assert monitor_at(*top.to_screen(250, 900), monitors) is external
    assert monitor_at(*shot.to_screen(10, 10), monitors) is builtin
    assert monitor_at(1600, 100, monitors) is None  # right of the panel, below the display: no screen


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_marker_found_in_the_image_maps_to_its_screen_point(layout):
    """What the model sees at 0..1000 on each monitor's capture lands where the pixel really is."""
    for monitor in monitors_of(layout)[1:]:
        target = (monitor.left + monitor.width // 3, monitor.top + (2 * monitor.height) // 3)
        shot = shot_of(monitor, marker=target)
        box = _red_box(shot.image)
        # The model would report the marker's position normalised to the image it saw.
        x = (box[0] + 0.5) * 1000 / shot.image.width
        y = (box[1] + 0.5) * 1000 / shot.image.height
        assert shot.to_screen(x, y) == target
        half = shot.scale / 2  # the centre of the screen pixel, in image pixels
        exact = ((box[0] + half) * 1000 / shot.image.width, (box[1] + half) * 1000 / shot.image.height)
        assert shot.from_screen(*target) == pytest.approx(exact)


def _red_box(image: Image.Image) -> tuple[int, int, int, int]:
    red = image.split()[1].point(lambda v: 255 if v < 128 else 0)  # the green channel is 0 only where red
    box = red.getbbox()
    assert box is not None
    return box


@functools.cache
def blank_shot(layout: str, index: int) -> Screenshot:
    return shot_of(monitors_of(layout)[index])


@settings(deadline=None)
@given(st.sampled_from(sorted(LAYOUTS)), st.integers(1, 2), st.floats(0, 1), st.floats(0, 1))
def test_screen_round_trips_are_exact(layout, index, fx, fy):
    shot = blank_shot(layout, index)
    monitor = monitors_of(layout)[index]
    x = monitor.left + min(monitor.width - 1, int(fx * monitor.width))
    y = monitor.top + min(monitor.height - 1, int(fy * monitor.height))
    assert shot.to_screen(*shot.from_screen(x, y)) == (x, y)


@settings(deadline=None)
@given(st.integers(0, 1000), st.integers(0, 1000))
def test_model_points_stay_within_a_pixel(x, y):
    rect = Rect(-1920, 180, 1920, 1080)
    sx, sy = rect.to_screen(x, y)
    assert rect.contains(sx, sy)
    bx, by = rect.from_screen(sx, sy)
    assert abs(bx - x) <= 500 / 1920 + 1e-9 and abs(by - y) <= 500 / 1080 + 1e-9  # half a pixel


def test_crop_and_redact_on_hidpi():
    builtin = monitors_of("mac")[1]
    shot = shot_of(builtin, marker=(100, 100))
    zoomed = shot.crop(*shot.from_screen(90, 90), *shot.from_screen(109, 109))
    assert (zoomed.left, zoomed.top, zoomed.width, zoomed.height) == (90, 90, 20, 20)
    assert zoomed.image.size == (40, 40)  # full resolution: two pixels per point
    assert zoomed.image.getpixel((20, 20)) == (255, 0, 0) and zoomed.image.getpixel((21, 21)) == (255, 0, 0)
    assert zoomed.to_screen(500, 500) == (100, 100)
    shot.redact([(99, 99, 3, 3)])
    assert shot.image.getpixel((198, 198)) == (0, 0, 0) and shot.image.getpixel((203, 203)) == (0, 0, 0)
    assert shot.image.getpixel((204, 204)) == (255, 255, 255) and shot.image.getpixel((197, 197)) == (255, 255, 255)


def test_redaction_rounds_outwards_at_fractional_scales():
    shot = Screenshot(Image.new("RGB", (150, 150), "white"), 0, 0, 100, 100, scale=1.5)
    shot.redact([(11, 11, 3, 3)])  # 16.5 .. 21 in pixels
    assert shot.image.getpixel((16, 16)) == (0, 0, 0) and shot.image.getpixel((20, 20)) == (0, 0, 0)
    assert shot.image.getpixel((15, 15)) == (255, 255, 255) and shot.image.getpixel((21, 21)) == (255, 255, 255)


def test_rect_input_is_checked():
    assert Rect.of({"left": 1, "top": 2, "width": 3, "height": 4}) == Rect(1, 2, 3, 4)
    assert Rect.of([1, 2, 3, 4]) == Rect(1, 2, 3, 4)
    with pytest.raises(ConfigurationError):
        Rect.of((1, 2, 3))
    with pytest.raises(ConfigurationError):
        Rect.of((1, 2, -3, 4))
    assert Rect(0, 0, 10, 10).intersect(Rect(10, 0, 5, 5)) is None
    assert Rect(0, 0, 10, 10).box_to_screen(900, 900, 0, 0) == Rect(0, 0, 10, 10)


# ---------------------------------------------------------------------------- parsing model text


def test_boxes_in_the_forms_the_model_writes():
    text = (
        "Search <box>10 20 300 60</box>, menu <box>700,20,990,60</box>, "
        "OK <box>(400,600),(600,660)</box>, out of range <box>0 0 1200 50</box>, broken <box>1 2 3</box>"
    )
    assert parse_boxes(text) == [
        Box(10, 20, 300, 60),
        Box(700, 20, 990, 60),
        Box(400, 600, 600, 660),
    ]
    assert Box(400, 600, 600, 660).center == (500, 630)


def test_points_in_text_order():
    text = "First <point>100 200</point> then the box <box>0 0 100 50</box>, then (250, 750) or (12.5,7.5)."
    assert parse_points(text) == [(100, 200), (50, 25), (250, 750), (12.5, 7.5)]


def test_no_false_points():
    assert parse_points("") == []
    assert parse_points("version (3, 11) of f(1, 2) and (2000, 10) and <point>a b</point>") == [(3, 11)]
    assert parse_points("<point>(500,500)</point>") == [(500, 500)]
    assert parse_points("<point>500 500") == []
