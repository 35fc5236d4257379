"""``agentcpm serve`` in a subprocess on 127.0.0.1 for tests: started, read until it listens, stopped.

>>> with ServeProcess(["--model", str(path)]) as server:   # doctest: +SKIP
...     OpenAI(base_url=server.base_url, api_key="x").models.list()
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence


class ServeProcess:
    """A running ``python -m agentcpm serve ARGS --port 0``; ``log`` holds its stderr lines so far."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log: list[str] = []
        self.base_url = ""
        self._ready = threading.Event()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ServeProcess:
        command = [sys.executable, "-m", "agentcpm", "serve", "--port", "0", *self.args]
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=self.env
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._ready.wait(240)
        if not self.base_url:
            self.stop()
            raise RuntimeError("agentcpm serve did not start:\n" + "".join(self.log))
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if "listening on " in line and not self.base_url:
                self.base_url = line.split("listening on ", 1)[1].split()[0]
                self._ready.set()
        self._ready.set()

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def text(self) -> str:
        return "".join(self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
