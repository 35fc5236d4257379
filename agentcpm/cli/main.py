"""Entry point of the ``agentcpm`` command (the full CLI arrives with its own issue)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentcpm", description="Agents, tools and screen vision on MiniCPM-V 4.6.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from .. import __version__

        print(__version__)
        return 0
    build_parser().print_help(sys.stdout)
    return 0
