"""The conversation log: every conversation of ``agentcpm chat``, ``ask`` and ``run`` kept, listed, searched
and reopened.

Where: ``$AGENTCPM_LOG_DIR``, else ``$AGENTCPM_HOME/logs``, else ``$XDG_DATA_HOME/agentcpm/logs`` (by default
``~/.local/share/agentcpm/logs``). In it, ``logs.db`` is the index (SQLite, one row per conversation and per
turn: time, model, options, tokens, timings, the question and the answer) and ``conversations/ID.jsonl`` the
conversation itself in the :mod:`agentcpm.transcript` format (images as PNG files in ``ID.images/``).

Crash safety: each message is appended to the JSONL the moment it exists and each index row is committed
before the model is asked, so a process killed mid-turn loses at most that turn's answer. Several processes
may log at once (WAL, a busy timeout, one connection per process). API keys are never written: a
``base_url`` is stored without its user, password, query and fragment.

Off: ``AGENTCPM_NO_LOG=1``, ``agentcpm logs off`` (a marker file in the folder), or ``--no-log``.

>>> store = LogStore.default()                                   # doctest: +SKIP
>>> [(c.id, c.title) for c in store.recent(5)]                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._redact import redact_url
from .errors import ConfigurationError
from .transcript import Transcript
from .types import Message

__all__ = ["Conversation", "ConversationInfo", "LogStore", "data_dir", "log_dir", "logging_enabled", "set_logging"]

OFF_MARKER = "logs-off"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, command TEXT, model TEXT,
    base_url TEXT, options TEXT, title TEXT, path TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    turns INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations(updated);
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL REFERENCES conversations(id), started REAL NOT NULL, duration REAL,
    question TEXT, answer TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, outcome TEXT);
CREATE INDEX IF NOT EXISTS turns_conversation ON turns(conversation);
"""


