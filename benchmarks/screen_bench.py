"""Screen capture -> model-ready data URL, against the naive path, at 1080p and 1440p.

    python benchmarks/screen_bench.py [--rounds 40] [--display :N]

Starts its own Xvfb (2560x1440) unless ``--display`` names a running X server, paints a busy desktop with a
Tk window (coloured code-like text, a photo-like gradient, flat panels), then times, alternating round by
round so both see the same machine load:

- agentcpm: ``capture(region=...)`` (mss, one BGRX decode) then ``Screenshot.data_url("jpeg")`` (one Hamming
  resize straight to the size MiniCPM-V uses at the default 9 slices, JPEG quality 90 4:4:4, base64);
- naive: ``PIL.ImageGrab.grab(xdisplay=...)``, ``.convert("RGB")``, resize to the same size (bicubic), the same
  JPEG settings, base64.

Prints medians, frames per second, the ratio of medians (target: agentcpm <= 0.6x naive), the ratio of CPU
time spent (this process plus the X server, summed over the rounds: steadier than wall time on a busy
machine; only when the benchmark started the X server), the breakdown of the agentcpm path, and the peak
resident memory each path adds (measured in a fresh child process per path).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"1080p": (1920, 1080), "1440p": (2560, 1440)}
QUALITY = 90

DESKTOP_SCRIPT = r"""
import random, tkinter as tk
random.seed(7)
root = tk.Tk()
root.overrideredirect(True)
root.geometry("2560x1440+0+0")
canvas = tk.Canvas(root, width=2560, height=1440, background="#1e1e1e", highlightthickness=0)
canvas.place(x=0, y=0)
words = "def class return import self for in if else while yield lambda None True False print async await".split()
colours = ["#d4d4d4", "#569cd6", "#ce9178", "#6a9955", "#c586c0", "#dcdcaa", "#4ec9b0", "#9cdcfe"]
for row in range(0, 1440, 18):
    x = 10 + random.randint(0, 6) * 20
    while x < 1500:
        word = random.choice(words) + random.choice(["(", ")", ":", ".", " ", ", ", " = "])
        canvas.create_text(x, row + 9, text=word, anchor="w", fill=random.choice(colours), font=("TkFixedFont", 11))
        x += 9 * len(word) + 6
canvas.create_rectangle(1540, 0, 2560, 60, fill="#333333", outline="")
canvas.create_rectangle(1540, 1100, 2560, 1440, fill="#f3f3f3", outline="")
for row in range(1120, 1440, 22):
    canvas.create_text(1560, row, text=f"  PASSED tests/test_module_{row}.py::test_case - 0.{row % 97:02d}s",
                       anchor="w", fill="#107c10", font=("TkDefaultFont", 11))
