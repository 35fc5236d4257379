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
    "httpx": (None, "remote servers"),
    "rich": (None, "the terminal"),
    "mss": (None, "screen capture"),
    "torch": ("local", "running the model in-process"),
    "transformers": ("local", "running the model in-process"),
    "accelerate": ("local", "loading the model in-process (device_map)"),
    "pynput": ("gui", "GUI actions (click, type)"),
    "mcp": ("mcp", "MCP tool servers (--mcp)"),
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
        advice = f" -> {escape(fix)}" if fix else ""  # none when the detail already says what to do
        self.console.print(f"[red]FAIL[/]  {what}: {escape(detail)}{advice}", highlight=False, soft_wrap=True)

    def more(self, text: str) -> None:
        """A line under the last check (a tool of an MCP server, the end of a server's stderr)."""
        self.console.print(f"      {escape(text)}", highlight=False, soft_wrap=True)


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
    from .._redact import redact_url

    url = base_url.rstrip("/") + "/models"
    base_url = redact_url(base_url)  # shown without the URL's credentials
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
    """What loading ``model`` in-process needs, checked the way loading does it: the packages import, the
    folder is a checkpoint transformers can read, or the hub id is cached or downloadable now."""
    from ..backends import local
    from ..errors import AgentCPMError

    report.ok("backend", f"in-process model {model} (no --base-url)")
    try:
        local.check_model_path(model)
    except AgentCPMError:
        report.fail(
            "model",
            f"no checkpoint folder (with a config.json) at {os.path.abspath(os.path.expanduser(model))}",
            "point --model at a MiniCPM-V 4.6 checkpoint folder or a hub id",
        )
        return
    try:
        local._import_torch()
        import transformers.models.minicpmv4_6  # noqa: F401
        from transformers import AutoConfig
    except ImportError as exc:
        if not isinstance(exc, AgentCPMError):  # a transformers without MiniCPM-V 4.6
            version = installed("transformers")
            exc = ImportError(f"transformers {version} cannot run MiniCPM-V 4.6 ({exc})")
            fix = 'pip install -U "agentcpm[local]" (transformers>=5.7)'
        else:
            fix = str(exc).split(": run ", 1)[-1].replace("`", "")
        report.fail("model stack", str(exc).split(": run ", 1)[0], fix)
        return
    report.ok("model stack", "torch, transformers and accelerate import")
    if os.path.isdir(os.path.expanduser(model)):
        folder = os.path.abspath(os.path.expanduser(model))
        try:
            config = AutoConfig.from_pretrained(folder)
        except Exception as exc:  # transformers' own message says what is wrong with the folder
            detail = f"{folder}: {str(exc).strip().splitlines()[0]}"
            report.fail("model", detail, "point --model at a MiniCPM-V 4.6 checkpoint folder")
            return
        report.ok("model", f"local folder {folder} ({config.model_type})")
        return
    check_hub_model(report, model)


def check_hub_model(report: Report, model: str) -> None:
    """A hub id: cached, or the hub answers for it now (else ``ask`` would fail: a failure here too)."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        report.ok("model", f"{model} is in the Hugging Face cache")
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        report.fail("model", f"{model} is not cached and HF_HUB_OFFLINE=1", "download it once online, or use --model")
        return
    try:
        HfApi().model_info(model, timeout=10)
    except GatedRepoError:
        report.fail("model", f"{model} is gated on the hub", "accept its terms on the hub, then `hf auth login`")
    except RepositoryNotFoundError:
        report.fail("model", f"no repository {model} on the Hugging Face hub", "check the name given to --model")
    except Exception as exc:  # no network, DNS, proxy, hub down
        report.fail(
            "model",
            f"{model} is not cached and the hub does not answer ({type(exc).__name__})",
            "connect to the internet for the first run, or pass a downloaded checkpoint folder with --model",
        )
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


def check_mcp(report: Report, args: argparse.Namespace) -> None:
    """``doctor --mcp``: start each server, one after another, and list its tools, or say why it failed (the
    server's own error: which server, what to do, the end of its stderr). Each is closed right after."""
    from .. import __version__

    report.ok("agentcpm", f"{__version__} on Python {platform.python_version()} ({platform.system()})")
    version = installed("mcp")
    if version is None:
        report.fail("mcp", "not installed, needed for MCP tool servers", 'pip install "agentcpm[mcp]"')
        return
    report.ok("mcp", version)
    from ..mcp import MCPError
    from .shared import mcp_servers, server_source

    try:
        servers = mcp_servers(args)
    except MCPError as exc:
        report.fail("MCP config", str(exc), "")
        return
    if not servers:
        report.warn("MCP", "no servers to check (every entry is disabled)", "")
    for server in servers:
        what = f"MCP server {server.name}"
        try:
            tools = server.tools()
        except MCPError as exc:
            first, *rest = str(exc).strip().splitlines() or [type(exc).__name__]
            first = first.removeprefix(f"MCP server {server.name!r}").lstrip(": ")  # `what` names it already
            report.fail(what, first, "")
            for line in rest:
                report.more(line)
            continue
        finally:
            server.close()
        count = f"{len(tools)} tool{'s' * (len(tools) != 1)}"
        asks = " (each call asks first)" if server.approval == "ask" else ""
        report.ok(what, f"{count} over {server_source(server)}{asks}")
        for tool in tools:
            description = (tool.description or "").strip().split("\n")[0]
            report.more(f"{tool.name}: {description}" if description else tool.name)


def doctor(args: argparse.Namespace) -> int:
    """Print the checks; 0 when the model can be used, 1 when not. With ``--mcp``: only the MCP servers,
    0 when every one started and listed its tools."""
    report = Report(Console(highlight=False))
    if getattr(args, "mcp", None):
        check_mcp(report, args)
        return 1 if report.failed else 0
    base_url = args.base_url or os.environ.get("AGENTCPM_BASE_URL")
    check_packages(report, remote=bool(base_url))
    if base_url:
        from ..backends.replicas import split_urls

        for url in split_urls(base_url):  # several replicas (comma-separated): each is checked
            check_remote(report, url, args.api_key)
    else:
        check_local(report, args.model or os.environ.get("AGENTCPM_MODEL") or DEFAULT_MODEL)
    check_display(report)
    return 1 if report.failed else 0
