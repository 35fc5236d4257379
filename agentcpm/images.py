"""Image inputs: open and validate them, size them for MiniCPM-V, encode them for a request.

Everything here works on PIL images and never needs torch or torchvision.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ImageError, ImageTooLargeError

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: Images with more pixels than this are refused before they are decoded (a decompression-bomb guard).
#: Change it here, per image with ``ImagePart(..., max_pixels=...)``, or with ``AGENTCPM_MAX_IMAGE_PIXELS``.
MAX_PIXELS: int = int(os.environ.get("AGENTCPM_MAX_IMAGE_PIXELS", 100_000_000))

#: The edge of one MiniCPM-V slice, in pixels.
SLICE_SIZE = 448

#: Largest download accepted for an image URL.
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

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


def _download(url: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=30.0, follow_redirects=True) as response:
            response.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise ImageError(f"image at {url} is larger than {MAX_DOWNLOAD_BYTES} bytes", url)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ImageError(f"could not download the image at {url}: {exc}", url) from exc


def load_image(source: Any, *, max_pixels: int | None = None) -> PILImage.Image:
    """Open and fully decode an image as RGB, refusing corrupt data and oversized images.

    ``source`` may be a path, an http(s) or data URL, bytes, a PIL image or a numpy array (HxW or HxWxC,
    uint8). Raises :class:`ImageError` (or :class:`ImageTooLargeError`) naming the source.

    >>> load_image("photo.jpg").size  # doctest: +SKIP
    (1920, 1080)
    """
    from PIL import Image, UnidentifiedImageError

    limit = MAX_PIXELS if max_pixels is None else max_pixels
    name = describe_source(source)

    if isinstance(source, Image.Image):
        image = source
    elif type(source).__module__ == "numpy":
        try:
            image = Image.fromarray(source)
        except (TypeError, ValueError) as exc:
            raise ImageError(f"cannot make an image from the array {name}: {exc}", name) from exc
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif isinstance(source, str) and source.startswith("data:"):
            data = _decode_data_url(source)
        elif is_url(source):
            data = _download(str(source))
        elif isinstance(source, (str, Path)):
            path = Path(source).expanduser()
            if not path.is_file():
                raise ImageError(f"no image file at {path}: check the path", str(path))
            data = path.read_bytes()
        else:
            raise ImageError(
                f"unsupported image source {name}: give a path, URL, bytes, PIL image or numpy array", name
            )
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                f"{name} is refused as a possible decompression bomb ({exc}); resize it first", name
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError) as exc:
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
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name} is corrupt or truncated ({exc})", name) from exc
    if image.mode != "RGB":
        image = _to_rgb(image)
    return image


def _to_rgb(image: PILImage.Image) -> PILImage.Image:
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def looks_like_text(image: PILImage.Image) -> bool:
    """True for screenshots, documents and diagrams (few distinct colours), where PNG keeps text crisp."""
    from PIL import Image

    thumb = image if image.width * image.height <= 256 * 256 else image.resize((256, 256), Image.Resampling.NEAREST)
    colors = thumb.getcolors(maxcolors=4096)
    return colors is not None and len(colors) < 2048


def encode_image(image: PILImage.Image, fmt: ImageFormat = "auto", *, quality: int = 90) -> tuple[bytes, str]:
    """Encode an RGB image; returns ``(data, mime_type)``. ``auto`` picks PNG for text-like images."""
    if fmt == "auto":
        fmt = "png" if looks_like_text(image) else "jpeg"
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "image/png"
    image.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buffer.getvalue(), "image/jpeg"


def data_url(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def max_useful_pixels(max_slice_nums: int | None = None) -> int:
    """About the most pixels MiniCPM-V can use from one image with this many slices."""
    slices = 9 if max_slice_nums is None else max(1, max_slice_nums)
    return SLICE_SIZE * SLICE_SIZE * (slices + 1)


def fit_for_model(image: PILImage.Image, max_slice_nums: int | None = None) -> PILImage.Image:
    """Downscale (never upscale) an image that has more pixels than the model can use."""
    from PIL import Image

    limit = max_useful_pixels(max_slice_nums)
    pixels = image.width * image.height
    if pixels <= limit:
        return image
    scale = (limit / pixels) ** 0.5
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def image_to_data_url(
    source: Any,
    *,
    fmt: ImageFormat = "auto",
    max_slice_nums: int | None = None,
    max_pixels: int | None = None,
) -> str:
    """Load, validate, resize for the model and encode an image as a data URL."""
    image = fit_for_model(load_image(source, max_pixels=max_pixels), max_slice_nums)
    return data_url(*encode_image(image, fmt))
