"""Peak memory and time to turn a 100-megapixel JPEG and PNG into what MiniCPM-V gets.

    python benchmarks/image_bench.py [--runs 3] [--size 10000x10000] [--dir /tmp/agentcpm-image-bench]

Writes a photo-like test image (smooth colour fields with fine noise, 100 MP by default, the largest size
``agentcpm.images.MAX_PIXELS`` accepts) once as JPEG (quality 90), PNG and PNG with an alpha gradient, then
measures, each in a fresh child process so the peaks do not mix:

- ``send``: ``ImagePart(path).to_openai(max_slice_nums=S)``, the data URL a server gets (S = 9, the
  processor's default, and 36, about 7 MP sent);
- ``open``: ``ImagePart(path).open()``, the image the in-process model and the CLI's check get;
- ``naive``: read the file, decode it whole, convert to RGB, resize to the same size as ``send`` (bicubic),
  JPEG-encode and base64 it: what agentcpm did before it decoded large images at a reduced scale.

Prints, per file and path, the median wall time and the peak resident memory the child added over its own
baseline after imports (``VmHWM``, the highest of the runs).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def rss_peak_mb() -> float:
    """This process's peak resident memory in MB (VmHWM on Linux: ru_maxrss keeps the parent's peak over exec)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def make_images(directory: Path, width: int, height: int) -> dict[str, Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "JPEG": directory / f"photo-{width}x{height}.jpg",
        "PNG": directory / f"photo-{width}x{height}.png",
        "RGBA PNG": directory / f"photo-{width}x{height}-rgba.png",
    }
    if all(path.exists() for path in paths.values()):
        return paths
    small = (max(1, width // 64), max(1, height // 64))
    channels = [Image.effect_noise(small, 90).resize((width, height), Image.Resampling.BICUBIC) for _ in range(3)]
    image = Image.merge("RGB", channels)
    del channels
    grain = Image.effect_noise((width, height), 12).convert("RGB")
    image = Image.blend(image, grain, 0.15)
    del grain
    image.save(paths["JPEG"], format="JPEG", quality=90)
    image.save(paths["PNG"], format="PNG", compress_level=1)
    image.putalpha(Image.linear_gradient("L").resize((width, height)))
    image.save(paths["RGBA PNG"], format="PNG", compress_level=1)
    return paths


def child(mode: str, path: str, slices: int) -> None:
    from PIL import Image

    from agentcpm import images
    from agentcpm.types import ImagePart

    baseline = rss_peak_mb()
    started = time.perf_counter()
    if mode == "send":
        url = ImagePart(path).to_openai(max_slice_nums=slices)["image_url"]["url"]
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size
    elif mode == "open":
        sent = ImagePart(path).open().size
    else:
        full = Image.open(io.BytesIO(Path(path).read_bytes()))
        full.load()
        full = full.convert("RGB")
        size = images.model_image_size(full.width, full.height, slices)
        small = full.resize(size, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=90)
        url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
        sent = small.size
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": rss_peak_mb() - baseline, "size": list(sent)}))


def measure(mode: str, path: Path, slices: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), str(slices)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="child processes per path and file (default 3)")
    parser.add_argument("--size", default="10000x10000", help="test image size, WxH (default 10000x10000)")
    parser.add_argument("--dir", default="/tmp/agentcpm-image-bench", help="where the test images are kept")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "SLICES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    width, height = (int(n) for n in args.size.lower().split("x"))
    paths = make_images(Path(args.dir), width, height)
    print(f"{width}x{height} = {width * height / 1e6:.0f} MP; {args.runs} runs each; peak = RSS added over imports")
    print(f"{'file':<22} {'path':<14} {'sent as':>11} {'median s':>9} {'peak MB':>9}")
    for fmt, path in paths.items():
        label = f"{fmt} {path.stat().st_size / 1e6:.1f} MB"
        for mode, slices in (("naive", 36), ("send", 36), ("send", 9), ("open", 9)):
            results = [measure(mode, path, slices) for _ in range(args.runs)]
            seconds = statistics.median(r["seconds"] for r in results)
            peak = max(r["peak_mb"] for r in results)
            size = "x".join(str(n) for n in results[0]["size"])
            name = mode if mode == "open" else f"{mode} {slices}"
            print(f"{label:<22} {name:<14} {size:>11} {seconds:>9.2f} {peak:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