# A photo-like area: a noisy gradient (250x250, shown 4x).
rows = []
for y in range(250):
    line = " ".join(
        "#%02x%02x%02x" % ((x + y) % 256, (x // 2 + 80 + random.randint(0, 40)) % 256, (200 - y // 2) % 256)
        for x in range(250)
    )
    rows.append("{" + line + "}")
small = tk.PhotoImage(width=250, height=250)
small.put(" ".join(rows))
big = small.zoom(4)
canvas.create_image(1540, 80, image=big, anchor="nw")
root.after(500, lambda: print("ready", flush=True))
root.mainloop()
"""


def start_display() -> tuple[str, list[subprocess.Popen[bytes]]]:
    if shutil.which("Xvfb") is None:
        sys.exit("Xvfb is not installed: apt-get install xvfb (or pass --display)")
    number = next(n for n in range(150, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    name = f":{number}"
    server = subprocess.Popen(["Xvfb", name, "-screen", "0", "2560x1440x24", "-nolisten", "tcp"])
    for _ in range(500):
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        time.sleep(0.01)
    return name, [server]


def paint(display: str) -> subprocess.Popen[bytes]:
    app = subprocess.Popen(
        [sys.executable, "-c", DESKTOP_SCRIPT], env={**os.environ, "DISPLAY": display}, stdout=subprocess.PIPE
    )
    assert app.stdout is not None
    app.stdout.readline()  # "ready"
    time.sleep(0.3)
    return app


def ours(region: tuple[int, int, int, int]) -> str:
    from agentcpm.screen import capture

    return capture(region=region).data_url("jpeg", quality=QUALITY)


def naive(region: tuple[int, int, int, int], display: str, size: tuple[int, int]) -> str:
    from PIL import Image, ImageGrab

    left, top, width, height = region
    image = ImageGrab.grab(bbox=(left, top, left + width, top + height), xdisplay=display).convert("RGB")
    image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def peak_rss_child(path: str, label: str, display: str) -> float:
    """MB of resident memory one path adds at its peak, in a fresh process: the peak (VmHWM, reset through
    /proc/self/clear_refs after the imports) minus the resident size before the first capture."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from screen_bench import ours, naive, SIZES
from agentcpm.images import model_image_size
import PIL.ImageGrab, agentcpm.screen, mss
size = SIZES[{label!r}]
region = (0, 0, *size)
run = (lambda: ours(region)) if {path!r} == "ours" else (lambda: naive(region, {display!r}, model_image_size(*size)))
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) / 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
for _ in range(5):
    run()
print(status("VmHWM") - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def breakdown(region: tuple[int, int, int, int]) -> dict[str, float]:
    """Median milliseconds of each step of the agentcpm path."""
    from PIL import Image

    from agentcpm.images import data_url
    from agentcpm.screen import Screenshot
    from agentcpm.screen.capture import _grabber

    grabber = _grabber()
    bounds = dict(zip(("left", "top", "width", "height"), region, strict=True))
    steps: dict[str, list[float]] = {"grab": [], "decode BGRX": [], "resize": [], "jpeg": [], "base64": []}
    for _ in range(15):
        t0 = time.perf_counter()
        grabbed = grabber.grab(bounds)
        t1 = time.perf_counter()
        shot = Screenshot(Image.frombuffer("RGB", grabbed.size, grabbed.raw, "raw", "BGRX", 0, 1), *region)
        t2 = time.perf_counter()
        shot.model_image()
        t3 = time.perf_counter()
        data, mime = shot.encode("jpeg", quality=QUALITY)
        t4 = time.perf_counter()
        data_url(data, mime)
        t5 = time.perf_counter()
        for name, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            steps[name].append(value * 1000)
    return {name: statistics.median(values) for name, values in steps.items()}


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of another process so far, e.g. the X server; 0 when unknown."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--display", help="an X display to use instead of starting Xvfb")
    args = parser.parse_args()

    children: list[subprocess.Popen[bytes]] = []
    display = args.display
    try:
        server_pid = None
        if display is None:
            display, children = start_display()
            server_pid = children[0].pid
        os.environ["DISPLAY"] = display
        children.append(paint(display))
        from agentcpm.images import model_image_size

        print(
            f"screen capture -> model-ready data URL, {args.rounds} rounds, display {display}, "
            f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"{'screen':<8}{'sent as':>11}{'agentcpm ms':>13}{'fps':>7}{'naive ms':>10}{'fps':>7}{'ratio':>7}"
            f"{'CPU ratio':>11}{'KB':>6}{'agentcpm MB':>13}{'naive MB':>10}"
        )
        for label, (width, height) in SIZES.items():
            region = (0, 0, width, height)
            size = model_image_size(width, height)
            ours(region), naive(region, display, size)  # warm up both
            mine: list[float] = []
            theirs: list[float] = []
            # CPU seconds of this process plus the X server's: the work each path causes, whatever the load.
            cpu = [0.0, 0.0]
            for _ in range(args.rounds):
                c0, x0, t0 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
                url = ours(region)
                c1, x1, t1 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
                naive(region, display, size)
                c2, x2, t2 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
                mine.append((t1 - t0) * 1000)
                theirs.append((t2 - t1) * 1000)
                cpu[0] += (c1 - c0) + (x1 - x0)
                cpu[1] += (c2 - c1) + (x2 - x1)
            a, b = statistics.median(mine), statistics.median(theirs)
            mem_a = peak_rss_child("ours", label, display)
            mem_b = peak_rss_child("naive", label, display)
            print(
                f"{label:<8}{f'{size[0]}x{size[1]}':>11}{a:>13.1f}{1000 / a:>7.1f}{b:>10.1f}{1000 / b:>7.1f}"
                f"{a / b:>6.2f}x{cpu[0] / cpu[1]:>10.2f}x{len(url) * 3 // 4 // 1024:>6}{mem_a:>13.1f}{mem_b:>10.1f}"
            )
        for label, (width, height) in SIZES.items():
            parts = breakdown((0, 0, width, height))
            print(f"agentcpm {label} breakdown (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait()


if __name__ == "__main__":
    main()
