"""``agentcpm logs``: list, show and search the logged conversations; and the logging the other commands do
(``chat``, ``ask`` and ``run`` log each conversation unless ``--no-log``, ``AGENTCPM_NO_LOG=1`` or
``agentcpm logs off``). The store itself is :mod:`agentcpm.logs`."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..logs import Conversation, ConversationInfo, LogStore
    from ..transcript import Transcript
    from ..types import Completion, Message


def add_parser(commands: Any) -> None:
    """The ``logs`` command and its actions (imports nothing)."""
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)  # before or after ACTION
    options.add_argument("-n", "--count", type=int, metavar="N", help="how many to list (default 20)")
    options.add_argument("--json", action="store_true", help="print JSON (one object per conversation)")
    logs = commands.add_parser("logs", parents=[options], help="list, show and search logged conversations")
    logs.set_defaults(count=20, json=False)
    actions = logs.add_subparsers(dest="logs_action", metavar="ACTION")
    actions.add_parser("list", parents=[options], help="recent conversations: id, time, model, tokens, first question")
    show = actions.add_parser("show", parents=[options], help="one conversation in full (default: the last)")
    show.add_argument("id", nargs="?", metavar="ID", help="its id (or the start of it)")
    search = actions.add_parser("search", parents=[options], help="conversations whose questions or answers hold TEXT")
    search.add_argument("text", metavar="TEXT")
    actions.add_parser("path", help="print the folder the logs are in")
    actions.add_parser("on", help="log conversations (the default)")
    actions.add_parser("off", help="stop logging conversations")


def store() -> LogStore:
    from ..logs import LogStore

    return LogStore()


def start_log(args: argparse.Namespace, client: Any, command: str, path: str | None = None) -> Conversation | None:
    """A new logged conversation for ``command``, or None when logging is off."""
    from ..logs import logging_enabled

    if getattr(args, "no_log", False) or not logging_enabled():
        return None
    options = asdict(client.defaults) if client.defaults is not None else {}
    return store().new(command=command, model=model_of(client), base_url=client.base_url, options=options, path=path)


def model_of(client: Any) -> str | None:
    """The client's model name (a server's default is known after the first request)."""
    model = getattr(client, "model", None) or getattr(client.backend, "model", None)
    return str(model) if model else None


@contextmanager
def logged_turn(log: Conversation | None, question: str) -> Iterator[None]:
    """Record a turn's question now; if the block fails, record how (``turn_finished`` records success)."""
    if log is None:
        yield
        return
    log.turn_started(question)
    try:
        yield
    except BaseException as exc:
        from ..errors import AgentCancelled

        interrupted = isinstance(exc, KeyboardInterrupt | AgentCancelled)
        log.turn_finished(None, outcome="interrupted" if interrupted else "error")
        raise


class AskLog:
    """What ``ask`` sends (``messages``) and, when logging, the transcript its answer goes to."""

    def __init__(self, messages: list[Message], log: Conversation | None, client: Any) -> None:
        self.messages = messages
        self.log = log
        self.client = client
        self.transcript: Transcript | None = None

    def answered(self, completion: Completion) -> None:
        if self.log is None or self.transcript is None:
            return
        usage = completion.usage
        self.transcript.message(completion.to_message(), 1)
        self.transcript.step(
            1,
            usage=usage.model_dump(exclude_none=True),
            duration=usage.duration,
            finish_reason=completion.finish_reason,
        )
        self.transcript.end(output=completion.content)
        self.log.turn_finished(
            completion.content, usage.prompt_tokens, usage.completion_tokens, model=model_of(self.client)
        )


