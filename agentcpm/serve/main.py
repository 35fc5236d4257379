"""Starting the server: bind, warn about exposure, load the model, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from typing import Any

from ..client import Client
from ..errors import MissingDependencyError
from .config import ServeConfig

log = logging.getLogger("agentcpm.serve")


def _require() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f'agentcpm serve needs Starlette and uvicorn ({exc.name} is missing): pip install "agentcpm[serve]"'
        ) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port; read it from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it every response
    # (headers and body are separate writes) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(
    client: Client,
    config: ServeConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Any = None,
) -> None:
    """Serve ``client`` until interrupted. ``on_ready(url)`` is called once the socket listens."""
    _require()
    import asyncio

    import uvicorn

    from .app import create_app

    config = config or ServeConfig()
    if not is_loopback(host) and not config.api_key:
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use the model "
            "(pass --api-key or set AGENTCPM_SERVE_API_KEY)",
            host,
        )
    loader = getattr(client.backend, "load", None)
    if callable(loader):
        loader()  # the in-process model loads now, not on the first request
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/v1"
    app = create_app(client, config)
    settings = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3)
    server = uvicorn.Server(settings)
    log.info("agentcpm serve: listening on %s (model %s)", url, config.model_name)
    if on_ready is not None:
        on_ready(url)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        client.close()


def log_to_stderr(verbose: bool) -> None:
    """The server's own lines (start, warnings, one access line per request) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("agentcpm.serve",):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
