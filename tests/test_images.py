"""Opening and validating images from every kind of source; encoding them for a request."""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agentcpm import images
from agentcpm.errors import ImageError, ImageTooLargeError
from agentcpm.types import ImagePart


def save(image: Image.Image, path: Path, fmt: str = "PNG") -> Path:
    image.save(path, format=fmt)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height: enough for a decoder to read the size, never the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    image.putpixel((5, 5), (250, 0, 0))
    return save(image, tmp_path / "sample.png")


def test_every_source_kind_opens_to_the_same_pixels(sample: Path):
    data = sample.read_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    array = np.asarray(Image.open(sample).convert("RGB"))
    for source in (sample, str(sample), data, url, Image.open(sample), array):
        image = ImagePart(source).open()
        assert image.mode == "RGB" and image.size == (40, 30)
        assert image.getpixel((5, 5)) == (250, 0, 0), source


def test_http_url_is_downloaded_from_a_real_server(sample: Path):
    handler = partial(SimpleHTTPRequestHandler, directory=str(sample.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        part = ImagePart(f"{base}/sample.png")
        assert part.is_url
        assert part.to_openai() == {"type": "image_url", "image_url": {"url": f"{base}/sample.png"}}
        assert part.open().getpixel((5, 5)) == (250, 0, 0)
        with pytest.raises(ImageError, match="could not download"):
            ImagePart(f"{base}/missing.png").open()
    finally:
        server.shutdown()
        server.server_close()


def test_construction_is_lazy_and_errors_name_the_source(tmp_path: Path):
    missing = ImagePart(tmp_path / "nope.png")  # nothing is read yet
    with pytest.raises(ImageError, match=r"nope\.png") as info:
        missing.open()
    assert info.value.source.endswith("nope.png")

    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.txt is not a readable image"):
        ImagePart(text_file).open()

    truncated = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg"):
        ImagePart(truncated).open()

    with pytest.raises(ImageError, match="base64"):
        ImagePart("data:image/png,rawdata").open()
    with pytest.raises(ImageError, match="unsupported image source"):
        ImagePart(12345).open()
    with pytest.raises(ValueError):
        ImagePart("  ")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_header_only(200_000, 200_000)
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        ImagePart(bomb).open()
    with pytest.raises(ImageTooLargeError, match="over the limit of 1,000,000"):
        ImagePart(png_header_only(2000, 1000), max_pixels=1_000_000).open()
    with pytest.raises(ImageTooLargeError):
        ImagePart(Image.new("RGB", (20, 20)), max_pixels=100).open()
    assert ImagePart(Image.new("RGB", (10, 10)), max_pixels=100).open().size == (10, 10)


def test_transparent_and_palette_images_become_rgb_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert images.load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    gray = Image.new("L", (4, 4), 128)
    assert images.load_image(gray).getpixel((0, 0)) == (128, 128, 128)


def test_auto_format_prefers_png_for_screens_and_jpeg_for_photos():
    screen = Image.new("RGB", (300, 200), (255, 255, 255))
    for y in range(0, 200, 20):
        screen.paste((0, 0, 0), (10, y, 200, y + 2))
    photo = Image.merge("RGB", [Image.effect_noise((300, 200), 60) for _ in range(3)])
    assert images.encode_image(screen)[1] == "image/png"
    assert images.encode_image(photo)[1] == "image/jpeg"
    data, mime = images.encode_image(photo, "png")
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (300, 200)
    assert images.data_url(b"ab", "image/png") == "data:image/png;base64,YWI="
