"""How fast ``agentcpm --help`` answers (target: <= 0.3 s), and where the time goes.

Runs ``python -m agentcpm --help`` and a bare ``python -c pass`` in fresh processes, then times the pieces
in-process. Prints medians.

    python benchmarks/cli_bench.py [RUNS]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PIECES = """
import time
t0 = time.perf_counter(); import agentcpm
t1 = time.perf_counter(); from agentcpm.cli.main import build_parser
t2 = time.perf_counter(); build_parser().format_help()
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=15, metavar="RUNS", help="runs of each (default 15)")
    runs = parser.parse_args().runs
    python = [sys.executable]
    bare = statistics.median(wall([*python, "-c", "pass"]) for _ in range(runs))
    help_ = statistics.median(wall([*python, "-m", "agentcpm", "--help"]) for _ in range(runs))
    pieces = [
        [float(x) for x in subprocess.run([*python, "-c", PIECES], capture_output=True, text=True).stdout.split()]
        for _ in range(runs)
    ]
    package, cli, parser = (statistics.median(p[i] for p in pieces) for i in range(3))
    print(f"{'median of ' + str(runs) + ' runs':<36}{'seconds':>8}")
    print(f"{'agentcpm --help (whole process)':<36}{help_:>8.3f}")
    print(f"{'python -c pass (interpreter start)':<36}{bare:>8.3f}")
    print(f"{'  import agentcpm (the package)':<36}{package:>8.3f}")
    print(f"{'  import agentcpm.cli.main':<36}{cli:>8.3f}")
    print(f"{'  build the parser and the help':<36}{parser:>8.3f}")
    print(f"target <= 0.300 s: {'met' if help_ <= 0.3 else 'missed'}")


if __name__ == "__main__":
    main()
