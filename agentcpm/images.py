"""Image inputs: open and validate them, size them for MiniCPM-V, encode them for a request.

Everything here works on PIL images and never needs torch or torchvision.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigurationError, ImageError, ImageTooLargeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: Images with more pixels than this are refused before they are decoded (a decompression-bomb guard).
#: Change it here, per image with ``ImagePart(..., max_pixels=...)``, or with ``AGENTCPM_MAX_IMAGE_PIXELS``.
MAX_PIXELS: int = int(os.environ.get("AGENTCPM_MAX_IMAGE_PIXELS", 100_000_000))

#: The edge of one MiniCPM-V slice, in pixels.
SLICE_SIZE = 448

#: Largest download accepted for an image URL.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

#: Seconds an image URL has to download in full (not per read: a server trickling bytes is cut off too).
DOWNLOAD_TIMEOUT: float = float(os.environ.get("AGENTCPM_IMAGE_DOWNLOAD_TIMEOUT", 30))

ImageFormat = Literal["auto", "png", "jpeg"]


def describe_source(source: Any) -> str:
    """A short human-readable name for an image source, for error messages."""
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("data:"):
            return f"data URL ({len(text)} characters)"
        return text
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    kind = type(source).__name__
    size = getattr(source, "size", None)
    shape = getattr(source, "shape", None)
    return f"<{kind} {shape if shape is not None else size}>"


def is_url(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ImageError(f"unsupported data URL (only base64 is accepted): {url[:40]}...", url[:40])
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"the data URL is not valid base64: {exc}", url[:40]) from exc


def _download(url: str, timeout: float | None = None) -> bytes:
    """The body at ``url``, or ImageError: ``timeout`` bounds the whole download, not each read."""
    seconds = DOWNLOAD_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + seconds
    outcome: dict[str, Any] = {}
    stop = threading.Event()

    def work() -> None:
        try:
            outcome["data"] = _fetch(url, seconds, deadline, stop)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    # In a thread so that the caller gets its answer at the deadline even while one read still waits;
    # the thread stops at its next chunk (a silent server frees it after one read timeout).
    thread = threading.Thread(target=work, name="agentcpm-image-download", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        stop.set()
        raise _too_slow(url, seconds)
    if "error" in outcome:
        raise outcome["error"]
    data: bytes = outcome["data"]
    return data


def _too_slow(url: str, seconds: float) -> ImageError:
    return ImageError(
        f"the image at {url} did not download within {seconds:g} s; download it yourself and pass the file, "
        "or raise agentcpm.images.DOWNLOAD_TIMEOUT (AGENTCPM_IMAGE_DOWNLOAD_TIMEOUT)",
        url,
    )


def _fetch(url: str, seconds: float, deadline: float, stop: threading.Event) -> bytes:
    import httpx

    too_large = ImageError(
        f"the image at {url} is larger than {MAX_DOWNLOAD_BYTES:,} bytes; download and shrink it yourself, "
        "or raise agentcpm.images.MAX_DOWNLOAD_BYTES",
        url,
    )
    try:
        with httpx.stream("GET", url, timeout=seconds, follow_redirects=True) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                raise too_large
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                if stop.is_set() or time.monotonic() > deadline:
                    raise _too_slow(url, seconds)
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise too_large
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ImageError(f"could not download the image at {url}: {exc}", url) from exc


def _open(source: Any, name: str, limit: int) -> PILImage.Image:
    """The image with its header read and checked (size, pixel limit), its pixels not yet decoded."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
    elif type(source).__module__ == "numpy":
        try:
            image = Image.fromarray(source)
        except (TypeError, ValueError) as exc:
            raise ImageError(f"cannot make an image from the array {name}: {exc}", name) from exc
    else:
        file: Any
        if isinstance(source, (bytes, bytearray, memoryview)):
            file = io.BytesIO(source)
        elif isinstance(source, str) and source.startswith("data:"):
            file = io.BytesIO(_decode_data_url(source))
        elif is_url(source):
            file = io.BytesIO(_download(str(source)))
        elif isinstance(source, (str, Path)):
            path = Path(source).expanduser()
            if not path.is_file():
                raise ImageError(f"no image file at {path}: check the path", str(path))
            file = path  # read as it decodes: the compressed bytes are never all in memory
        else:
            raise ImageError(
                f"unsupported image source {name}: give a path, URL, bytes, PIL image or numpy array", name
            )
        try:
            image = Image.open(file)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                f"{name} is refused as a possible decompression bomb ({exc}); resize it first", name
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name} is not a readable image ({exc})", name) from exc

    width, height = image.size
    if width * height > limit:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,}; "
            "resize it first or raise agentcpm.images.MAX_PIXELS",
            name,
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name} is empty ({width}x{height})", name)
    return image


