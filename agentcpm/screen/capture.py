"""Screenshots: grab the screen with mss, keep the geometry, encode once at the size the model uses.

The centre of monitor 1 in screen coordinates, and the shot resized for MiniCPM-V's slicing and encoded
(cached on the shot):

>>> shot = capture(monitor=1)            # doctest: +SKIP
>>> shot.to_screen(500, 500)             # doctest: +SKIP
(960, 540)
>>> shot.data_url()[:11]                 # doctest: +SKIP
'data:image/'
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .. import images as _images
from ..errors import DisplayError, MissingDependencyError
from ..types import ImagePart
from .geometry import Monitor, Rect, monitor_at

if TYPE_CHECKING:
    from PIL import Image as PILImage

RectLike = Rect | tuple[int, int, int, int] | Sequence[int]
Format = Literal["auto", "png", "jpeg"]

#: Screenshots use the one image encoder (:func:`agentcpm.images.encode_image`) and its settings.
JPEG_QUALITY = _images.JPEG_QUALITY
PNG_MAX_COLORS = _images.PNG_MAX_COLORS

_local = threading.local()


def _grabber() -> Any:
    """This thread's ``mss.MSS`` for the current display (mss objects must not be shared across threads)."""
    try:
        import mss
    except ImportError as exc:  # pragma: no cover - mss is a core dependency
        raise MissingDependencyError("mss", purpose="screen capture") from exc
    display = os.environ.get("DISPLAY")
    instances: dict[str | None, Any] = getattr(_local, "instances", None) or {}
    _local.instances = instances
    grabber = instances.get(display)
    if grabber is None:
        try:
            grabber = mss.MSS()
        except Exception as exc:
            where = f"display {display!r}" if display else "a display (DISPLAY is not set)"
            raise DisplayError(
                f"cannot open {where} for screen capture ({exc}); run inside a desktop session, "
                "or start a virtual one with `Xvfb :99 -screen 0 1920x1080x24 &` and `export DISPLAY=:99`"
            ) from exc
        instances[display] = grabber
    return grabber


def _forget_grabber() -> None:
    grabber = getattr(_local, "instances", {}).pop(os.environ.get("DISPLAY"), None)
    if grabber is not None:
        with contextlib.suppress(Exception):
            grabber.close()


def list_monitors() -> list[Monitor]:
    """The monitors: index 0 is the box around all of them (the whole desktop), then 1, 2, ... as mss numbers them.

    >>> [(m.index, m.width, m.height) for m in list_monitors()]   # doctest: +SKIP
    [(0, 1920, 1080), (1, 1920, 1080)]
    """
    try:
        infos = _grabber().monitors
    except DisplayError:
        raise
    except Exception as exc:
        _forget_grabber()
        raise DisplayError(f"cannot list the monitors ({exc})") from exc
    if not infos:
        raise DisplayError("the display reports no monitors")
    return [Monitor.from_mss(index, info) for index, info in enumerate(infos)]


