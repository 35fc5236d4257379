"""Several endpoints: Client(base_url=[...]) over real scripted servers on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai_server import OpenAIServer, ServerReply, error_reply

from agentcpm import Agent, Client, tool
from agentcpm.backends.remote import RemoteBackend
from agentcpm.backends.replicas import ReplicaSetBackend, conversation_key, split_urls
from agentcpm.cli.main import main
from agentcpm.errors import IncompleteAnswerError, ResponseError, ServerError
from agentcpm.types import Message

STEPS = 2  # tool steps per run before the final answer


def responder(body: dict[str, Any]) -> ServerReply:
    """Any replica can answer any step: a call to note() until STEPS results are in, then the answer."""
    results = sum(1 for m in body["messages"] if m["role"] == "tool")
    if results < STEPS and body.get("tools"):
        return ServerReply(tool_calls=[{"name": "note", "arguments": {"text": f"step {results}"}}])
    task = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return ServerReply(f"done: {task}")


@pytest.fixture
def servers() -> Iterator[list[OpenAIServer]]:
    started = [OpenAIServer(default=responder).start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def served(server: OpenAIServer, task: str) -> int:
    """Requests of the conversation that starts with ``task`` that this server answered."""
    return sum(1 for body in server.requests if body["messages"][0]["content"] == task)


NOTES: list[str] = []


@tool
def note(text: str) -> str:
    """Write a note."""
    NOTES.append(text)
    return "noted"


def test_runs_stay_on_one_replica_and_spread_over_them(servers: list[OpenAIServer]) -> None:
    NOTES.clear()
    client = Client(base_url=[s.base_url for s in servers], model="m")
    assert isinstance(client.backend, ReplicaSetBackend)
    agent = Agent(client, tools=[note])
    tasks = ["task one", "task two", "task three"]
    for task in tasks:
        assert agent.run(task).output == f"done: {task}"
    homes = []
    for task in tasks:  # every step of a run on the replica that took its first step
        counts = [served(s, task) for s in servers]
        assert sorted(counts) == [0, 0, STEPS + 1]
        homes.append(counts.index(STEPS + 1))
    assert sorted(homes) == [0, 1, 2]  # idle replicas take new conversations in turn
    # A later turn of the same conversation goes to the same replica.
    history = agent.run("task one").messages
    agent.run("and again", history=history)
    assert served(servers[homes[0]], "task one") == 2 * (STEPS + 1) + 1  # (history holds STEPS results)
    assert all(served(s, "task one") == 0 for i, s in enumerate(servers) if i != homes[0])
    assert len(NOTES) == STEPS * 4
    client.close()


def test_killed_replica_and_503_replica_the_run_finishes_once(servers: list[OpenAIServer]) -> None:
    NOTES.clear()
    servers[0].default = error_reply(503, "overloaded")
    killed: list[OpenAIServer] = []

    @tool
    def work(text: str) -> str:
        """Do one piece of work (and, the first time, kill the replica this run is on)."""
        NOTES.append(text)
        if not killed:
            home = next(s for s in servers if served(s, "the task"))
            home.stop()
            killed.append(home)
        return "worked"

    def answer(body: dict[str, Any]) -> ServerReply:
        reply = responder(body)
        if reply.tool_calls:
            reply.tool_calls[0]["name"] = "work"
        return reply

    for server in (servers[1], servers[2]):
        server.default = answer
    client = Client(base_url=",".join(s.base_url for s in servers), model="m")
    assert client.chat("warm up").content == "done: warm up"  # the first replica answers 503, another answers
    assert len(servers[0].requests) == 1
    result = Agent(client, tools=[work]).run("the task")
    assert result.output == "done: the task"
    assert NOTES == ["step 0", "step 1"]  # each call ran once
    survivor = next(s for s in (servers[1], servers[2]) if s is not killed[0])
    assert served(killed[0], "the task") == 1  # the first step, before its replica died
    assert served(survivor, "the task") == STEPS  # every later step on the one healthy replica
    assert len(servers[0].requests) == 1  # the 503 replica is left out for its cooldown once it failed
    client.close()


def test_all_replicas_failing_raises_the_last_error(servers: list[OpenAIServer]) -> None:
    for server in servers:
        server.default = error_reply(503, "busy")
    backend = ReplicaSetBackend.from_urls([s.base_url for s in servers], model="m", max_retries=0)
    with pytest.raises(ServerError):
        Client(backend=backend).chat("hi")
    assert [len(s.requests) for s in servers] == [1, 1, 1]  # each asked once, none twice


def test_a_failure_after_data_arrived_is_not_sent_elsewhere(servers: list[OpenAIServer]) -> None:
    for server in servers:
        server.default = ServerReply("a long answer that breaks off", drop_after=3)
    backend = ReplicaSetBackend.from_urls([s.base_url for s in servers], model="m")
    with pytest.raises((ResponseError, IncompleteAnswerError)):
        list(Client(backend=backend).stream("hi"))
    assert sum(len(s.requests) for s in servers) == 1


def test_a_dead_replica_is_left_out_then_tried_again_after_its_cooldown() -> None:
    with OpenAIServer(default="from a") as a, OpenAIServer(default="from b") as b:
        backend = ReplicaSetBackend.from_urls([a.base_url, b.base_url], model="m", cooldown=0.5)
        port = a.port
        a.stop()
        client = Client(backend=backend)
        assert client.chat("c1").content == "from b"  # a refused the connection: b answered
        assert backend.replicas[0].failures == 1
        assert client.chat("c2").content == "from b"  # a is left out: not even tried
        assert backend.replicas[0].failures == 1
        with _serve_on(OpenAIServer(default="from a again"), port) as again:
            time.sleep(0.6)  # the cooldown is over
            answers = {client.chat(f"new conversation {i}").content for i in range(2)}
            assert answers == {"from a again", "from b"} and len(again.requests) == 1
            assert backend.replicas[0].failures == 0


class _serve_on:
    """Start ``server`` on a given port (a replica coming back where it was)."""

    def __init__(self, server: OpenAIServer, port: int) -> None:
        self.server, self.port = server, port

    def __enter__(self) -> OpenAIServer:
        import threading

        from openai_server import _Handler, _Server

        http = _Server(("127.0.0.1", self.port), _Handler)
        http.owner = self.server
        self.server._server = http
        self.server._thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.server._thread.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def test_each_replica_speaks_its_own_dialect() -> None:
    vllm = [{"id": "m", "object": "model", "owned_by": "vllm"}]
    with OpenAIServer(default="v", models=vllm) as a, OpenAIServer(default="o", headers={"Server": "ollama"}) as b:
        a.models[0]["id"] = b.model = "m"
        b.models = [{"id": "m:latest", "object": "model", "owned_by": "library"}]
        backend = ReplicaSetBackend.from_urls([a.base_url, b.base_url])
        client = Client(backend=backend)
        client.chat("one")
        client.chat("two")
        dialects = [
            r.backend.dialect.name
            for r in backend.replicas
            if isinstance(r.backend, RemoteBackend) and r.backend.dialect
        ]
        assert sorted(dialects) == ["ollama", "vllm"]


def test_environment_list_and_key() -> None:
    assert split_urls(" http://a/v1, http://b/v1 ,") == ["http://a/v1", "http://b/v1"]
    assert split_urls(["http://a/v1"]) == ["http://a/v1"]
    first = [Message("system", "s"), Message("user", "task")]
    assert conversation_key(first) == conversation_key([*first, Message("assistant", "x"), Message("user", "y")])
    assert conversation_key(first) != conversation_key([Message("system", "s"), Message("user", "other")])


def test_env_var_with_a_list(monkeypatch: pytest.MonkeyPatch, servers: list[OpenAIServer]) -> None:
    monkeypatch.setenv("AGENTCPM_BASE_URL", ",".join(s.base_url for s in servers[:2]))
    client = Client(model="m")
    assert isinstance(client.backend, ReplicaSetBackend) and len(client.backend.replicas) == 2
    assert client.chat("hello").content == "done: hello"


def test_doctor_checks_each_replica(servers: list[OpenAIServer], capsys: pytest.CaptureFixture[str]) -> None:
    url, dead = servers[0].base_url, servers[2].base_url
    servers[2].stop()
    status = main(["doctor", "--base-url", f"{url},{dead}"])
    out = capsys.readouterr().out
    assert status == 1
    assert out.count("remote server at") == 2 and "nothing answers at" in out


def test_async_runs_at_once_use_the_least_busy_replica(servers: list[OpenAIServer]) -> None:
    for server in servers:
        server.default = ServerReply("slow", delay=0.3)
    client = Client(base_url=[s.base_url for s in servers], model="m")

    async def main_() -> None:
        await asyncio.gather(*(client.achat(f"question {i}") for i in range(6)))
        await client.aclose()

    asyncio.run(main_())
    assert [len(s.requests) for s in servers] == [2, 2, 2]
