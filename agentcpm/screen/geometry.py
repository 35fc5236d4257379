"""Where things are: monitors, rectangles, and MiniCPM-V's 0..1000 coordinates mapped to the screen.

Three coordinate spaces meet here:

- **normalised**: what the model reads and writes, 0..1000 across the image it was shown (``<point>x y</point>``,
  ``<box>x1 y1 x2 y2</box>``), whatever the image's size; a point lies in the pixel that contains it, and a pixel
  is named by its centre;
- **screen**: absolute desktop coordinates, the space of monitor offsets and of mouse events (points on macOS,
  pixels elsewhere); a monitor left of the primary one has negative ``left``;
- **image**: pixels of the captured image, which on a HiDPI screen has ``scale`` times more pixels per side.

>>> rect = Rect(1920, 0, 2560, 1440)       # the second monitor of a side-by-side pair
>>> rect.to_screen(500, 500)
(3200, 720)
>>> rect.to_screen(*rect.from_screen(3200, 720))
(3200, 720)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

NORMALISED = 1000  # MiniCPM-V writes coordinates in 0..1000 across each side of the image


@dataclass(frozen=True)
class Rect:
    """A rectangle in screen coordinates: ``left``, ``top`` (may be negative), ``width``, ``height``."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.left + self.width

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.top + self.height

    def contains(self, x: float, y: float) -> bool:
        return self.left <= x < self.right and self.top <= y < self.bottom

    def intersect(self, other: Rect) -> Rect | None:
        """The overlap of two rectangles, or None."""
        left, top = max(self.left, other.left), max(self.top, other.top)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return None
        return Rect(left, top, right - left, bottom - top)

    def to_screen(self, x: float, y: float) -> tuple[int, int]:
        """A 0..1000 point on an image of this rectangle -> the screen pixel under it (clamped inside).

        >>> Rect(-1920, -200, 1920, 1080).to_screen(0, 1000)
        (-1920, 879)
        """
        column = min(self.width - 1, max(0, math.floor(x * self.width / NORMALISED)))
        row = min(self.height - 1, max(0, math.floor(y * self.height / NORMALISED)))
        return self.left + column, self.top + row

    def from_screen(self, x: float, y: float) -> tuple[float, float]:
        """A screen pixel -> the 0..1000 point at its centre on an image of this rectangle (``to_screen`` maps
        it back exactly)."""
        return (x - self.left + 0.5) * NORMALISED / self.width, (y - self.top + 0.5) * NORMALISED / self.height

    def box_to_screen(self, x1: float, y1: float, x2: float, y2: float) -> Rect:
        """A 0..1000 box -> the screen rectangle it covers (corners in either order)."""
        left, top = self.to_screen(min(x1, x2), min(y1, y2))
        right, bottom = self.to_screen(max(x1, x2), max(y1, y2))
        return Rect(left, top, right - left + 1, bottom - top + 1)

    @classmethod
    def of(cls, value: Any) -> Rect:
        """A Rect from ``(left, top, width, height)``, a mapping with those keys, or a Rect."""
        if isinstance(value, Rect):
            return value
        try:
            if isinstance(value, dict):
                left, top, width, height = (value[k] for k in ("left", "top", "width", "height"))
            else:
                left, top, width, height = value
            rect = cls(int(left), int(top), int(width), int(height))
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigurationError(
                f"not a rectangle: {value!r}; give (left, top, width, height) in screen pixels"
            ) from exc
        if rect.width <= 0 or rect.height <= 0:
            raise ConfigurationError(f"the rectangle {value!r} is empty: width and height must be positive")
        return rect


@dataclass(frozen=True)
class Monitor(Rect):
    """One monitor (``index`` 1, 2, ...) or, as ``index`` 0, the box around all of them.

    ``scale`` is image pixels per screen unit: 2.0 for a Retina display whose screen coordinates are points,
    1.0 where the system reports physical pixels (X11, Windows with DPI awareness).
    """

    index: int = 1
    scale: float = 1.0
    name: str = ""
    primary: bool = False

    @classmethod
    def from_mss(cls, index: int, info: dict[str, Any], scale: float = 1.0) -> Monitor:
        """A monitor from one entry of ``mss.MSS().monitors``."""
        return cls(
            int(info["left"]),
            int(info["top"]),
            int(info["width"]),
            int(info["height"]),
            index=index,
            scale=scale,
            name=str(info.get("name") or info.get("output") or ""),
            primary=bool(info.get("is_primary", False)),
        )


