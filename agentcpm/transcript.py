"""Append-only JSONL transcripts of agent runs: one line per message and per step, flushed as it happens.

Images are saved as PNG files in a folder beside the JSONL (``runs/today.jsonl`` -> ``runs/today.images/``),
never as base64 inside it; nothing about the client (API keys, headers) is ever written. A process killed
mid-run loses at most the step in flight, and :meth:`Transcript.load` gives the conversation back:

>>> messages = Transcript.load("runs/today.jsonl")              # doctest: +SKIP
>>> agent.run(history=messages)                                  # doctest: +SKIP

Line types: ``{"type": "run", "continues": bool, ...}`` opens a run (a run that does not continue a
history starts a new conversation), ``{"type": "message", "step": N, "message": {...}}``,
``{"type": "step", "step": N, "usage": {...}, ...}`` and ``{"type": "end", "output": ...}``.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path
from typing import IO, Any

from .errors import TranscriptError
from .types import ImagePart, Message, TextPart, ToolCall, VideoPart

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
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
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

        A last line cut off by a killed process is skipped; any other unreadable line raises
        :class:`~agentcpm.errors.TranscriptError`.
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TranscriptError(f"cannot read the transcript {path}: {exc}") from exc
        messages: list[Message] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):  # the line in flight when the process died
                    break
                raise TranscriptError(f"{path}:{number} is not JSON ({exc}); the file is damaged") from exc
            if not isinstance(record, dict) or "type" not in record:
                raise TranscriptError(f"{path}:{number} is not an agentcpm transcript line: {line[:80]}")
            if record["type"] == "run" and not record.get("continues"):
                messages = []
            elif record["type"] == "message":
                messages.append(_load_message(record["message"], path.parent))
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
