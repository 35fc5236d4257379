"""``agentcpm serve``: the command line of :mod:`agentcpm.serve`."""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_IN_PROCESS_QUEUE = 32
DEFAULT_UPSTREAM_CONCURRENCY = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options (the common --model, --api-key, --thinking, ... come from the parent parser).
    Here ``--api-key`` is the key clients must send (``AGENTCPM_SERVE_API_KEY`` too)."""
    parser.add_argument("--upstream", metavar="URL", help="serve in front of this OpenAI-compatible server")
    parser.add_argument("--upstream-api-key", metavar="KEY", help="API key for the upstream server")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--served-model-name", metavar="NAME", action="append", help="model name clients use")
    parser.add_argument("--max-concurrency", type=int, metavar="N", help="requests at work at once")
    parser.add_argument("--max-queue", type=int, metavar="N", help="requests waiting before 503s")
    parser.add_argument("--max-body-mb", type=float, default=32.0, metavar="MB", help="largest request body")
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000, metavar="N", help="largest image")
    parser.add_argument("--max-messages", type=int, default=512, metavar="N", help="most messages per request")
    parser.add_argument("--image-timeout", type=float, default=20.0, metavar="S", help="seconds per image URL")


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.config import ServeConfig
    from ..serve.main import log_to_stderr, serve
    from .shared import client_from

    log_to_stderr(args.verbose)
    upstream = args.upstream or args.base_url
    client = client_from(args, upstream, args.upstream_api_key)  # --api-key is this server's own key
    config = ServeConfig(
        model_names=args.served_model_name or _names(client, upstream, args.upstream_api_key),
        api_key=args.api_key or ServeConfig.key_from_env(),
        max_concurrency=args.max_concurrency or (DEFAULT_UPSTREAM_CONCURRENCY if upstream else 1),
        max_queue=args.max_queue if args.max_queue is not None else DEFAULT_IN_PROCESS_QUEUE * (4 if upstream else 1),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
        max_messages=args.max_messages,
        image_timeout=args.image_timeout,
    )
    serve(client, config, host=args.host, port=args.port)
    return 0


def _names(client: Any, upstream: str | None, key: str | None) -> list[str]:
    """In-process: the model as given (hub id or folder). Upstream: --model, else the server's first model,
    else any name is accepted."""
    if client.model:
        return [str(client.model)]
    if upstream:
        try:
            import httpx

            key = key or os.environ.get("AGENTCPM_API_KEY") or os.environ.get("OPENAI_API_KEY")
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            reply = httpx.get(upstream.rstrip("/") + "/models", timeout=5, headers=headers)
            data = reply.json().get("data") or []
            return [str(data[0]["id"])] if data else []
        except Exception:
            return []
    return []