def _decode(image: PILImage.Image, name: str) -> None:
    try:
        image.load()
    except Exception as exc:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error, ...
        if isinstance(exc, MemoryError):
            raise
        raise ImageError(f"{name} is corrupt or truncated ({exc})", name) from exc


def load_image(source: Any, *, max_pixels: int | None = None) -> PILImage.Image:
    """Open and fully decode an image as RGB, refusing corrupt data and oversized images.

    ``source`` may be a path, an http(s) or data URL, bytes, a PIL image or a numpy array (HxW or HxWxC,
    uint8). Raises :class:`ImageError` (or :class:`ImageTooLargeError`) naming the source. Image URLs are
    downloaded within :data:`DOWNLOAD_TIMEOUT` seconds and :data:`MAX_DOWNLOAD_BYTES` bytes.

    >>> load_image("photo.jpg").size  # doctest: +SKIP
    (1920, 1080)
    """
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    name = describe_source(source)
    image = _open(source, name, limit)
    _decode(image, name)
    return _to_rgb(image, name) if image.mode != "RGB" else image


def load_for_model(
    source: Any,
    max_slice_nums: int | None = None,
    downsample_mode: DownsampleMode | None = None,
    *,
    max_pixels: int | None = None,
) -> PILImage.Image:
    """:func:`load_image` then :func:`fit_for_model`, with the memory of the size the model uses.

    A JPEG larger than :func:`model_image_size` is decoded at a reduced scale (1/2, 1/4 or 1/8, never below
    that size), a file is read as it decodes (its compressed bytes are never all in memory), and a grey
    image is resized before it becomes RGB. The result is exactly :func:`model_image_size`.
    """
    from PIL import Image

    limit = MAX_PIXELS if max_pixels is None else max_pixels
    name = describe_source(source)
    image = _open(source, name, limit)
    size = model_image_size(image.width, image.height, max_slice_nums, downsample_mode)
    if image.format == "JPEG" and image.size != size and not isinstance(source, Image.Image):
        try:
            image.draft(image.mode, size)  # the decoder scales the DCT: the full size is never in memory
        except (OSError, ValueError) as exc:
            raise ImageError(f"{name} is not a readable image ({exc})", name) from exc
    _decode(image, name)
    if image.mode in ("RGB", "L") and image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)  # before converting: smaller
    if image.mode != "RGB":
        image = _to_rgb(image, name)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return image


def _to_rgb(image: PILImage.Image, name: str = "") -> PILImage.Image:
    from PIL import Image

    try:
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "RGBa", "La"):
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image)  # an RGBA mask means its alpha band: no extra copy of it
            return background
        return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageError(f"{name} cannot be converted to RGB ({exc})", name) from exc


#: JPEG quality: with full-resolution colour (4:4:4), text edges stay as sharp as the vision encoder can see.
JPEG_QUALITY = 90
#: "auto" sends PNG when the image has at most this many colours (in a 320x180 sample): see choose_format.
PNG_MAX_COLORS = 32


def choose_format(image: PILImage.Image) -> Literal["png", "jpeg"]:
    """What ``auto`` sends: PNG for images of at most :data:`PNG_MAX_COLORS` colours in a 320x180 sample
    (diagrams, charts, blank screens: lossless, and 4x smaller than JPEG there), JPEG for everything else.
    Screens with anti-aliased text (200 to 250 colours in the sample) come out the same size in both formats
    and JPEG (quality 90, 4:4:4) encodes 6x faster; photos are 4 to 6x smaller as JPEG. Measured with
    benchmarks/encode_bench.py, recorded in docs/performance.md ("Screen capture": PNG or JPEG)."""
    from PIL import Image

    sample = image.resize((min(image.width, 320), min(image.height, 180)), Image.Resampling.NEAREST)
    return "png" if sample.getcolors(maxcolors=PNG_MAX_COLORS) is not None else "jpeg"


