"""Several servers as one backend: requests spread over replicas, failover, conversation affinity.

>>> client = Client(base_url=["http://gpu1:8000/v1", "http://gpu2:8000/v1"])   # doctest: +SKIP
>>> # or AGENTCPM_BASE_URL=http://gpu1:8000/v1,http://gpu2:8000/v1

Each request goes to the healthy replica with the fewest requests in flight, except that the steps of one
run and the turns of one conversation (same first messages: the system prompt and first user turn) stay on
the replica that served them while it is healthy, so its prefix cache stays warm. A replica that fails
(connection refused, 5xx or 429, a timeout, a broken answer) is left out for ``cooldown`` seconds, then tried
again. A request that failed before any of its answer arrived goes to another replica; once data has
arrived, the failure is the caller's (the engine's rules: a cut call is never run). Each replica is its own
:class:`~agentcpm.backends.remote.RemoteBackend`, so each may be a different server family (dialect).

This is for a handful of replicas and for failover, not a router: docs/servers.md shows a router in front
of a fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, EndpointUnavailable, ResponseError, ServerError
from ..types import ImagePart, Message
from .base import Backend, RawChunk, Request, StartChunk

#: Errors that say a replica is unhealthy (not that the request is wrong): another replica may answer.
FAILOVER_ERRORS = (EndpointUnavailable, ServerError, ResponseError)


@dataclass
class Replica:
    """One server of the set and what is known of its health."""

    backend: Backend
    name: str
    in_flight: int = 0
    down_until: float = 0.0  # time.monotonic(); 0: healthy
    failures: int = 0  # in a row
    served: int = 0

    def healthy(self, now: float) -> bool:
        return self.down_until <= now


def conversation_key(messages: list[Message]) -> str:
    """What identifies a conversation: its messages up to and including the first user turn (text, and
    how many images), so every step of a run and every later turn has the same key."""
    digest = hashlib.blake2b(digest_size=12)
    for message in messages:
        digest.update(message.role.encode())
        digest.update(b"\0")
        digest.update(message.text.encode("utf-8", "surrogatepass"))
        digest.update(str(sum(isinstance(p, ImagePart) for p in message.content)).encode())
        digest.update(b"\1")
        if message.role == "user":
            break
    return digest.hexdigest()


class ReplicaSetBackend:
    """Several backends (usually one :class:`~agentcpm.backends.remote.RemoteBackend` per URL) as one.

    ``cooldown``: seconds a failed replica is left out (doubled for each failure in a row, up to 8 times).
    ``max_retries``: rounds over the replicas once every one has failed (with ``backoff`` seconds, doubled,
    between rounds). ``affinity``: keep conversations on their replica (the number of conversations
    remembered is ``affinity_size``).
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        names: Sequence[str] | None = None,
        cooldown: float = 10.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        affinity: bool = True,
        affinity_size: int = 10_000,
    ) -> None:
        if not backends:
            raise ConfigurationError("a replica set needs at least one backend")
        labels = list(names) if names is not None else [repr(b) for b in backends]
        self.replicas = [Replica(b, n) for b, n in zip(backends, labels, strict=True)]
        self.cooldown = cooldown
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.affinity = affinity
        self.affinity_size = affinity_size
        self._homes: OrderedDict[str, Replica] = OrderedDict()
        self._lock = threading.Lock()
        self._turn = 0  # rotates ties between equally busy replicas

    @classmethod
    def from_urls(cls, urls: Sequence[str], *, cooldown: float = 10.0, **remote: Any) -> ReplicaSetBackend:
        """One RemoteBackend per URL (``remote``: its arguments: model, api_key, dialect, timeout, ...);
        ``max_retries`` applies to the set: each replica is asked once per round."""
        from .._redact import redact_url
        from .remote import RemoteBackend

        retries = remote.pop("max_retries", 2)
        backends = [RemoteBackend(url, max_retries=0, **remote) for url in urls]
        return cls(backends, names=[redact_url(u) for u in urls], cooldown=cooldown, max_retries=retries)

    def __repr__(self) -> str:
        return f"ReplicaSetBackend({[r.name for r in self.replicas]})"

    @property
    def model(self) -> str | None:
        """The served model's name, as the first replica that knows it says."""
        return next((m for r in self.replicas if (m := getattr(r.backend, "model", None))), None)

    # ---------------------------------------------------------------------------------- choosing
    def pick(self, key: str | None, tried: set[int]) -> Replica | None:
        """The replica for the next attempt: the conversation's own while healthy, else the healthy one
        with the fewest requests in flight; when none is healthy, the one whose cooldown ends first."""
        now = time.monotonic()
        with self._lock:
            fresh = [r for i, r in enumerate(self.replicas) if i not in tried]
            if not fresh:
                return None
            home = self._homes.get(key) if key is not None else None
            if home is not None and home in fresh and home.healthy(now):
                self._homes.move_to_end(key)  # type: ignore[arg-type]
                chosen = home
            else:
                healthy = [r for r in fresh if r.healthy(now)]
                if healthy:
                    start = self._turn % len(self.replicas)
                    self._turn += 1
                    order = self.replicas[start:] + self.replicas[:start]
                    chosen = min((r for r in order if r in healthy), key=lambda r: r.in_flight)
                else:
                    chosen = min(fresh, key=lambda r: r.down_until)
                if key is not None and self.affinity:
                    self._homes[key] = chosen
                    while len(self._homes) > self.affinity_size:
                        self._homes.popitem(last=False)
            chosen.in_flight += 1
            return chosen

    def _release(self, replica: Replica, ok: bool | None) -> None:
        with self._lock:
            replica.in_flight -= 1
            if ok:
                replica.failures, replica.down_until = 0, 0.0
                replica.served += 1
            elif ok is False:
                replica.failures += 1
                pause = self.cooldown * 2 ** min(replica.failures - 1, 3)
                replica.down_until = time.monotonic() + pause

    def home_of(self, messages: list[Message]) -> str | None:
        """The name of the replica a conversation is kept on (None: none yet)."""
        replica = self._homes.get(conversation_key(messages))
        return replica.name if replica is not None else None

    # ---------------------------------------------------------------------------------- the contract
    async def generate(self, request: Request) -> AsyncGenerator[RawChunk, None]:
        """The answer from one replica; another is asked when one fails before any data arrived."""
        key = conversation_key(request.messages) if self.affinity else None
        tried: set[int] = set()
        last: Exception | None = None
        for round_ in range(self.max_retries + 1):
            while (replica := self.pick(key, tried)) is not None:
                tried.add(self.replicas.index(replica))
                try:
                    async with contextlib.aclosing(self._attempt(replica, request)) as chunks:
                        async for chunk in chunks:
                            yield chunk
                    return
                except _FailedBeforeData as failed:
                    last = failed.error
            if round_ < self.max_retries:
                tried.clear()
                await asyncio.sleep(self.backoff * 2**round_)
        assert last is not None
        raise last

    async def _attempt(self, replica: Replica, request: Request) -> AsyncGenerator[RawChunk, None]:
        """One replica's answer. Its StartChunk is held until real data comes: a failure before then is
        :class:`_FailedBeforeData` (safe to send elsewhere: the caller has seen nothing)."""
        held: list[RawChunk] = []
        started = False
        ok: bool | None = None
        answer = replica.backend.generate(request)
        try:
            async for chunk in answer:
                if not started:
                    if isinstance(chunk, StartChunk):
                        held.append(chunk)
                        continue
                    started = True
                    for early in held:
                        yield early
                yield chunk
            for early in held if not started else ():
                yield early
            ok = True
        except FAILOVER_ERRORS as exc:
            ok = False
            if not started:
                raise _FailedBeforeData(exc) from None
            raise
        finally:
            self._release(replica, ok)
            await answer.aclose()

    # ---------------------------------------------------------------------------------- closing
    def close(self) -> None:
        for replica in self.replicas:
            replica.backend.close()

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.backend.aclose()


class _FailedBeforeData(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def split_urls(base_url: str | Sequence[str] | None) -> list[str]:
    """``"u1,u2"`` or ``["u1", "u2"]`` -> the URLs (stripped, empty ones dropped)."""
    if base_url is None:
        return []
    parts = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    return [p.strip() for p in parts if p and p.strip()]
