"""``agentcpm doctor``: what is installed, which backend would answer, whether it does, whether the screen
can be captured. Each failing line says how to fix it; the exit status is 1 when the model cannot be used.
"""

from __future__ import annotations

import argparse
import os
import platform
from importlib import metadata

from rich.console import Console
from rich.markup import escape

from ..client import DEFAULT_MODEL

# package -> (extra that installs it, what it is for)
PACKAGES = {
    "openai": (None, "remote servers"),
    "rich": (None, "the terminal"),
    "mss": (None, "screen capture"),
    "torch": ("local", "running the model in-process"),
    "transformers": ("local", "running the model in-process"),
    "pynput": ("gui", "GUI actions (click, type)"),
}


class Report:
    """Collects check lines; ``failed`` is set by any check that makes the model unusable."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.failed = False

    def ok(self, what: str, detail: str) -> None:
        self.console.print(f"[green]ok[/]    {what}: {escape(detail)}", highlight=False, soft_wrap=True)

    def warn(self, what: str, detail: str, fix: str) -> None:
        advice = f" -> {escape(fix)}" if fix else ""
        self.console.print(f"[yellow]warn[/]  {what}: {escape(detail)}{advice}", highlight=False, soft_wrap=True)

    def fail(self, what: str, detail: str, fix: str) -> None:
        self.failed = True
        self.console.print(f"[red]FAIL[/]  {what}: {escape(detail)} -> {escape(fix)}", highlight=False, soft_wrap=True)


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_packages(report: Report, remote: bool) -> None:
    from .. import __version__

    report.ok("agentcpm", f"{__version__} on Python {platform.python_version()} ({platform.system()})")
    for package, (extra, purpose) in PACKAGES.items():
        version = installed(package)
        if version:
            report.ok(package, version)
            continue
        fix = f'pip install "agentcpm[{extra}]"' if extra else f"pip install {package}"
        if package == "torch":
            fix = "pip install torch==2.13.0 (or your platform's build), then " + fix
        if extra == "local" and not remote:
            report.fail(package, f"not installed, needed for {purpose}", fix)
        else:
            report.warn(package, f"not installed, needed for {purpose}", fix)


def check_remote(report: Report, base_url: str, api_key: str | None) -> None:
    import httpx

    key = api_key or os.environ.get("AGENTCPM_API_KEY") or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = base_url.rstrip("/") + "/models"
    report.ok("backend", f"remote server at {base_url}")
    try:
        response = httpx.get(url, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        report.fail(
            "server",
            f"nothing answers at {base_url} ({type(exc).__name__})",
            "start one (e.g. `vllm serve openbmb/MiniCPM-V-4.6`) or drop --base-url to run the model here",
        )
        return
    if response.status_code in (401, 403):
        report.fail("server", f"refused the API key (HTTP {response.status_code})", "set AGENTCPM_API_KEY or --api-key")
        return
    try:
        models = [m.get("id") for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        models = []
    if response.status_code >= 400 or not models:
        report.warn(
            "server",
            f"answers, but GET /models gave HTTP {response.status_code} without a model list",
            "pass --model with the name the server serves",
        )
        return
    report.ok("server", f"serves {', '.join(str(m) for m in models)}")


def check_local(report: Report, model: str) -> None:
    report.ok("backend", f"in-process model {model} (no --base-url)")
    if os.path.isdir(model):
        if os.path.isfile(os.path.join(model, "config.json")):
            report.ok("model", f"local folder {os.path.abspath(model)}")
        else:
            report.fail("model", f"{model} has no config.json", "point --model at a MiniCPM-V 4.6 checkpoint folder")
        return
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub"
    )
    folder = os.path.join(cache, "models--" + model.replace("/", "--"))
    if os.path.isdir(os.path.join(folder, "snapshots")):
        report.ok("model", f"{model} is in the Hugging Face cache")
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        report.fail("model", f"{model} is not cached and HF_HUB_OFFLINE=1", "download it once online, or use --model")
    else:
        report.warn("model", f"{model} is not cached yet", "it is downloaded on first use (about 3 GB)")


def check_display(report: Report) -> None:
    try:
        from ..screen import list_monitors

        monitors = [m for m in list_monitors() if m.index != 0]  # index 0 is the box around all of them
    except Exception as exc:  # the screen's own message says what to do
        report.warn("display", str(exc).strip() or type(exc).__name__, "")
        return
    sizes = ", ".join(f"{m.width}x{m.height}" for m in monitors)
    report.ok("display", f"{len(monitors)} monitor{'s' * (len(monitors) != 1)} can be captured ({sizes})")


def doctor(args: argparse.Namespace) -> int:
    """Print the checks; 0 when the model can be used, 1 when not."""
    report = Report(Console(highlight=False))
    base_url = args.base_url or os.environ.get("AGENTCPM_BASE_URL")
    check_packages(report, remote=bool(base_url))
    if base_url:
        check_remote(report, base_url, args.api_key)
    else:
        check_local(report, args.model or os.environ.get("AGENTCPM_MODEL") or DEFAULT_MODEL)
    check_display(report)
    return 1 if report.failed else 0
