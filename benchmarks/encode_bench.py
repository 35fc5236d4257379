"""PNG or JPEG for what the model sees: encode time and bytes for screens and photos at the model's size.

    python benchmarks/encode_bench.py [--rounds 15] [--photo PATH]

Starts an Xvfb (1920x1080) and paints three desktops with Tk, captures each with ``agentcpm.screen.capture``
and takes the image MiniCPM-V gets at 9 slices (1792x1008):

- busy: the code editor of ``screen_bench.py`` (coloured text on dark, a noisy photo-like area, flat panels);
- flat: a light dialog-style window (grey chrome, white panels, black text, buttons), the common app screen;
- terminal: monospace text on black;

plus a flat 3-colour diagram, a synthetic photo (smooth gradients with sensor-like noise, 1792x1008) and,
with ``--photo``, a real one.
For each it prints the colours in the 320x180 sample the encoder's rule looks at, the rule's choice, and the
median encode time and size of PNG (compress level 1) and JPEG (quality 90, 4:4:4), plus base64 time.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

FLAT_SCRIPT = r"""
import tkinter as tk
root = tk.Tk()
root.overrideredirect(True)
root.geometry("1920x1080+0+0")
root.configure(background="#ececec")
bar = tk.Frame(root, background="#dcdcdc", height=40)
bar.pack(fill="x")
for name in ("File", "Edit", "View", "Tools", "Help"):
    tk.Label(bar, text=name, background="#dcdcdc", font=("TkDefaultFont", 11)).pack(side="left", padx=10, pady=8)
body = tk.Frame(root, background="#ececec")
body.pack(fill="both", expand=True, padx=20, pady=20)
side = tk.Listbox(body, font=("TkDefaultFont", 11), width=28, borderwidth=1)
for i in range(40):
    side.insert("end", f"  Document {i:02d} - quarterly report.pdf")
side.pack(side="left", fill="y")
panel = tk.Frame(body, background="white", borderwidth=1, relief="solid")
panel.pack(side="left", fill="both", expand=True, padx=20)
for row in range(18):
    tk.Label(panel, text=f"Field {row}:", background="white", font=("TkDefaultFont", 11)).grid(
        row=row, column=0, sticky="e", padx=10, pady=6)
    entry = tk.Entry(panel, font=("TkDefaultFont", 11), width=60)
    entry.insert(0, f"value of setting number {row} (editable text)")
    entry.grid(row=row, column=1, sticky="w", pady=6)
for i, name in enumerate(("OK", "Cancel", "Apply")):
    tk.Button(panel, text=name, width=10, font=("TkDefaultFont", 11)).grid(row=19, column=i, pady=20)
root.after(500, lambda: print("ready", flush=True))
root.mainloop()
"""

TERMINAL_SCRIPT = r"""
import random, tkinter as tk
random.seed(3)
root = tk.Tk()
root.overrideredirect(True)
root.geometry("1920x1080+0+0")
text = tk.Text(root, background="black", foreground="#d0d0d0", font=("TkFixedFont", 11), borderwidth=0)
text.pack(fill="both", expand=True)
for i in range(70):
    line = f"$ pytest tests/test_{random.randint(0, 999):03d}.py -q   " + "." * random.randint(10, 80)
    text.insert("end", line + ("  [100%]\n" if i % 3 else "  PASSED\n"))
root.after(500, lambda: print("ready", flush=True))
root.mainloop()
"""


def synthetic_photo(width: int = 1792, height: int = 1008) -> Any:
    from PIL import Image, ImageFilter

    gradient = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    noise = [Image.effect_noise((width, height), sigma).filter(ImageFilter.GaussianBlur(1)) for sigma in (40, 30, 50)]
    bands = [
        Image.blend(gradient, noise[0], 0.35),
        Image.blend(radial, noise[1], 0.3),
        Image.blend(gradient, noise[2], 0.4),
    ]
    return Image.merge("RGB", bands)


def diagram(width: int = 1792, height: int = 1008) -> Any:
    from PIL import Image

    image = Image.new("RGB", (width, height), "white")
    for y in range(0, height, 40):
        image.paste((0, 0, 0), (50, y, 1500, y + 3))
    image.paste((30, 120, 200), (200, 200, 900, 700))
    return image


def screen_image(display: str, script: str) -> Any:
    from screen_bench import paint

    from agentcpm.screen import capture

    app = paint(display) if script == "busy" else _paint(display, script)
    try:
        os.environ["DISPLAY"] = display
        return capture(region=(0, 0, 1920, 1080)).model_image()
    finally:
        app.terminate()
        app.wait()


def _paint(display: str, script: str) -> subprocess.Popen[bytes]:
    app = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "DISPLAY": display}, stdout=subprocess.PIPE
    )
    assert app.stdout is not None
    app.stdout.readline()
    time.sleep(0.3)
    return app


def timed(fn: Any, rounds: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def encode(image: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=90, subsampling=0)
    return buffer.getvalue()


def report(name: str, image: Any, rounds: int) -> None:
    from PIL import Image

    from agentcpm.images import choose_format

    sample = image.resize((min(image.width, 320), min(image.height, 180)), Image.Resampling.NEAREST)
    colors = sample.getcolors(maxcolors=1 << 20)
    png_ms, png = timed(lambda: encode(image, "png"), rounds)
    jpeg_ms, jpeg = timed(lambda: encode(image, "jpeg"), rounds)
    b64_ms, _ = timed(lambda: base64.b64encode(jpeg), rounds)
    print(
        f"| {name} | {image.width}x{image.height} | {len(colors) if colors else '>1M'} | {choose_format(image)} "
        f"| {png_ms:.1f} ms, {len(png) / 1000:.0f} KB | {jpeg_ms:.1f} ms, {len(jpeg) / 1000:.0f} KB "
        f"| {png_ms / jpeg_ms:.1f}x, {len(png) / len(jpeg):.1f}x | {b64_ms:.2f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--photo", help="a real photo to measure too")
    args = parser.parse_args()
    from PIL import Image
    from screen_bench import start_display

    display, processes = start_display()
    try:
        shots = {
            name: screen_image(display, script)
            for name, script in (("busy desktop", "busy"), ("flat app", FLAT_SCRIPT), ("terminal", TERMINAL_SCRIPT))
        }
    finally:
        for process in processes:
            process.terminate()
    print("| image | size | colours in the 320x180 sample | auto picks | PNG | JPEG q90 4:4:4 | PNG / JPEG | base64 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, image in shots.items():
        report(name, image, args.rounds)
    report("diagram (3 colours)", diagram(), args.rounds)
    report("synthetic photo", synthetic_photo(), args.rounds)
    if args.photo:
        report(f"photo {Path(args.photo).name}", Image.open(args.photo).convert("RGB"), args.rounds)


if __name__ == "__main__":
    main()