def looks_like_text(image: PILImage.Image) -> bool:
    """True for images of few colours (diagrams, charts, blank screens), which ``auto`` sends as PNG."""
    return choose_format(image) == "png"


def encode_image(image: PILImage.Image, fmt: ImageFormat = "auto", *, quality: int = JPEG_QUALITY) -> tuple[bytes, str]:
    """Encode an RGB image for the model; returns ``(data, mime_type)``. The one encoder of agentcpm (images
    and screenshots). ``auto``: :func:`choose_format`. PNG at compress level 1 (the fast end: the bytes are
    sent once); JPEG at ``quality`` with full-resolution colour from 90 up (4:4:4), else 4:2:0."""
    if fmt == "auto":
        fmt = choose_format(image)
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "image/png"
    if fmt != "jpeg":
        raise ConfigurationError(f'unknown image format {fmt!r}: use "auto", "png" or "jpeg"')
    image.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buffer.getvalue(), "image/jpeg"


def data_url(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


DownsampleMode = Literal["16x", "4x"]

#: The processor's own defaults (processor_config.json of openbmb/MiniCPM-V-4.6).
DEFAULT_MAX_SLICE_NUMS = 9
PATCH_SIZE = 14


@dataclass(frozen=True)
class SlicePlan:
    """How MiniCPM-V's processor cuts an image: a thumbnail of the whole image plus a grid of slices.

    Sizes are ``(width, height)`` in pixels as the vision encoder sees them; ``grid`` is ``(rows, cols)``
    or None when the image is not sliced.
    """

    thumbnail: tuple[int, int]
    grid: tuple[int, int] | None
    slice: tuple[int, int] | None
    tokens: int

    @property
    def size(self) -> tuple[int, int]:
        """The largest resolution the model uses from the image: the sliced image, else the thumbnail."""
        if self.grid is None or self.slice is None:
            return self.thumbnail
        return self.slice[0] * self.grid[1], self.slice[1] * self.grid[0]


def _ensure_divide(length: float, divisor: int) -> int:
    return max(round(length / divisor) * divisor, divisor)


def _best_resize(width: float, height: float, unit: int, allow_upscale: bool) -> tuple[int, int]:
    # Mirrors MiniCPMV4_6ImageProcessorPil.find_best_resize, float operations included, so counts match.
    if width * height > SLICE_SIZE * SLICE_SIZE or allow_upscale:
        aspect_ratio = width / height
        height = int(SLICE_SIZE / math.sqrt(aspect_ratio))
        width = int(height * aspect_ratio)
    return _ensure_divide(width, unit), _ensure_divide(height, unit)


def _sliced_grid(width: int, height: int, max_slice_nums: int) -> tuple[int, int] | None:
    # Mirrors MiniCPMV4_6ImageProcessorPil.get_sliced_grid: the grid whose shape best matches the image's.
    log_ratio = math.log(width / height)
    multiple = min(math.ceil(width * height / (SLICE_SIZE * SLICE_SIZE)), max_slice_nums)
    if multiple <= 1:
        return None
    best, min_error = (1, 1), float("inf")
    for num_slices in (multiple - 1, multiple, multiple + 1):
        if num_slices == 1 or num_slices > max_slice_nums:
            continue
        for rows in range(1, num_slices + 1):
            if num_slices % rows == 0:
                error = abs(log_ratio - math.log((num_slices // rows) / rows))
                if error < min_error or (error == min_error and rows > best[0]):
                    best, min_error = (rows, num_slices // rows), error
    return best


def slice_plan(
    width: int, height: int, max_slice_nums: int | None = None, downsample_mode: DownsampleMode | None = None
) -> SlicePlan:
    """What MiniCPM-V 4.6's processor does with a ``width`` x ``height`` image (see :class:`SlicePlan`).

    >>> slice_plan(1920, 1080, 36).grid
    (3, 4)
    """
    if width < 1 or height < 1:
        raise ImageError(f"an image must be at least 1x1 pixels, not {width}x{height}")
    slices = DEFAULT_MAX_SLICE_NUMS if max_slice_nums is None else max(1, int(max_slice_nums))
    # "4x" merges one 2x2 block of patches per token, "16x" merges twice.
    merge = 2 if (downsample_mode or "16x") == "4x" else 4
    unit, per_token = PATCH_SIZE * merge, merge * merge
    grid = _sliced_grid(width, height, slices)
    thumbnail = _best_resize(width, height, unit, allow_upscale=grid is None)
    tokens = (thumbnail[0] // PATCH_SIZE) * (thumbnail[1] // PATCH_SIZE) // per_token
    if grid is None:
        return SlicePlan(thumbnail, None, None, tokens)
    rows, cols = grid
    piece = _best_resize(_ensure_divide(width, cols) / cols, _ensure_divide(height, rows) / rows, unit, True)
    tokens += rows * cols * ((piece[0] // PATCH_SIZE) * (piece[1] // PATCH_SIZE) // per_token)
    return SlicePlan(thumbnail, grid, piece, tokens)


def estimate_image_tokens(
    width: int, height: int, max_slice_nums: int | None = 9, downsample_mode: DownsampleMode | None = "16x"
) -> int:
    """The exact number of image tokens (``<|image_pad|>``) MiniCPM-V 4.6's processor makes for an image.

    ``None`` means the processor's defaults (9 slices, "16x"). The ``<image>``/``<slice>`` markers and the
    ``<image_id>`` prefix come on top (a few tokens per slice).

    >>> estimate_image_tokens(1920, 1080, max_slice_nums=36), estimate_image_tokens(1920, 1080, 36, "4x")
    (822, 3276)
    """
    return slice_plan(width, height, max_slice_nums, downsample_mode).tokens


def model_image_size(
    width: int, height: int, max_slice_nums: int | None = None, downsample_mode: DownsampleMode | None = None
) -> tuple[int, int]:
    """The smallest size to send an image at with nothing lost: the model sees the same slices and tokens.

    The processor stretches every image to its own slice grid, so pixels beyond that grid's resolution are
    thrown away on arrival; sending the image at this size saves encoding time and bytes. Images the model
    would upscale keep their size.

    >>> model_image_size(1920, 1080)  # 2x4 slices of 448x448, 578 tokens either way
    (1792, 1008)
    """
    plan = slice_plan(width, height, max_slice_nums, downsample_mode)
    size = (width, height)
    # Shrinking can repeat (rounding may need a pixel to spare); stop at a size that maps to itself.
    while (smaller := _shrink(size, plan, max_slice_nums, downsample_mode)) != size:
        size = smaller
    return size


def _shrink(
    size: tuple[int, int], plan: SlicePlan, max_slice_nums: int | None, downsample_mode: DownsampleMode | None
) -> tuple[int, int]:
    width, height = size
    target_w, target_h = plan.size
    if target_w >= width or target_h >= height:
        return size

    def scaled(new_width: int) -> tuple[int, int]:  # same aspect ratio, never below the model's resolution
        return new_width, min(height, max(target_h, math.ceil(new_width * height / width - 1e-9)))

    # The smallest width (aspect kept) at which the processor still makes the same plan; the slice count
    # depends on the area, so the answer can lie well above the model's own resolution.
    low, high = max(target_w, math.ceil(target_h * width / height - 1e-9)), width
    while low < high:
        middle = (low + high) // 2
        if slice_plan(*scaled(middle), max_slice_nums, downsample_mode) == plan:
            high = middle
        else:
            low = middle + 1
    candidate = scaled(low)
    return candidate if slice_plan(*candidate, max_slice_nums, downsample_mode) == plan else size


def fit_for_model(
    image: PILImage.Image, max_slice_nums: int | None = None, downsample_mode: DownsampleMode | None = None
) -> PILImage.Image:
    """Downscale (never upscale) an image to :func:`model_image_size`; the model sees exactly the same."""
    from PIL import Image

    size = model_image_size(image.width, image.height, max_slice_nums, downsample_mode)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def image_to_data_url(
    source: Any,
    *,
    fmt: ImageFormat = "auto",
    max_slice_nums: int | None = None,
    max_pixels: int | None = None,
    downsample_mode: DownsampleMode | None = None,
) -> str:
    """Load, validate, resize for the model (:func:`load_for_model`) and encode an image as a data URL."""
    image = load_for_model(source, max_slice_nums, downsample_mode, max_pixels=max_pixels)
    return data_url(*encode_image(image, fmt))
