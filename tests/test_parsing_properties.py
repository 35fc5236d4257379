"""Property tests of agentcpm.parsing: never raises, streaming equals batch, render -> parse round trip."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentcpm.parsing import StreamParser, parse_output, render_tool_calls
from agentcpm.types import (
    ContentDelta,
    ReasoningDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallFinished,
    ToolCallStarted,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MARKUP = [
    "<tool_call>",
    "</tool_call>",
    "<function=",
    "<function=f>",
    "<function=g>",
    "</function>",
    "<parameter=",
    "<parameter=a>",
    "<parameter=b>",
    "</parameter>",
    "</parameter",
    "</parameter2>",
    "<think>",
    "</think>",
    '{"name": "f", "arguments": ',
    '{"a": "1"}',
    "{'name': 'g', 'arguments': {1: (2, {3})}}",
    "{",
    "}",
    '"',
    "\\",
    "\n",
    " ",
    "<",
    ">",
    "/",
    "None",
    "42",
    "true",
]
TOOLS = [
    {"name": "f", "parameters": {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}},
    {"name": "g", "parameters": {"properties": {"a": {"type": ["object", "null"]}, "b": {"type": "boolean"}}}},
]
markup_text = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(max_size=4)), max_size=40).map("".join)


def summary(out: Any) -> tuple[Any, ...]:
    return (out.content, out.reasoning, [(c.name, c.arguments, c.raw, c.complete, c.error) for c in out.tool_calls])


@SETTINGS
@given(
    text=st.one_of(markup_text, st.text()),
    tools=st.sampled_from([None, TOOLS]),
    thinking=st.booleans(),
    finish_reason=st.sampled_from([None, "stop", "length"]),
)
def test_parse_never_raises(text: str, tools: Any, thinking: bool, finish_reason: str | None) -> None:
    out = parse_output(text, tools, thinking=thinking, finish_reason=finish_reason)
    assert isinstance(out.content, str) and out.content == out.content.strip()
    assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) for c in out.tool_calls)
    assert all(c.complete or finish_reason == "length" for c in out.tool_calls)


@SETTINGS
@given(
    text=markup_text,
    sizes=st.one_of(st.just([1]), st.lists(st.integers(1, 12), min_size=1, max_size=8)),
    tools=st.sampled_from([None, TOOLS]),
    thinking=st.booleans(),
    finish_reason=st.sampled_from([None, "length"]),
)
def test_streaming_equals_batch(
    text: str, sizes: list[int], tools: Any, thinking: bool, finish_reason: str | None
) -> None:
    parser = StreamParser(tools, thinking=thinking)
    events: list[Any] = []
    start = 0
    for i in range(len(text)):
        if start >= len(text):
            break
        size = sizes[i % len(sizes)]
        events += parser.feed(text[start : start + size])
        start += size
    events += parser.close(finish_reason)
    streamed = parser.result()
    assert summary(streamed) == summary(parse_output(text, tools, thinking=thinking, finish_reason=finish_reason))
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == streamed.content
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == (streamed.reasoning or "")
    assert [e.call for e in events if isinstance(e, ToolCallFinished)] == streamed.tool_calls
    assert [e.id for e in events if isinstance(e, ToolCallStarted)] == [c.id for c in streamed.tool_calls]
    if tools is None:  # without a schema every <parameter=> value is a string, streamed as it came (a repeat wins)
        for call in streamed.tool_calls:
            for key, value in call.arguments.items():
                named = [
                    e.text
                    for e in events
                    if isinstance(e, ToolCallArgumentsDelta) and (e.id, e.parameter) == (call.id, key)
                ]
                assert named == [] or "".join(named).endswith(value)


# ---------------------------------------------------------------------------- render -> parse

# What docs/parsing.md says render cannot express (the template has no escaping): a rendered value containing
# </function> or </tool_call>, or a </parameter> closer followed by whitespace and <parameter=, </function> or
# </tool_call>; a nullable string reading "null"/"None".
_CLOSER = re.compile(r"</parameter[^<>\s]{0,32}>?\s*")


def renders_exactly(text: str) -> bool:
    if "</function>" in text or "</tool_call>" in text:
        return False
    return not any(
        text.startswith(("<parameter=", "</function>", "</tool_call>"), m.end()) for m in _CLOSER.finditer(text)
    )


VALUE_MARKUP = ["</parameter>", "</parameter", "<parameter=a>", "<parameter=p1>", "<tool_call>", "<function=x>"]
VALUE_MARKUP += ["</function>", "</tool_call>", "\n", " ", "<", ">", "中文", "🚀", "null", "None", "\t"]
strings = st.lists(st.one_of(st.sampled_from(VALUE_MARKUP), st.text(max_size=6)), max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | strings,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=8,
)
KINDS: dict[str, Any] = {
    "string": strings,
    "integer": st.integers() | st.sampled_from([10**4400 + 1, -(10**5000)]),
    "number": st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    "boolean": st.booleans(),
    "object": st.dictionaries(strings, json_values, max_size=3),
    "array": st.lists(json_values, max_size=3),
    "nullable_string": st.none() | strings,
    "nullable_integer": st.none() | st.integers(),
}
SCHEMAS = {
    "nullable_string": {"type": ["string", "null"]},
    "nullable_integer": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
}
function_names = st.text(min_size=1, max_size=12).filter(lambda s: not re.search(r"[\s<>{}\"']", s))
parameter_names = st.text(max_size=8).filter(lambda s: ">" not in s and "\n" not in s)


@st.composite
def calls_and_tools(draw: Any) -> tuple[list[ToolCall], list[dict[str, Any]]]:
    calls, tools = [], {}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(function_names)
        kinds = draw(st.dictionaries(parameter_names, st.sampled_from(sorted(KINDS)), max_size=4))
        if name in tools:  # the same tool again, with some of its parameters
            kinds = {k: v for k, v in tools[name].items() if draw(st.booleans())}
        else:
            tools[name] = kinds
        arguments = {key: draw(KINDS[kind]) for key, kind in kinds.items()}
        calls.append(ToolCall(name=name, arguments=arguments))
    schemas = [
        {"name": n, "parameters": {"properties": {k: SCHEMAS.get(v, {"type": v}) for k, v in kinds.items()}}}
        for n, kinds in tools.items()
    ]
    return calls, schemas


@settings(SETTINGS, max_examples=100)
@given(calls_and_tools())
def test_render_then_parse_gives_the_calls_back(case: tuple[list[ToolCall], list[dict[str, Any]]]) -> None:
    calls, tools = case
    text = render_tool_calls(calls)
    out = parse_output(text, tools)  # never raises, even for what render cannot express
    kinds = {t["name"]: t["parameters"]["properties"] for t in tools}
    exact = all(
        renders_exactly(text_of(call, key)) and not nullable_null_string(kinds[call.name][key], value)
        for call in calls
        for key, value in call.arguments.items()
    )
    assume(exact)
    assert [(c.name, c.arguments, c.error, c.complete) for c in out.tool_calls] == [
        (c.name, c.arguments, None, True) for c in calls
    ]
    assert out.content == ""


def text_of(call: ToolCall, key: str) -> str:
    block = render_tool_calls([ToolCall(name=call.name, arguments={key: call.arguments[key]})])
    return block[block.index(f"<parameter={key}>\n") + len(f"<parameter={key}>\n") : block.rindex("\n</parameter>")]


def nullable_null_string(schema: dict[str, Any], value: Any) -> bool:
    return schema.get("type") == ["string", "null"] and isinstance(value, str) and value.strip() in ("null", "None")