def bounding_rect(rects: Iterable[Rect]) -> Rect:
    """The smallest rectangle around all of ``rects`` (the whole desktop, for monitors)."""
    items = list(rects)
    if not items:
        raise ConfigurationError("no rectangles to bound")
    left, top = min(r.left for r in items), min(r.top for r in items)
    right, bottom = max(r.right for r in items), max(r.bottom for r in items)
    return Rect(left, top, right - left, bottom - top)


def monitor_at(x: float, y: float, monitors: Sequence[Monitor]) -> Monitor | None:
    """The monitor (index >= 1) showing the screen point, or None in a gap between monitors."""
    return next((m for m in monitors if m.index >= 1 and m.contains(x, y)), None)


# ---------------------------------------------------------------------------- points and boxes in model text

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_SEP = r"\s*[,\s]\s*"
_BOX = re.compile(
    r"<box>\s*\(?\[?"
    + _NUMBER
    + _SEP
    + _NUMBER
    + r"\)?\]?"
    + _SEP
    + r"\(?\[?"
    + _NUMBER
    + _SEP
    + _NUMBER
    + r"\s*\)?\]?\s*</box>"
)
_POINT = re.compile(r"<point>\s*\(?\[?" + _NUMBER + _SEP + _NUMBER + r"\s*\)?\]?\s*</point>")
_PAIR = re.compile(r"(?<![\w.])\(\s*" + _NUMBER + r"\s*,\s*" + _NUMBER + r"\s*\)")


@dataclass(frozen=True)
class Box:
    """A box the model wrote, in 0..1000 coordinates; ``center`` is where to click."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2


def _in_range(*values: float) -> bool:
    return all(0 <= v <= NORMALISED for v in values)


def parse_boxes(text: str) -> list[Box]:
    """Every ``<box>x1 y1 x2 y2</box>`` in model text (spaces, commas or ``(x1,y1),(x2,y2)``), in order.

    Values outside 0..1000 are not coordinates and are skipped.

    >>> parse_boxes("The OK button <box>410 620 590 680</box>.")
    [Box(x1=410.0, y1=620.0, x2=590.0, y2=680.0)]
    """
    boxes = []
    for match in _BOX.finditer(text):
        values = [float(v) for v in match.groups()]
        if _in_range(*values):
            boxes.append(Box(*values))
    return boxes


def parse_points(text: str) -> list[tuple[float, float]]:
    """Every point in model text, in order: ``<point>x y</point>``, the centre of each ``<box>``, and plain
    ``(x, y)`` pairs; all in 0..1000 (pairs outside that range are skipped).

    >>> parse_points("Click <point>500 120</point>, then the box <box>0 0 100 50</box> or (250, 750).")
    [(500.0, 120.0), (50.0, 25.0), (250.0, 750.0)]
    """
    found: list[tuple[int, tuple[float, float]]] = []
    taken: list[tuple[int, int]] = []
    for match in _POINT.finditer(text):
        x, y = float(match.group(1)), float(match.group(2))
        if _in_range(x, y):
            found.append((match.start(), (x, y)))
        taken.append(match.span())
    for match in _BOX.finditer(text):
        values = [float(v) for v in match.groups()]
        if _in_range(*values):
            found.append((match.start(), Box(*values).center))
        taken.append(match.span())
    for match in _PAIR.finditer(text):
        if any(start <= match.start() < end for start, end in taken):
            continue
        x, y = float(match.group(1)), float(match.group(2))
        if _in_range(x, y):
            found.append((match.start(), (x, y)))
    return [point for _, point in sorted(found, key=lambda item: item[0])]