def data_dir() -> Path:
    """agentcpm's data folder: ``$AGENTCPM_HOME``, else ``$XDG_DATA_HOME/agentcpm`` (``~/.local/share/agentcpm``)."""
    if os.environ.get("AGENTCPM_HOME"):
        return Path(os.environ["AGENTCPM_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "agentcpm"


def log_dir() -> Path:
    """Where conversations are logged: ``$AGENTCPM_LOG_DIR``, else ``data_dir() / "logs"``."""
    if os.environ.get("AGENTCPM_LOG_DIR"):
        return Path(os.environ["AGENTCPM_LOG_DIR"]).expanduser()
    return data_dir() / "logs"


def logging_enabled(folder: Path | None = None) -> bool:
    """False when ``AGENTCPM_NO_LOG`` is set (to anything but 0/false/no) or ``agentcpm logs off`` was run."""
    if os.environ.get("AGENTCPM_NO_LOG", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return not ((folder or log_dir()) / OFF_MARKER).exists()


def set_logging(on: bool, folder: Path | None = None) -> None:
    """Turn logging on or off for this user (``agentcpm logs on|off``)."""
    marker = (folder or log_dir()) / OFF_MARKER
    if on:
        marker.unlink(missing_ok=True)
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("conversation logging is off: `agentcpm logs on` turns it back on\n")


def safe_url(url: str | None) -> str | None:
    """A base URL as it may be stored: no user, password, query or fragment (where keys hide).

    >>> safe_url("https://user:sk-1@host:8000/v1?api-key=sk-2#x")
    'https://***@host:8000/v1'
    """
    if not url:
        return None
    try:
        parts = urlsplit(redact_url(url))
        return parts._replace(query="", fragment="").geturl()
    except ValueError:
        return "***"


@dataclass
class ConversationInfo:
    """One row of the index."""

    id: str
    created: float
    updated: float
    command: str | None
    model: str | None
    base_url: str | None
    options: str | None
    title: str | None
    path: str
    prompt_tokens: int
    completion_tokens: int
    turns: int
    snippet: str | None = None  # search: the text that matched

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_COLUMNS = ", ".join(f.name for f in fields(ConversationInfo) if f.name != "snippet")
_connections: dict[Path, sqlite3.Connection] = {}
_connections_lock = threading.Lock()


def _connect(db: Path) -> sqlite3.Connection:
    """The process's one connection to ``db`` (created with the schema on first use)."""
    with _connections_lock:
        connection = _connections.get(db)
        if connection is None:
            db.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(db, timeout=10.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            _connections[db] = connection
        return connection


class LogStore:
    """The index and the conversations in ``folder`` (default: :func:`log_dir`)."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder) if folder is not None else log_dir()
        self.db_path = self.folder / "logs.db"
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> LogStore:
        return cls()

    def __repr__(self) -> str:
        return f"LogStore({str(self.folder)!r})"

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return _connect(self.db_path).execute(sql, parameters).fetchall()

    # writing ---------------------------------------------------------------------------------------
    def new(
        self,
        *,
        command: str,
        model: str | None = None,
        base_url: str | None = None,
        options: dict[str, Any] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Conversation:
        """Start a conversation (its row is committed at once). ``path``: a transcript file of the user's
        own (``run --transcript``) to index instead of a file in the store."""
        conversation_id = time.strftime("%y%m%d") + uuid.uuid4().hex[:6]
        file = Path(path).resolve() if path is not None else self.folder / "conversations" / f"{conversation_id}.jsonl"
        now = time.time()
        kept = {k: v for k, v in (options or {}).items() if v is not None and "key" not in k.lower()}
        self._execute(
            "INSERT INTO conversations (id, created, updated, command, model, base_url, options, path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, now, now, command, model, safe_url(base_url), json.dumps(kept, default=str), str(file)),
        )
        return Conversation(self, self.get(conversation_id))

    # reading ---------------------------------------------------------------------------------------
    def _infos(self, where: str, parameters: Sequence[Any], limit: int) -> list[ConversationInfo]:
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM conversations {where} ORDER BY updated DESC, rowid DESC LIMIT ?",
            (*parameters, limit),
        )
        return [ConversationInfo(*row) for row in rows]

    def recent(self, limit: int = 20) -> list[ConversationInfo]:
        """The conversations used last, newest first (only those with a question)."""
        return self._infos("WHERE title IS NOT NULL", (), limit)

    def latest(self) -> ConversationInfo | None:
        """The conversation used last, or None."""
        found = self.recent(1)
        return found[0] if found else None

    def get(self, key: str) -> ConversationInfo:
        """The conversation whose id is ``key`` or starts with it."""
        escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = self._infos("WHERE id = ? OR id LIKE ? ESCAPE '\\'", (key, escaped + "%"), 2)
        exact = [info for info in found if info.id == key]
        if exact:
            return exact[0]
        if len(found) == 1:
            return found[0]
        what = "several conversations start with" if found else "no logged conversation has the id"
        raise ConfigurationError(f"{what} {key!r}: `agentcpm logs` lists them (give more of the id)")

    def search(self, text: str, limit: int = 20) -> list[ConversationInfo]:
        """Conversations whose questions or answers contain ``text`` (case-insensitive), newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._execute(
            "SELECT conversation, coalesce(question, '') || ' ' || coalesce(answer, '') FROM turns "
            "WHERE question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\' ORDER BY started DESC",
            (pattern, pattern),
        )
        found: dict[str, str] = {}
        for conversation, matched in rows:
            found.setdefault(conversation, matched)
        infos = [self.get(conversation) for conversation in list(found)[:limit]]
        for info in infos:
            info.snippet = _snippet(found[info.id], text)
        return infos

    def turns(self, conversation_id: str) -> list[dict[str, Any]]:
        """The turns of a conversation as the index has them (time, duration, tokens, outcome)."""
        names = ("started", "duration", "question", "answer", "prompt_tokens", "completion_tokens", "outcome")
        rows = self._execute(
            f"SELECT {', '.join(names)} FROM turns WHERE conversation = ? ORDER BY started", (conversation_id,)
        )
        return [dict(zip(names, row, strict=True)) for row in rows]

    def open(self, key: str) -> Conversation:
        """A logged conversation, to read or go on with."""
        return Conversation(self, self.get(key))


def _snippet(text: str, needle: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    at = max(0, flat.lower().find(needle.lower()) - width // 3)
    piece = flat[at : at + width]
    return ("…" if at else "") + piece + ("…" if at + width < len(flat) else "")


class Conversation:
    """One logged conversation: its transcript file and its index row. The caller writes messages to
    :attr:`path` (an agent run with ``transcript=conversation.path``, or :meth:`transcript`) and marks each
    turn with :meth:`turn_started` / :meth:`turn_finished`."""

    def __init__(self, store: LogStore, info: ConversationInfo) -> None:
        self.store = store
        self.info = info
        self.id = info.id
        self.path = Path(info.path)
        self._turn_started: float | None = None

    def __repr__(self) -> str:
        return f"Conversation({self.id!r}, {str(self.path)!r})"

    def transcript(self) -> Transcript:
        """A writer appending to this conversation's file."""
        return Transcript(self.path)

    def messages(self) -> list[Message]:
        """The conversation up to its last finished turn (a turn cut off by a crash is left out)."""
        if not self.path.is_file():
            return []
        messages = Transcript.load(self.path)
        return messages[: _finished_length(messages)]

    def resume(self) -> list[Message]:
        """:meth:`messages`, and the file rewritten to match when a cut-off turn was left out, so what is
        appended next follows the conversation as it is continued."""
        if not self.path.is_file():
            return []
        everything = Transcript.load(self.path)
        kept = everything[: _finished_length(everything)]
        if len(kept) != len(everything):
            self.rewrite(kept)
        return kept

    def rewrite(self, messages: Sequence[Message]) -> None:
        """Make the conversation in the file ``messages`` (a new run record that does not continue: what
        came before stays in the file but is no longer the conversation)."""
        with Transcript(self.path) as transcript:
            transcript.start(continues=False, rewritten=True)
            step = 0
            for message in messages:
                step += message.role == "assistant"
                transcript.message(message, step)

    def turn_started(self, question: str) -> None:
        """Record a question before the model is asked (committed: a crash later still lists it)."""
        now = time.time()
        self._turn_started = now
        self.store._execute(
            "UPDATE conversations SET updated = ?, title = coalesce(title, ?) WHERE id = ?",
            (now, question.strip()[:500] or "(images)", self.id),
        )
        self.store._execute(
            "INSERT INTO turns (conversation, started, question, outcome) VALUES (?, ?, ?, 'running')",
            (self.id, now, question),
        )

    def turn_finished(
        self,
        answer: str | None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        outcome: str = "ok",
        model: str | None = None,
    ) -> None:
        """Record how the turn ended: the answer, its tokens, ``outcome`` (ok, interrupted, error), and the
        model when it is known only now (a server's default model)."""
        if self._turn_started is None:
            return
        started, self._turn_started = self._turn_started, None
        now = time.time()
        self.store._execute(
            "UPDATE turns SET duration = ?, answer = ?, prompt_tokens = ?, completion_tokens = ?, outcome = ? "
            "WHERE conversation = ? AND started = ?",
            (now - started, answer, prompt_tokens, completion_tokens, outcome, self.id, started),
        )
        self.store._execute(
            "UPDATE conversations SET updated = ?, prompt_tokens = prompt_tokens + ?, "
            "completion_tokens = completion_tokens + ?, turns = turns + ?, model = coalesce(model, ?) WHERE id = ?",
            (now, prompt_tokens, completion_tokens, int(outcome == "ok"), model, self.id),
        )


def _finished_length(messages: Sequence[Message]) -> int:
    """How many messages make whole turns: up to the last answer without tool calls (or the system prompt)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role == "assistant" and not message.tool_calls:
            return index + 1
    return 1 if messages and messages[0].role == "system" else 0