@contextmanager
def ask_log(args: argparse.Namespace, client: Any, prompt: str, images: list[Any]) -> Iterator[AskLog]:
    """``ask``'s question as messages, written to a new logged conversation before the model is asked."""
    from ..client import attach_images
    from ..types import to_messages

    messages = attach_images(to_messages(prompt), images)
    record = AskLog(messages, start_log(args, client, "ask"), client)
    if record.log is None:
        yield record
        return
    with record.log.transcript() as transcript, logged_turn(record.log, prompt):
        record.transcript = transcript
        transcript.start(continues=False, model=record.log.info.model)
        for message in messages:
            transcript.message(message, 0)
        yield record


def answer_text(messages: list[Message]) -> str:
    """The text of the last assistant message."""
    for message in reversed(messages):
        if message.role == "assistant":
            return message.text
    return ""


# ---------------------------------------------------------------------------- printing


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def listing(infos: list[ConversationInfo], width: int = 100) -> list[str]:
    """One line per conversation: id, time, model, tokens, first question (or the matching text)."""
    lines = []
    for info in infos:
        model = _one_line((info.model or "?").rsplit("/", 1)[-1], 22)
        head = f"{info.id}  {_when(info.updated)}  {model:<22} {info.total_tokens:>7} tok  "
        lines.append(head + _one_line(info.snippet or info.title, max(20, width - len(head))))
    return lines


def _print_json(infos: list[ConversationInfo]) -> None:
    for info in infos:
        print(json.dumps(asdict(info), ensure_ascii=False))


def show(conversation: Conversation, write: Any = print) -> None:
    """A conversation in full: the header, then each message (images as their files, tool calls)."""
    from .render import format_call

    info = conversation.info
    where = f" ({info.base_url})" if info.base_url else ""
    turns = f"{info.turns} turn{'s' * (info.turns != 1)}"
    write(f"conversation {info.id} · {_when(info.created)} · {info.command} · {info.model or '?'}{where}")
    write(f"{turns} · {info.prompt_tokens} prompt + {info.completion_tokens} completion tokens · {info.path}")
    if not conversation.path.is_file():
        write("(the conversation file is gone)")
        return
    from ..transcript import Transcript
    from ..types import ImagePart

    for message in Transcript.load(conversation.path):
        if message.role == "system":
            continue
        label = f"tool ({message.name})" if message.role == "tool" else message.role
        write("")
        write(f"{label}: {message.text}".rstrip())
        for part in message.content:
            if isinstance(part, ImagePart):
                write(f"  [image: {part.source if isinstance(part.source, str) else 'in memory'}]")
        for call in message.tool_calls:
            write(f"  → {format_call(call)}")


def cmd_logs(args: argparse.Namespace) -> int:
    from ..logs import log_dir, logging_enabled, set_logging

    action = args.logs_action or "list"
    if action == "path":
        print(log_dir())
        return 0
    if action in ("on", "off"):
        set_logging(action == "on")
        state = "on" if logging_enabled() else "off (AGENTCPM_NO_LOG is set)" if action == "on" else "off"
        print(f"conversation logging is {state}")
        return 0
    logs = store()
    if action == "show":
        conversation = logs.open(args.id) if args.id else _latest(logs)
        if args.json:
            _print_json([conversation.info])
        else:
            show(conversation)
        return 0
    infos = logs.search(args.text, args.count) if action == "search" else logs.recent(args.count)
    if args.json:
        _print_json(infos)
    elif not infos:
        print("no conversations found" if action == "search" else f"no conversations logged yet (in {log_dir()})")
    else:
        print("\n".join(listing(infos)))
    return 0


def _latest(logs: LogStore) -> Conversation:
    latest = logs.latest()
    if latest is None:
        from ..errors import ConfigurationError

        raise ConfigurationError("no conversation is logged yet: chat, ask or run something first")
    return logs.open(latest.id)


def open_for_chat(args: argparse.Namespace) -> Conversation | None:
    """``chat -c`` (the last conversation) or ``chat --resume ID``; None when neither is asked for."""
    if getattr(args, "resume", None):
        return store().open(args.resume)
    if getattr(args, "continue_last", False):
        return _latest(store())
    return None
