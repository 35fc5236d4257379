"""Append-only JSONL transcripts of agent runs: one line per message and per step, flushed as it happens.

Images are saved as PNG files in a folder beside the JSONL (``runs/today.jsonl`` -> ``runs/today.images/``),
never as base64 inside it; nothing about the client (API keys, headers) is ever written. Each tool result
is written the moment its call ends, so a process killed mid-step loses only the calls still running (a
resumed run runs just those), and :meth:`Transcript.load` gives the conversation back:

>>> messages = Transcript.load("runs/today.jsonl")              # doctest: +SKIP
>>> agent.run(history=messages)                                  # doctest: +SKIP

Line types: ``{"type": "run", "continues": bool, ...}`` opens a run (a run that does not continue a
history starts a new conversation), ``{"type": "message", "step": N, "message": {...}}``,
``{"type": "step", "step": N, "usage": {...}, ...}``, ``{"type": "pending", "step": N, "calls": [...]}``
(calls waiting for approval, ``approval="later"``) and ``{"type": "end", "output": ...}``.

A run that ended with calls pending is continued from any process:

>>> for call in Transcript.load_pending("runs/today.jsonl"):    # doctest: +SKIP
...     print(call.id, call.tool, call.arguments, call.reason)
>>> agent.run(history=Transcript.load("runs/today.jsonl"), transcript="runs/today.jsonl",
...           approvals={"call_1": True, "call_2": Rejected("not on production")})  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import TranscriptError
from .tools import dumps_exact, text_int
from .types import ImagePart, Message, TextPart, ToolCall, VideoPart

if TYPE_CHECKING:
    from .agent.events import PendingCall

__all__ = ["Transcript", "load_messages", "save_messages"]


class Transcript:
    """Writes one run's messages and steps to ``path`` (appending; folders are created).

    >>> with Transcript("runs/today.jsonl") as t:                   # doctest: +SKIP
    ...     t.start(continues=False)
    ...     t.message(Message("user", "hi"), step=0)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.image_dir = self.path.with_suffix(".images") if self.path.suffix else Path(f"{self.path}.images")
        self._file: IO[str] | None = None

    def __repr__(self) -> str:
        return f"Transcript({str(self.path)!r})"

    # writing ---------------------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        """True when the file already holds something (a run to continue)."""
        return self.path.is_file() and self.path.stat().st_size > 0

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _repair_tail(self.path)
            # backslashreplace: a lone surrogate (valid in a server's JSON) is written as its JSON escape
            # (\ud83d), so the line stays valid UTF-8 and loads back as the same string.
            self._file = open(self.path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        self._file.write(dumps_exact(record, ensure_ascii=False, default=str) + "\n")
        # flush (not fsync): the line then survives the process being killed; fsync per line is too slow.
        self._file.flush()

    def start(self, *, continues: bool, **info: Any) -> None:
        """Open a run; ``continues`` says whether it goes on from the messages already in the file."""
        self._write({"type": "run", "time": time.time(), "continues": continues, **info})

    def message(self, message: Message, step: int) -> None:
        """Append one message (its images go to files beside the JSONL)."""
        self._write({"type": "message", "step": step, "message": self._dump(message, step)})

    def step(self, step: int, **info: Any) -> None:
        self._write({"type": "step", "step": step, **info})

    def pending(self, calls: list[dict[str, Any]], step: int) -> None:
        """Record the calls a run left waiting for approval (each: id, tool, arguments, reason)."""
        self._write({"type": "pending", "step": step, "calls": calls})

    def end(self, **info: Any) -> None:
        self._write({"type": "end", "time": time.time(), **info})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _save_image(self, image: ImagePart, step: int) -> dict[str, Any]:
        source = image.source
        if image.is_url:
            return {"type": "image", "url": source}
        self.image_dir.mkdir(parents=True, exist_ok=True)
        name = f"step{step:03d}-{uuid.uuid4().hex[:8]}.png"
        target = self.image_dir / name
        if isinstance(source, str) and source.startswith("data:image/png;base64,"):
            target.write_bytes(base64.b64decode(source.split(",", 1)[1]))
        else:
            image.open().save(target, format="PNG", compress_level=1)
        return {"type": "image", "path": f"{self.image_dir.name}/{name}"}

    def _dump(self, message: Message, step: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append(self._save_image(part, step))
            else:
                content.append({"type": "video", "source": part.source})
        out: dict[str, Any] = {"role": message.role, "content": content}
        if message.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        for key in ("tool_call_id", "name", "reasoning"):
            value = getattr(message, key)
            if value is not None:
                out[key] = value
        return out

    # reading ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> list[Message]:
        """The messages of the last conversation in a transcript, images loaded from their files.

        A last line cut off by a killed process (no newline at its end) is skipped; any other unreadable
        line raises :class:`~agentcpm.errors.TranscriptError` naming the file and line. Tool results, written
        as each call ended, come back in the order the model made the calls.
        """
        return cls._read(Path(path))[0]

    @classmethod
    def load_pending(cls, path: str | os.PathLike[str]) -> list[PendingCall]:
        """The calls the last run left waiting for approval and still undecided (empty when none): what
        ``agent.run(history=Transcript.load(path), approvals=...)`` decides."""
        from .agent.events import PendingCall

        messages, recorded = cls._read(Path(path))
        answered = {m.tool_call_id for m in messages if m.role == "tool"}
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        if last is None or messages[-1].role not in ("assistant", "tool"):
            return []
        calls = [c for c in last.tool_calls if c.id not in answered]
        return [PendingCall.from_dict(recorded[c.id]) for c in calls if c.id in recorded]

    @classmethod
    def _read(cls, path: Path) -> tuple[list[Message], dict[str, dict[str, Any]]]:
        """The last conversation's messages, and the pending calls recorded for it, by id."""
        messages: list[Message] = []
        pending: dict[str, dict[str, Any]] = {}
        for number, raw, record in _records(path):
            try:
                if not isinstance(record, dict) or not isinstance(record.get("type"), str):
                    raise TypeError("not an object with a type")
                if record["type"] == "run" and not record.get("continues"):
                    messages, pending = [], {}
                elif record["type"] == "message":
                    messages.append(_load_message(record["message"], path.parent))
                elif record["type"] == "pending":
                    pending.update({str(call["id"]): call for call in record["calls"]})
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic errors are ValueErrors
                what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).strip().splitlines()[0]
                raise TranscriptError(
                    f"{path}:{number} is not a valid agentcpm transcript line ({what}): "
                    f"{raw[:80].decode('utf-8', 'replace')}; delete or repair that line"
                ) from exc
        return _results_in_call_order(messages), pending


def _records(path: Path) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, parsed JSON) of each line; a last line torn by a kill is skipped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TranscriptError(f"cannot read the transcript {path}: {exc}") from exc
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline; else the line in flight at a kill
    if torn.strip() and _parse(torn) is not None:
        lines.append(torn)  # a complete record that only lacks its newline
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"), parse_int=text_int)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise TranscriptError(
                f"{path}:{number} is not a JSON line ({exc}); the file is damaged: delete or repair that line"
            ) from exc
        yield number, raw, record


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"), parse_int=text_int)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _repair_tail(path: Path) -> None:
    """Before appending: a last line cut off by a killed process is removed (or, when it is a whole record
    that only lacks its newline, ended), so what is appended starts on a line of its own."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size == 0:
        return
    with open(path, "rb+") as file:
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        end = size  # find where the last line starts, reading backwards
        start = 0
        while end > 0:
            begin = max(0, end - 65536)
            file.seek(begin)
            newline = file.read(end - begin).rfind(b"\n")
            if newline >= 0:
                start = begin + newline + 1
                break
            end = begin
        file.seek(start)
        if _parse(file.read()) is not None:
            file.write(b"\n")
        else:
            file.truncate(start)


def _results_in_call_order(messages: list[Message]) -> list[Message]:
    """Tool results are written as each call ends; in the conversation they follow the calls' order."""
    order: dict[str, int] = {}
    index = 0
    while index < len(messages):
        message = messages[index]
        if message.role == "assistant":
            order = {call.id: position for position, call in enumerate(message.tool_calls)}
        elif message.role == "tool":
            end = index
            while end < len(messages) and messages[end].role == "tool":
                end += 1
            block = messages[index:end]
            block.sort(key=lambda m: order.get(m.tool_call_id or "", len(order)))  # stable: unknown ids last
            messages[index:end] = block
            index = end
            continue
        index += 1
    return messages


def _load_message(data: dict[str, Any], folder: Path) -> Message:
    content: list[Any] = []
    for part in data.get("content") or []:
        kind = part.get("type")
        if kind == "text":
            content.append(TextPart(part["text"]))
        elif kind == "image":
            content.append(ImagePart(part["url"] if "url" in part else str(folder / part["path"])))
        elif kind == "video":
            content.append(VideoPart(part["source"]))
    return Message(
        role=data["role"],
        content=content,
        tool_calls=[ToolCall.model_validate(call) for call in data.get("tool_calls") or []],
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
        reasoning=data.get("reasoning"),
    )


def save_messages(path: str | os.PathLike[str], messages: list[Message]) -> None:
    """Write a conversation as a transcript of its own (``load_messages`` reads it back).

    >>> save_messages("chat.jsonl", [Message("user", "hi")])          # doctest: +SKIP
    """
    with Transcript(path) as transcript:
        transcript.start(continues=False)
        step = 0
        for message in messages:
            step += message.role == "assistant"
            transcript.message(message, step)


def load_messages(path: str | os.PathLike[str]) -> list[Message]:
    """The last conversation in a transcript: the same as :meth:`Transcript.load`."""
    return Transcript.load(path)
