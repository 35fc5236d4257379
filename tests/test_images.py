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
from agentcpm.errors import ConfigurationError, ImageError, ImageTooLargeError
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


def test_one_encoder_decides_png_or_jpeg_by_colours_for_images_and_screenshots():
    # A flat app screen with anti-aliased text has a couple of hundred colours: PNG is no smaller there and
    # encodes about 6x slower than JPEG (docs/performance.md), so auto sends JPEG; a few-colour diagram stays PNG.
    from agentcpm.screen import Screenshot

    screen = Image.new("RGB", (1792, 1008), (236, 236, 236))
    for i in range(200):  # anti-aliased text edges: 200 shades of grey
        screen.paste((i, i, i), (10 + (i % 40) * 40, 10 + (i // 40) * 30, 40 + (i % 40) * 40, 30 + (i // 40) * 30))
    diagram = Image.new("RGB", (1792, 1008), "white")
    diagram.paste((30, 120, 200), (200, 200, 900, 700))
    assert images.choose_format(screen) == "jpeg" and images.encode_image(screen)[1] == "image/jpeg"
    assert images.choose_format(diagram) == "png" and images.encode_image(diagram)[1] == "image/png"
    for image in (screen, diagram):  # screenshots go through the same encoder, byte for byte
        shot = Screenshot(image, 0, 0, *image.size)
        assert shot.encode() == images.encode_image(shot.model_image())
    with pytest.raises(ConfigurationError):
        images.encode_image(diagram, "gif")  # type: ignore[arg-type]


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


# ------------------------------------------------------------------------------ large images, memory


def big_jpeg(path: Path, width: int, height: int) -> Path:
    """A JPEG with some detail (flat images would hide a decoding mistake)."""
    small = Image.merge("RGB", [Image.effect_noise((width // 32, height // 32), 60) for _ in range(3)])
    small.resize((width, height), Image.Resampling.BILINEAR).save(path, format="JPEG", quality=85)
    return path


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_sent_at_the_model_size(tmp_path: Path, monkeypatch):
    from PIL import JpegImagePlugin

    path = big_jpeg(tmp_path / "big.jpg", 4000, 3000)
    scales = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # type: ignore[no-untyped-def]
        result = real_draft(self, mode, size)
        scales.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    target = images.model_image_size(4000, 3000)
    image = images.load_for_model(str(path))
    assert image.size == target and image.mode == "RGB"
    assert target == (1568, 1176)
    assert scales == [(2000, 1500)]  # decoded at 1/2 scale, the smallest still above the size sent
    # What a server gets: the same size, and the part does not keep a full-size decode.
    part = ImagePart(path)
    url = part.to_openai()["image_url"]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == target
    assert part._image is None
    # A part already opened in full is sent from that image, at the same size.
    opened = ImagePart(path)
    assert opened.open().size == (4000, 3000)
    assert Image.open(io.BytesIO(base64.b64decode(opened.data_url().split(",", 1)[1]))).size == target


def test_draft_decoding_keeps_the_picture(tmp_path: Path):
    path = big_jpeg(tmp_path / "big.jpg", 3200, 2400)
    full = images.fit_for_model(images.load_image(path))
    drafted = images.load_for_model(path)
    assert full.size == drafted.size
    difference = np.abs(np.asarray(full, dtype=np.int16) - np.asarray(drafted, dtype=np.int16))
    assert difference.mean() < 3


def test_grey_and_transparent_large_images_come_out_rgb_at_the_model_size(tmp_path: Path):
    grey = Image.effect_noise((2400, 1800), 30)
    rgba = Image.new("RGBA", (2400, 1800), (0, 0, 0, 0))
    for source in (grey, rgba, grey.convert("P")):
        path = save(source, tmp_path / f"{source.mode}.png")
        image = images.load_for_model(path)
        assert image.mode == "RGB" and image.size == images.model_image_size(2400, 1800)
    assert images.load_for_model(tmp_path / "RGBA.png").getpixel((5, 5)) == (255, 255, 255)


PEAK_SCRIPT = """
import sys
from pathlib import Path
from PIL import Image, JpegImagePlugin, PngImagePlugin
from agentcpm.types import ImagePart
def peak():
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) // 1024
before = peak()
ImagePart(sys.argv[1]).to_openai()
print(peak() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak resident size from /proc")
def test_sending_a_36_megapixel_jpeg_never_holds_it_decoded_in_full(tmp_path: Path):
    import subprocess
    import sys

    path = big_jpeg(tmp_path / "huge.jpg", 6000, 6000)  # 108 MB once decoded as RGB
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    added_mb = int(out.stdout.split()[-1])
    assert added_mb < 80, out  # about 10 MB with draft decoding; 180 MB and more when decoded in full


# ------------------------------------------------------------------------------ corrupt data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_corrupt_and_truncated_images_always_raise_image_error(fmt: str):
    photo = Image.merge("RGB", [Image.effect_noise((900, 700), 40) for _ in range(3)])
    buffer = io.BytesIO()
    photo.save(buffer, format=fmt)
    data = buffer.getvalue()
    damaged = [data[: len(data) * k // 8] for k in range(1, 8)]
    for offset in (len(data) // 3, len(data) // 2, 20, 40):
        scrambled = bytearray(data)
        scrambled[offset : offset + 64] = bytes(range(64))
        damaged.append(bytes(scrambled))
    for case in damaged:
        for attempt in (images.load_image, images.load_for_model, images.image_to_data_url):
            try:
                result = attempt(case)
            except ImageError as exc:
                assert "bytes>" in str(exc)  # names the source
            else:  # some damage leaves a decodable image (a scrambled pixel area): then it must be whole
                assert isinstance(result, str) or result.mode == "RGB"


# ------------------------------------------------------------------------------ image URLs


class Trickle:
    """A real HTTP server on 127.0.0.1 that sends an image's headers, then one byte every ``pause`` seconds."""

    def __init__(self, pause: float, length: int = 10_000, declared: int | None = None) -> None:
        from http.server import BaseHTTPRequestHandler

        done = self.done = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(declared if declared is not None else length))
                self.end_headers()
                try:
                    for _ in range(length):
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                        if done.wait(pause):
                            return
                except OSError:  # the client gave up
                    return

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow.png"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


def test_an_image_url_that_trickles_bytes_hits_a_whole_download_deadline(monkeypatch):
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", 1.5)
    for pause in (0.1, 600.0):  # one byte every 0.1 s (each read is quick), and a server gone silent
        server = Trickle(pause)
        try:
            with pytest.raises(ImageError, match=r"did not download within 1\.5 s") as info:
                ImagePart(server.url).open()
            assert info.value.source == server.url and server.url in str(info.value)
            assert "AGENTCPM_IMAGE_DOWNLOAD_TIMEOUT" in str(info.value)
        finally:
            server.close()


def test_an_image_url_larger_than_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_DOWNLOAD_BYTES", 1000)
    server = Trickle(0.0, length=5000)  # declared and sent: refused on the Content-Length
    try:
        with pytest.raises(ImageError, match="larger than 1,000 bytes"):
            ImagePart(server.url).open()
    finally:
        server.close()
    server = Trickle(0.0, length=5000, declared=10_000)  # not declared truthfully: refused as it arrives
    try:
        with pytest.raises(ImageError, match="larger than 1,000 bytes"):
            images.load_image(server.url)
    finally:
        server.close()
