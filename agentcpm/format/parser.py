"""Parse what MiniCPM-V 4.6 writes: reasoning, answer text and tool calls, in one pass or as a stream.

The model (a Qwen3.5 backbone) writes tool calls as text::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

:func:`parse_output` turns a whole answer into a :class:`ParsedOutput`; :class:`StreamParser` does the same
incrementally and emits events while text arrives; both are the same state machine, so a stream always ends
with exactly what the batch parse gives. Sloppy output (missing closers, a bare ``<function=``, the older JSON
form, markup inside values) is recovered; nothing here ever raises on model output. See docs/parsing.md.

>>> out = parse_output("Let me look.\\n<tool_call>\\n<function=get_weather>\\n<parameter=city>\\nParis\\n"
...                    "</parameter>\\n</function>\\n</tool_call>")
>>> out.content, out.tool_calls[0].name, out.tool_calls[0].arguments
('Let me look.', 'get_weather', {'city': 'Paris'})
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..types import (
    ContentDelta,
    ParseEvent,
    ReasoningDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallFinished,
    ToolCallStarted,
    new_call_id,
)
from .arguments import convert_arguments
from .arguments import convert_texts as _convert_texts
from .arguments import convert_values as _convert_values
from .arguments import function_schemas as _function_schemas
from .arguments import json_call as _json_call
from .arguments import json_unescape as _json_unescape
from .arguments import name_error as _name_error
from .arguments import schema_key as _schema_key
from .arguments import schema_properties as _properties
from .coerce import load_structured as _load_structured
from .markup import (
    END_OF_TEXT,
    FUNCTION,
    FUNCTION_END,
    IM_END,
    PARAMETER,
    PARAMETER_END,
    THINK,
    THINK_END,
    TOOL_CALL,
    TOOL_CALL_END,
)
from .markup import json_text as _json_text

__all__ = [
    "ParsedOutput",
    "StreamParser",
    "convert_arguments",
    "normalize_text",
    "parse_output",
]


@dataclass
class ParsedOutput:
    """A parsed model answer: ``content`` (text outside reasoning and calls), ``reasoning``, ``tool_calls``."""

    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


def parse_output(
    text: str,
    tools: Sequence[Any] | None = None,
    *,
    thinking: bool = False,
    finish_reason: str | None = None,
) -> ParsedOutput:
    """Parse a whole model answer.

    ``tools`` (OpenAI-form or bare ``{"name", "parameters"}`` schemas) drive type conversion and the
    unknown-tool check; ``thinking=True`` means the prompt ended inside ``<think>``; with
    ``finish_reason="length"`` a call cut off before its end is marked ``complete=False``.

    >>> parse_output("<think>\\nhmm\\n</think>\\n\\nHi!").reasoning
    'hmm'
    """
    parser = StreamParser(tools, thinking=thinking)
    parser._events = False  # the events are dropped: no need to copy value text into them
    parser.feed(text)
    parser.close(finish_reason)
    return parser.result()


# ============================================================================ the state machine

_TEXT, _VALUE, _BLOCK, _JSON, _NAME, _BODY, _PARAM, _AFTER, _CLOSED = range(9)


_WS = re.compile(r"\s*")
_LINE_END = re.compile(r"[>\n]")
# A </parameter> closer, drifted forms included (</parameter1>, a bare </parameter), and the whitespace after it.
_CLOSER_TOKEN = re.compile(r"</parameter[^<>\s]{0,32}>?")
# Inside a value, a closer ends it only when one of these follows (after whitespace), or the end of the text.
_FOLLOWERS = {
    PARAMETER_END: (PARAMETER, FUNCTION_END, TOOL_CALL_END),
    FUNCTION_END: (TOOL_CALL_END, TOOL_CALL, FUNCTION),
    TOOL_CALL_END: (TOOL_CALL, FUNCTION),
}
_PARAM_TAG = re.compile(r"<parameter=([^<>\n]*)(>)?")
# Special tokens a server may leave in the text (skip_special_tokens off): dropped wherever they appear.
_LEAKED_TOKENS = (IM_END, END_OF_TEXT)
_LEAKED = re.compile("|".join(map(re.escape, _LEAKED_TOKENS)))
_LEAK_PREFIXES = frozenset(token[:n] for token in _LEAKED_TOKENS for n in range(1, len(token)))
_JSON_TOKEN = re.compile(r'[{}\[\]"]|</?tool_call>')
_JSON_STRING_END = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_TEXT_TAGS = (TOOL_CALL, THINK_END, FUNCTION, THINK)
_VALUE_TAGS = (PARAMETER_END, FUNCTION_END, TOOL_CALL_END, PARAMETER)
_TAG_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {
    tags: re.compile("|".join(map(re.escape, tags))) for tags in (_TEXT_TAGS, _VALUE_TAGS)
}
_BODY_TAGS = (PARAMETER, FUNCTION_END, TOOL_CALL_END, TOOL_CALL, FUNCTION, PARAMETER_END)
_TEXT_FAST, _VALUE_FAST = 1, 2
_DEFER_AT = 1024  # held text above this size is re-examined only after as much again arrived (linear time)


class _NeedMore(Exception):
    """Raised inside a step that cannot decide before more text arrives."""


def _skip_ws(buf: str, i: int) -> int:
    match = _WS.match(buf, i)
    return match.end() if match else i


def _find_tag(buf: str, i: int, tags: tuple[str, ...], final: bool) -> int:
    """Index of the next '<' that starts one of tags or (unless final) may grow into one; len(buf) if none."""
    match = _TAG_PATTERNS[tags].search(buf, i)
    if match:
        return match.start()
    if not final:
        j = buf.find("<", max(i, len(buf) - 11))
        while j >= 0:
            if _is_prefix(buf, j, tags):
                return j
            j = buf.find("<", j + 1)
    return len(buf)


def _is_prefix(buf: str, i: int, tags: tuple[str, ...]) -> bool:
    """Whether buf[i:] (the end of the buffer) could still grow into one of tags."""
    return len(buf) - i < 12 and any(tag.startswith(buf[i:]) for tag in tags)


class _Trimmed:
    """Collects text with surrounding whitespace trimmed, deciding as early as possible what to emit."""

    __slots__ = ("parts", "started", "ws")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.ws: list[str] = []
        self.started = False

    def add(self, text: str) -> str:
        """Take more text; returns what can be emitted now (trailing whitespace waits for more text)."""
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        body = text.rstrip()
        if not body:
            self.ws.append(text)
            return ""
        tail = text[len(body) :]
        if self.ws:
            body = "".join(self.ws) + body
            self.ws.clear()
        if tail:
            self.ws.append(tail)
        self.parts.append(body)
        return body

    def text(self) -> str:
        return "".join(self.parts)


class _Call:
    __slots__ = ("given", "id", "index", "json_arguments", "json_error", "name", "stray", "values")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = new_call_id()
        self.name = ""
        self.values: dict[str, str] = {}
        self.given: set[str] = set()
        self.json_arguments: dict[str, Any] | None = None
        self.json_error: str | None = None
        self.stray: list[str] = []


class StreamParser:
    """Incremental parser: ``feed`` text as it arrives, get events; ``close`` at the end; ``result``.

    Events: :class:`~agentcpm.types.ContentDelta`, :class:`~agentcpm.types.ReasoningDelta`,
    :class:`~agentcpm.types.ToolCallStarted` (as soon as ``<function=NAME>`` is closed),
    :class:`~agentcpm.types.ToolCallArgumentsDelta` (value text as it arrives) and
    :class:`~agentcpm.types.ToolCallFinished`. Only what could still be the start of a tag is held back.

    >>> p = StreamParser()
    >>> events = [e for chunk in ["Hi <tool_c", "all>\\n<function=f>\\n</function></tool_call>"] for e in p.feed(chunk)]
    >>> [type(e).__name__ for e in events + p.close()]
    ['ContentDelta', 'ToolCallStarted', 'ToolCallFinished']
    >>> p.result().tool_calls[0].name
    'f'
    """

    def __init__(self, tools: Sequence[Any] | None = None, thinking: bool = False) -> None:
        self._schemas = _function_schemas(tools)
        self._buf = ""
        self._pos = 0
        self._state = _TEXT
        self._out: list[ParseEvent] = []
        self._content = _Trimmed()
        self._reasoning: _Trimmed | None = _Trimmed() if thinking else None
        self._sink = self._reasoning if self._reasoning is not None else self._content
        self._event: type[ContentDelta] | type[ReasoningDelta] = ReasoningDelta if thinking else ContentDelta
        self._think_seen = False
        self._calls: list[ToolCall] = []
        self._call: _Call | None = None
        # The open call's raw text and the open value's text: pieces from earlier buffers, then the current
        # buffer from an index on (kept as an index, so a whole text parsed at once is copied only once).
        self._raw: list[str] = []
        self._rfrom = 0
        self._vparts: list[str] = []
        self._vfrom = 0
        self._json_block = False  # after a JSON call whose object closed inside <tool_call>: another may follow
        self._json_next = False  # _s_json starts at a further object of the same block, not at <tool_call>
        # the value being read
        self._pname = ""
        self._cindex, self._cid = 0, ""
        self._vstart = True
        self._vnl = False
        self._events = True  # False: parse_output, which drops the events (no value-delta copies)
        self._leak = ""  # the end of the text that may be the start of a leaked special token
        self._fast = _TEXT_FAST  # which fast path feed() may take (see feed)
        self._defer = 0
        self._queue: list[str] = []
        self._queued = 0
        self._finish_reason: str | None = None
        self._closed = False

    # public ----------------------------------------------------------------------------------------
    def feed(self, delta: str) -> list[ParseEvent]:
        """Add text; returns the events it completes."""
        fast = self._fast
        if fast and delta and "<" not in delta:
            # Fast path: value or plain text with nothing held back, and no tag can start in delta.
            if fast > _TEXT_FAST:
                self._raw.append(delta)
                self._vparts.append(delta)
                if self._vstart or self._vnl or delta[-1] == "\n":
                    return self._value_text(delta)
                return [ToolCallArgumentsDelta(self._cindex, self._cid, self._pname, delta)]
            text = self._sink.add(delta)
            return [self._event(text)] if text else []
        return self._feed(delta)

    def _feed(self, delta: str) -> list[ParseEvent]:
        if self._closed:
            raise ConfigurationError("this StreamParser is closed; create a new one for the next answer")
        if not delta:
            return []
        if self._leak or "|" in delta or delta[-1] == "<":  # a leaked token, or the start of one
            delta = self._unleak(delta)
            if not delta:
                return []
        if self._defer:
            self._queue.append(delta)
            self._queued += len(delta)
            if self._queued < self._defer:
                return []
            delta = "".join(self._queue)
            self._queue, self._queued, self._defer = [], 0, 0
        out: list[ParseEvent] = []
        self._out = out
        self._extend(delta)
        self._run(False)
        held = len(self._buf) - self._pos
        if not held:
            self._flush()
            self._buf, self._pos, self._rfrom, self._vfrom = "", 0, 0, 0
            self._fast = _VALUE_FAST if self._state == _VALUE else _TEXT_FAST if self._state == _TEXT else 0
            if self._leak:
                self._fast = 0
        else:
            self._fast = 0
            if held > _DEFER_AT:
                self._defer = held
        return out

    def close(self, finish_reason: str | None = None) -> list[ParseEvent]:
        """End of the answer: flush what was held back and finish an open call. With
        ``finish_reason="length"`` a call whose end never came is marked ``complete=False``."""
        if self._closed:
            return []
        self._finish_reason = finish_reason
        out: list[ParseEvent] = []
        self._out = out
        self._extend("".join(self._queue) + self._leak)  # a held "<|..." that never became a token is text
        self._queue, self._queued, self._defer, self._leak = [], 0, 0, ""
        self._run(True)
        self._end_of_text()
        self._closed = True
        self._state = _CLOSED
        self._fast = 0
        return out

    def result(self) -> ParsedOutput:
        """The parsed answer (closes the parser first if needed)."""
        if not self._closed:
            self.close()
        reasoning = self._reasoning.text() if self._reasoning is not None else ""
        return ParsedOutput(self._content.text(), reasoning or None, list(self._calls))

    # machinery -------------------------------------------------------------------------------------
    def _unleak(self, delta: str) -> str:
        """Drop leaked special tokens (<|im_end|>, <|endoftext|>); hold back a tail that may become one.

        Tokens are removed from the text as written, in one pass, so every chunking gives the same text."""
        if self._leak:
            delta, self._leak = self._leak + delta, ""
        j = delta.rfind("<")
        if j >= 0 and len(delta) - j < 13 and delta[j:] in _LEAK_PREFIXES:
            self._leak, delta = delta[j:], delta[:j]
            self._fast = 0
        return _LEAKED.sub("", delta) if "<|" in delta else delta

    def _flush(self) -> None:
        """Move the open call's raw text and the open value's text read so far out of the buffer."""
        pos, buf = self._pos, self._buf
        if self._state == _VALUE and pos > self._vfrom:
            vfrom = self._vfrom
            if vfrom > self._rfrom:
                self._raw.append(buf[self._rfrom : vfrom])
            text = buf[vfrom:pos]
            self._raw.append(text)
            self._vparts.append(text)
        elif self._call is not None and pos > self._rfrom:
            self._raw.append(buf[self._rfrom : pos])
        self._rfrom = self._vfrom = pos

    def _extend(self, delta: str) -> None:
        if self._pos:
            self._flush()
        shift = self._pos
        self._buf = self._buf[shift:] + delta if shift < len(self._buf) else delta
        self._pos = self._rfrom = self._vfrom = 0

    def _raw_text(self) -> str:
        if self._pos > self._rfrom:
            self._raw.append(self._buf[self._rfrom : self._pos])
            self._rfrom = self._pos
        return "".join(self._raw)  # one piece (a whole text parsed at once): no further copy

    def _run(self, final: bool) -> None:
        steps = _STEPS
        while steps[self._state](self, final):
            pass

    def _advance(self, end: int) -> None:
        """Consume buf[pos:end] (part of the open call's raw text, see _raw_text)."""
        self._pos = end

    def _emit(self, end: int) -> None:
        """Emit buf[pos:end] as reasoning or content."""
        text = self._sink.add(self._buf[self._pos : end])
        self._pos = end
        if text:
            self._out.append(self._event(text))

    def _to_content(self) -> None:
        self._sink, self._event = self._content, ContentDelta

    def _think_ok(self) -> bool:
        """Whether a <think> here opens the leading reasoning block."""
        return (
            not self._think_seen
            and not self._calls
            and not self._sink.started
            and (self._sink is self._reasoning or self._reasoning is None)
        )

    # text (content or reasoning) -------------------------------------------------------------------
    def _s_text(self, final: bool) -> bool:
        buf = self._buf
        i = _find_tag(buf, self._pos, _TEXT_TAGS, final)
        if i > self._pos:
            self._emit(i)
        if i == len(buf):
            return False
        if buf.startswith(TOOL_CALL, i):
            self._state = _BLOCK
            return True
        if buf.startswith(THINK_END, i):
            self._pos = i + len(THINK_END)  # ends reasoning; a stray one in content is dropped
            self._think_seen = True
            self._to_content()
            return True
        if buf.startswith(FUNCTION, i) and self._sink is self._content:
            self._start_call()
            self._advance(i + len(FUNCTION))
            self._state = _NAME
            return True
        if buf.startswith(THINK, i) and self._think_ok():
            self._pos = i + len(THINK)
            self._think_seen = True
            if self._reasoning is None:
                self._reasoning = self._sink = _Trimmed()
                self._event = ReasoningDelta
            return True
        if not buf.startswith(_TEXT_TAGS, i):
            return False  # may still become a tag
        self._emit(i + 1)
        return True

    # <tool_call> ... --------------------------------------------------------------------------------
    def _s_block(self, final: bool) -> bool:
        buf, pos = self._buf, self._pos
        k = _skip_ws(buf, pos + len(TOOL_CALL))
        if k == len(buf) and not final:
            return False
        if buf.startswith(FUNCTION, k):
            self._start_call()
            self._advance(k + len(FUNCTION))
            self._state = _NAME
            return True
        if buf.startswith("{", k):
            self._state = _JSON
            return True
        if not final and _is_prefix(buf, k, (FUNCTION,)):
            return False
        # Neither a function nor JSON: not a call, the text stays as written.
        self._emit(pos + len(TOOL_CALL))
        self._state = _TEXT
        return True

    def _json_object(self, k: int, final: bool) -> tuple[tuple[str, dict[str, Any], str | None] | None, int, int]:
        """The JSON call at buf[k] ('{'): (the call or None, end, stop) as _json_scan gives them.
        Raises _NeedMore when the object may still grow."""
        buf = self._buf
        end, stop, closers = _json_scan(buf, k)
        if end < 0 and stop < 0 and not final:
            raise _NeedMore
        body = buf[k:end] if end >= 0 else buf[k : stop if stop >= 0 else len(buf)].rstrip() + closers
        parsed = _json_call(body)
        if parsed is None and end < 0 and stop < 0 and self._finish_reason == "length":
            match = _JSON_NAME.search(body)
            if match:  # cut off mid-call: keep the name so the caller can see what was attempted
                parsed = (_json_unescape(match.group(1)), {}, None)
        return parsed, end, stop

    def _s_json(self, final: bool) -> bool:
        buf, pos = self._buf, self._pos
        k = _skip_ws(buf, pos if self._json_next else pos + len(TOOL_CALL))
        if self._json_next and buf.startswith(",", k):
            k = _skip_ws(buf, k + 1)
        try:
            parsed, end, stop = self._json_object(k, final)
        except _NeedMore:
            return False
        self._json_next = False
        if parsed is None:
            self._emit(end if end >= 0 else stop if stop >= 0 else len(buf))
            self._state = _TEXT
            return True
        self._start_call()
        call = self._call
        assert call is not None
        call.name, call.json_arguments, call.json_error = parsed
        self._out.append(ToolCallStarted(call.index, call.id, call.name))
        self._out.append(ToolCallArgumentsDelta(call.index, call.id, None, _json_text(call.json_arguments)))
        if end >= 0 or stop >= 0:
            self._advance(end if end >= 0 else stop)
            self._state = _AFTER
            self._json_block = end >= 0
        else:
            self._advance(len(buf))
            self._finish_call(closed=False)
        return True

    # <function=NAME> ... </function> ----------------------------------------------------------------
    def _start_call(self) -> None:
        self._call = _Call(len(self._calls))
        self._cindex, self._cid = self._call.index, self._call.id
        self._raw = []
        self._rfrom = self._pos
        self._json_block = False
        self._to_content()  # a call ends the reasoning

    def _read_name(self, final: bool) -> str | None:
        """The rest of a <function= or <parameter= tag: up to '>' or, when '>' is missing, the line end."""
        buf, pos = self._buf, self._pos
        match = _LINE_END.search(buf, pos)
        if match is None:
            if not final:
                return None
            name, end = buf[pos:], len(buf)
        else:
            name, end = buf[pos : match.start()], match.end()
            if match.group() == "\n":
                name = name.strip()
        self._advance(end)
        return name

    def _s_name(self, final: bool) -> bool:
        name = self._read_name(final)
        if name is None:
            return False
        call = self._call
        assert call is not None
        call.name = name.strip()
        self._out.append(ToolCallStarted(call.index, call.id, call.name))
        self._state = _BODY
        return True

    def _s_body(self, final: bool) -> bool:
        """Between parameters."""
        buf, pos = self._buf, self._pos
        k = _skip_ws(buf, pos)
        if k == len(buf):
            return False
        if buf.startswith(PARAMETER, k):
            self._advance(k + len(PARAMETER))
            self._state = _PARAM
        elif buf.startswith(FUNCTION_END, k):
            self._advance(k + len(FUNCTION_END))
            self._state = _AFTER
        elif buf.startswith(TOOL_CALL_END, k):
            self._advance(k + len(TOOL_CALL_END))
            self._finish_call(closed=True)
        elif buf.startswith((TOOL_CALL, FUNCTION), k):
            self._finish_call(closed=True)  # the next call starts: this one lacked its closers
        elif buf.startswith(PARAMETER_END, k):
            match = _CLOSER_TOKEN.match(buf, k)
            assert match is not None
            if match.end() == len(buf) and not final:
                return False
            self._advance(match.end())  # a stray closer
        elif buf[k] == "<" and not final and _is_prefix(buf, k, _BODY_TAGS):
            return False
        else:
            # Text between parameters: kept in raw; a JSON object there becomes the arguments (see _finish_call).
            end = buf.find("<", k + 1)
            if end < 0:
                if not final:
                    return False
                end = len(buf)
            assert self._call is not None
            self._call.stray.append(buf[pos:end])
            self._advance(end)
        return True

    def _s_param(self, final: bool) -> bool:
        name = self._read_name(final)
        if name is None:
            return False
        assert self._call is not None
        self._begin_value(_schema_key(_properties(self._schemas, self._call.name), name))
        return True

    def _begin_value(self, name: str) -> None:
        assert self._call is not None
        self._call.given.add(name)
        self._pname = name
        self._vparts = []
        self._vfrom = self._pos
        self._vstart = True
        self._vnl = False
        self._state = _VALUE

    def _end_value(self) -> None:
        """The value is buf[pos] and before: store it minus one leading and one trailing newline."""
        assert self._call is not None
        if self._vparts:
            self._flush()
            text = "".join(self._vparts)
            start, end = 0, len(text)
        else:  # all of it in the buffer: slice once
            text, start, end = self._buf, self._vfrom, self._pos
        if start < end and text[start] == "\n":
            start += 1
        if end > start and text[end - 1] == "\n":
            end -= 1
        self._call.values[self._pname] = text[start:end]
        self._vparts = []
        self._vnl = False

    def _value_text(self, text: str) -> list[ParseEvent]:
        """Value text minus exactly one leading and one trailing newline (the trailing one is held back)."""
        start = 0
        if self._vstart:
            self._vstart = False
            start = 1 if text[0] == "\n" else 0
        end = len(text)
        held = self._vnl
        self._vnl = end > start and text[-1] == "\n"
        text = text[start : end - 1 if self._vnl else end]
        if held:
            text = "\n" + text
        if not text:
            return []
        return [ToolCallArgumentsDelta(self._cindex, self._cid, self._pname, text)]

    def _value_until(self, end: int) -> None:
        if end > self._pos:
            if self._events:
                self._out.extend(self._value_text(self._buf[self._pos : end]))
            self._pos = end

    def _closes(self, i: int, final: bool) -> tuple[int, int, int]:
        """At a closer inside a value (</parameter, drifted forms included, </function> or </tool_call>):
        (1 it closes | 0 it is text | -1 undecided yet, the index after it, the index after its whitespace).

        It closes only when followed, after whitespace, by structural markup (_FOLLOWERS) or the end."""
        buf = self._buf
        if buf.startswith(PARAMETER_END, i):
            match = _CLOSER_TOKEN.match(buf, i)
            assert match is not None
            tag, followers = match.end(), _FOLLOWERS[PARAMETER_END]
        else:
            closer = FUNCTION_END if buf.startswith(FUNCTION_END, i) else TOOL_CALL_END
            tag, followers = i + len(closer), _FOLLOWERS[closer]
        end = _skip_ws(buf, tag)
        if end == len(buf):
            return (1 if final else -1), tag, end
        if buf.startswith(followers, end):
            return 1, tag, end
        if not final and _is_prefix(buf, end, followers):
            return -1, tag, end
        return 0, tag, end

    def _s_value(self, final: bool) -> bool:
        buf = self._buf
        i = _find_tag(buf, self._pos, _VALUE_TAGS, final)
        self._value_until(i)
        if i == len(buf):
            return False
        call = self._call
        assert call is not None
        if buf.startswith(PARAMETER, i):
            match = _PARAM_TAG.match(buf, i)
            assert match is not None
            if match.group(2) is None:
                if match.end() == len(buf) and not final:
                    return False
                self._value_until(match.end())
                return True
            props = _properties(self._schemas, call.name)
            name = _schema_key(props, match.group(1))
            if name not in call.given and (props is None or name in props):
                # A parameter of this function not given yet: the value lacked its closer, the tag starts it.
                self._end_value()
                self._advance(match.end())
                self._begin_value(name)
            else:
                self._value_until(match.end())
            return True
        if not buf.startswith((PARAMETER_END, FUNCTION_END, TOOL_CALL_END), i):
            return False  # may still become a tag
        kind, tag, end = self._closes(i, final)
        if kind < 0:
            return False
        if not kind:
            self._value_until(end)
            return True
        self._end_value()
        if buf.startswith(PARAMETER_END, i):
            self._advance(end)
            self._state = _BODY
        elif buf.startswith(FUNCTION_END, i):
            self._advance(tag)
            self._state = _AFTER
        else:
            self._advance(tag)
            self._finish_call(closed=True)
        return True

    def _s_after(self, final: bool) -> bool:
        """After </function> (or a JSON call): an optional </tool_call>; after a JSON call, maybe another one
        in the same block (several {"name": ..., "arguments": ...} objects, optionally comma-separated)."""
        buf = self._buf
        k = _skip_ws(buf, self._pos)
        if k == len(buf):
            return False
        if buf.startswith(TOOL_CALL_END, k):
            self._advance(k + len(TOOL_CALL_END))
        elif not final and _is_prefix(buf, k, (TOOL_CALL_END,)):
            return False
        elif self._json_block and buf[k] in "{,":
            j = _skip_ws(buf, k + 1) if buf[k] == "," else k
            if j == len(buf) and not final:
                return False
            if buf.startswith("{", j):
                try:
                    parsed = self._json_object(j, final)[0]
                except _NeedMore:
                    return False
                if parsed is not None:
                    self._finish_call(closed=True)
                    self._json_next = True
                    self._state = _JSON
                    return True
        self._finish_call(closed=True)
        return True

    def _finish_call(self, closed: bool) -> None:
        call = self._call
        assert call is not None
        errors = [e for e in [_name_error(call.name, self._schemas)] if e]
        if not call.values and call.stray and call.json_arguments is None:
            # <function=f>{"a": 1}</function>: the arguments written as a JSON object instead of parameters
            stray = "".join(call.stray).strip()
            try:
                value = _load_structured(stray) if stray[:1] == "{" else None
            except ValueError:
                value = None
            if isinstance(value, dict):
                call.json_arguments = value
        if call.json_arguments is not None:
            if call.json_error:
                errors.append(call.json_error)
            arguments, conversion_errors = _convert_values(call.name, call.json_arguments, self._schemas)
        else:
            arguments, conversion_errors = _convert_texts(call.name, call.values, self._schemas)
        errors += conversion_errors
        complete = closed or self._finish_reason != "length"
        if not complete:
            errors.append("the output was cut off (finish_reason='length') before this call ended; not executed")
        result = ToolCall(
            id=call.id,
            name=call.name,
            arguments=arguments,
            raw=self._raw_text(),
            complete=complete,
            error="; ".join(errors) or None,
        )
        self._calls.append(result)
        self._out.append(ToolCallFinished(call.index, result))
        self._call = None
        self._raw = []
        self._json_block = False
        self._state = _TEXT

    def _end_of_text(self) -> None:
        state = self._state
        if state == _VALUE:
            self._end_value()
        if state == _AFTER:
            self._finish_call(closed=True)
        elif self._call is not None:
            self._finish_call(closed=False)


# one step per state, indexed by the state number (each returns False when it needs more text)
_STEPS = (
    StreamParser._s_text,
    StreamParser._s_value,
    StreamParser._s_block,
    StreamParser._s_json,
    StreamParser._s_name,
    StreamParser._s_body,
    StreamParser._s_param,
    StreamParser._s_after,
)


def _json_scan(buf: str, start: int) -> tuple[int, int, str]:
    """Find the end of the JSON value at buf[start] ('{'): (end, -1, "") when balanced; (-1, stop, closers)
    when a <tool_call> or </tool_call> outside strings stops it first; (-1, -1, closers) at the buffer end."""
    stack: list[str] = []
    i = start
    while True:
        match = _JSON_TOKEN.search(buf, i)
        if match is None:
            return -1, -1, "".join(reversed(stack))
        token, i = match.group(), match.end()
        if token == '"':
            string = _JSON_STRING_END.match(buf, i)
            if string is None:
                return -1, -1, '"' + "".join(reversed(stack))
            i = string.end()
        elif token == "{":
            stack.append("}")
        elif token == "[":
            stack.append("]")
        elif token in "}]":
            if stack:
                stack.pop()
            if not stack:
                return i, -1, ""
        else:
            return -1, match.start(), "".join(reversed(stack))


# ============================================================================ render and normalize


# fenced code, inline code, $$...$$, $...$, \(...\), \[...\]  (an unclosed fence or block runs to the end)
_PROTECTED = re.compile(
    r"```.*?(?:```|\Z)|`[^`\n]*`|\$\$.*?(?:\$\$|\Z)|\$[^$\n]+\$|\\\(.*?(?:\\\)|\Z)|\\\[.*?(?:\\\]|\Z)", re.S
)
_ESCAPED_NEWLINE = re.compile(r"(?<!\\)\\n")


def normalize_text(text: str) -> str:
    r"""Turn literal ``\n`` escapes the model sometimes writes into newlines, leaving fenced code, inline
    code and LaTeX (``$...$``, ``$$...$$``, ``\(...\)``, ``\[...\]``) and doubled escapes (``\\n``) alone.
    Opt-in: the parser never applies it itself.

    >>> normalize_text(r"Line one\nLine two: `a\nb` and $\nabla f$")
    'Line one\nLine two: `a\\nb` and $\\nabla f$'
    """
    out = []
    pos = 0
    for match in _PROTECTED.finditer(text):
        out.append(_ESCAPED_NEWLINE.sub("\n", text[pos : match.start()]))
        out.append(match.group())
        pos = match.end()
    out.append(_ESCAPED_NEWLINE.sub("\n", text[pos:]))
    return "".join(out)