@dataclass(eq=False)
class Screenshot:
    """A captured image and where on the screen it came from.

    ``image`` is RGB in physical pixels; ``left``, ``top``, ``width``, ``height`` are the captured rectangle in
    screen coordinates, ``scale`` is image pixels per screen unit (2.0 on a Retina Mac), ``monitor`` the index
    of the monitor it shows (0: all), ``taken_at`` a ``time.time()`` stamp.
    """

    image: PILImage.Image
    left: int
    top: int
    width: int
    height: int
    scale: float = 1.0
    monitor: int = 1
    taken_at: float = field(default_factory=time.time)
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def rect(self) -> Rect:
        """The captured rectangle in screen coordinates."""
        return Rect(self.left, self.top, self.width, self.height)

    # coordinates ----------------------------------------------------------------------------------------
    def to_screen(self, x: float, y: float) -> tuple[int, int]:
        """A 0..1000 point on this shot (as the model writes it) -> absolute screen coordinates for the mouse.

        >>> Screenshot(Image.new("RGB", (200, 100)), 1920, 0, 200, 100).to_screen(500, 1000)  # doctest: +SKIP
        (2020, 99)
        """
        return self.rect.to_screen(x, y)

    def from_screen(self, x: float, y: float) -> tuple[float, float]:
        """Absolute screen coordinates -> 0..1000 on this shot; ``to_screen`` maps the result back exactly."""
        return self.rect.from_screen(x, y)

    def to_image(self, x: float, y: float) -> tuple[int, int]:
        """A 0..1000 point -> the pixel of :attr:`image` under it (HiDPI-aware)."""
        return Rect(0, 0, self.image.width, self.image.height).to_screen(x, y)

    # derived shots ---------------------------------------------------------------------------------------
    def crop(self, x1: float, y1: float, x2: float, y2: float) -> Screenshot:
        """The part inside a 0..1000 box, at full resolution, as a Screenshot with its own coordinates
        (so points the model gives on the crop map to the screen correctly)."""
        box = self.rect.box_to_screen(x1, y1, x2, y2)
        left_px = round((box.left - self.left) * self.scale)
        top_px = round((box.top - self.top) * self.scale)
        right_px = max(left_px + 1, round((box.right - self.left) * self.scale))
        bottom_px = max(top_px + 1, round((box.bottom - self.top) * self.scale))
        image = self.image.crop((left_px, top_px, right_px, bottom_px))
        return Screenshot(image, box.left, box.top, box.width, box.height, self.scale, self.monitor, self.taken_at)

    def redact(self, regions: Sequence[RectLike]) -> Screenshot:
        """Black out ``regions`` (screen coordinates) in place, dropping anything already encoded."""
        if not regions:
            return self
        from PIL import ImageDraw

        draw = ImageDraw.Draw(self.image)
        for region in regions:
            overlap = Rect.of(region).intersect(self.rect)
            if overlap is None:
                continue
            # Round outwards: a fractional HiDPI scale must never leave a sliver of a secret visible.
            left = math.floor((overlap.left - self.left) * self.scale)
            top = math.floor((overlap.top - self.top) * self.scale)
            right = math.ceil((overlap.right - self.left) * self.scale)
            bottom = math.ceil((overlap.bottom - self.top) * self.scale)
            draw.rectangle((left, top, right - 1, bottom - 1), fill=(0, 0, 0))
        self._cache.clear()
        return self

    # for the model ---------------------------------------------------------------------------------------
    def model_image(
        self, max_slice_nums: int | None = None, downsample_mode: _images.DownsampleMode | None = None
    ) -> PILImage.Image:
        """The image at the size MiniCPM-V will use (see :func:`agentcpm.images.model_image_size`), cached."""
        from PIL import Image

        key = ("image", max_slice_nums, downsample_mode)
        if key not in self._cache:
            size = _images.model_image_size(self.image.width, self.image.height, max_slice_nums, downsample_mode)
            image = self.image
            if size != image.size:
                # Hamming: about two thirds of bicubic's cost (the largest step of a capture), still antialiased.
                image = image.resize(size, Image.Resampling.HAMMING, reducing_gap=3.0)
            self._cache[key] = image
        cached: PILImage.Image = self._cache[key]
        return cached

    def encode(
        self,
        fmt: Format = "auto",
        *,
        max_slice_nums: int | None = None,
        downsample_mode: _images.DownsampleMode | None = None,
        quality: int = JPEG_QUALITY,
    ) -> tuple[bytes, str]:
        """The model-ready image encoded: ``(bytes, mime type)``, cached. ``auto`` gives PNG for screens of few
        colours (lossless and small there), else JPEG with full-resolution colour (4:4:4), sharp enough for text
        at a fraction of PNG's size and encoding time."""
        key = ("encoded", fmt, max_slice_nums, downsample_mode, quality)
        if key not in self._cache:
            image = self.model_image(max_slice_nums, downsample_mode)
            self._cache[key] = _images.encode_image(image, fmt, quality=quality)
        encoded: tuple[bytes, str] = self._cache[key]
        return encoded

    def data_url(
        self,
        fmt: Format = "auto",
        *,
        max_slice_nums: int | None = None,
        downsample_mode: _images.DownsampleMode | None = None,
        quality: int = JPEG_QUALITY,
    ) -> str:
        """The model-ready encoding as a ``data:`` URL (see :meth:`encode`), cached on the shot."""
        key = ("url", fmt, max_slice_nums, downsample_mode, quality)
        if key not in self._cache:
            data, mime = self.encode(
                fmt, max_slice_nums=max_slice_nums, downsample_mode=downsample_mode, quality=quality
            )
            self._cache[key] = _images.data_url(data, mime)
        url: str = self._cache[key]
        return url

    def to_part(
        self, *, max_slice_nums: int | None = None, downsample_mode: _images.DownsampleMode | None = None
    ) -> ImagePart:
        """This shot as an :class:`~agentcpm.types.ImagePart` to put in a message (a model-ready data URL)."""
        return ImagePart(self.data_url(max_slice_nums=max_slice_nums, downsample_mode=downsample_mode))

    def tokens(self, max_slice_nums: int | None = None, downsample_mode: _images.DownsampleMode | None = None) -> int:
        """How many image tokens the model spends on this shot."""
        image = self.model_image(max_slice_nums, downsample_mode)
        return _images.estimate_image_tokens(image.width, image.height, max_slice_nums, downsample_mode)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the full-resolution image (format from the file name)."""
        self.image.save(path)

    # comparing -------------------------------------------------------------------------------------------
    def changed_rect(self, other: Screenshot) -> Rect | None:
        """The screen rectangle where this shot differs from ``other`` (same place and size), or None."""
        from PIL import ImageChops

        if other.image.size != self.image.size or other.rect != self.rect:
            return self.rect
        box = ImageChops.difference(self.image, other.image).getbbox()
        if box is None:
            return None
        left, top, right, bottom = (round(v / self.scale) for v in box)
        return Rect(self.left + left, self.top + top, max(1, right - left), max(1, bottom - top))


def capture(
    monitor: int = 1,
    region: RectLike | None = None,
    *,
    redact: Sequence[RectLike] = (),
) -> Screenshot:
    """Capture a monitor (``0``: all of them) or a ``region=(left, top, width, height)`` in screen coordinates.

    ``redact`` blacks out rectangles (screen coordinates) before anything else sees the pixels. Raises
    :class:`~agentcpm.errors.DisplayError` when there is no display or no such monitor.

    >>> shot = capture(region=(0, 0, 800, 600), redact=[(600, 0, 200, 40)])   # doctest: +SKIP
    >>> shot.image.size   # doctest: +SKIP
    (800, 600)
    """
    from PIL import Image

    grabber = _grabber()
    monitors = list_monitors()
    if region is not None:
        wanted = Rect.of(region)
        area = wanted.intersect(monitors[0])
        if area is None:
            raise DisplayError(f"the region {wanted} is outside the desktop {monitors[0]}")
        centre = monitor_at(area.left + area.width / 2, area.top + area.height / 2, monitors)
        index = centre.index if centre is not None else 0
    else:
        if not 0 <= monitor < len(monitors):
            raise DisplayError(f"no monitor {monitor}: this desktop has monitors 1..{len(monitors) - 1} (0: all)")
        area, index = monitors[monitor], monitor
    bounds = {"left": area.left, "top": area.top, "width": area.width, "height": area.height}
    taken_at = time.time()
    try:
        grabbed = grabber.grab(bounds)
    except Exception as exc:
        _forget_grabber()  # a restarted X server needs a new connection: the next capture makes one
        raise DisplayError(f"screen capture of {area} failed ({exc})") from exc
    # mss gives BGRA rows; the raw decoder reads them straight into an RGB image (the one copy we need).
    image = Image.frombuffer("RGB", grabbed.size, grabbed.raw, "raw", "BGRX", 0, 1)
    shot = Screenshot(
        image,
        area.left,
        area.top,
        area.width,
        area.height,
        scale=grabbed.size[0] / area.width,
        monitor=index,
        taken_at=taken_at,
    )
    return shot.redact(redact)


__all__ = ["Screenshot", "capture", "list_monitors"]
