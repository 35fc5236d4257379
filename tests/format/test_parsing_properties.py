"""Property tests of agentcpm.parsing: never raises, streaming equals batch, render -> parse round trip."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentcpm.format import StreamParser, convert_arguments, parse_output, render_tool_calls
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
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_",
    "end|>",
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


@SETTINGS
@given(
    text=markup_text.filter(lambda t: "<|" not in t),
    cuts=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["<|im_end|>", "<|endoftext|>"])), max_size=4),
    tools=st.sampled_from([None, TOOLS]),
)
def test_leaked_special_tokens_change_nothing(text: str, cuts: list[tuple[int, str]], tools: Any) -> None:
    leaked, pos = [], 0
    for at, token in sorted((at % (len(text) + 1), token) for at, token in cuts):
        leaked += [text[pos:at], token]
        pos = at
    leaked.append(text[pos:])
    assert summary(parse_output("".join(leaked), tools)) == summary(parse_output(text, tools))


# ---------------------------------------------------------------------------- render -> parse

# What docs/parsing.md says render cannot express (the template has no escaping): a rendered value containing a
# closer followed by whitespace and structural markup (a </parameter> by <parameter=, </function> or
# </tool_call>; a </function> by </tool_call>, <tool_call> or <function=; a </tool_call> by <tool_call> or
# <function=), or a <parameter=K> tag, K a parameter of the function not given before; a nullable string
# reading "null"/"None".
_CLOSES = [
    (re.compile(r"</parameter[^<>\s]{0,32}>?\s*"), ("<parameter=", "</function>", "</tool_call>")),
    (re.compile(r"</function>\s*"), ("</tool_call>", "<tool_call>", "<function=")),
    (re.compile(r"</tool_call>\s*"), ("<tool_call>", "<function=")),
]
_TAG = re.compile(r"<parameter=([^<>\n]*)>")


def renders_exactly(text: str, starts: set[str] | frozenset[str] = frozenset()) -> bool:
    """starts: the parameter names a <parameter=K> tag in this value would start."""
    if any(m.group(1) in starts or m.group(1).strip() in starts for m in _TAG.finditer(text)):
        return False
    return not any(text.startswith(follow, m.end()) for closer, follow in _CLOSES for m in closer.finditer(text))


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
    exact = True
    for call in calls:
        given: set[str] = set()
        for key, value in call.arguments.items():
            given.add(key)
            starts = set(kinds[call.name]) - given
            exact = exact and renders_exactly(text_of(call, key), starts)
            exact = exact and not nullable_null_string(kinds[call.name][key], value)
    assume(exact)
    assert [(c.name, c.arguments, c.error, c.complete) for c in out.tool_calls] == [
        (c.name, c.arguments, None, True) for c in calls
    ]
    assert out.content == ""


def text_of(call: ToolCall, key: str) -> str:
    block = render_tool_calls([ToolCall(name=call.name, arguments={key: call.arguments[key]})])
    return block[block.index(f"<parameter={key}>\n") + len(f"<parameter={key}>\n") : block.rindex("\n</parameter>")]


@SETTINGS
@given(
    value=st.one_of(st.dictionaries(strings, json_values, max_size=3), st.lists(json_values, max_size=3)),
    python=st.booleans(),
)
def test_objects_and_arrays_encoded_once_more_come_back(value: Any, python: bool) -> None:
    """An object or array written as JSON or a Python literal, or that text JSON-encoded once more."""
    tools = [
        {"name": "f", "parameters": {"properties": {"v": {"type": "object" if isinstance(value, dict) else "array"}}}}
    ]
    inner = repr(value) if python else json.dumps(value, ensure_ascii=False)
    for text in (inner, json.dumps(inner, ensure_ascii=False)):
        assert convert_arguments("f", {"v": text}, tools) == ({"v": value}, None)
        assume(renders_exactly(text))
        call = parse_output(render_tool_calls([ToolCall(name="f", arguments={"v": text})]), tools).tool_calls[0]
        assert (call.arguments, call.error) == ({"v": value}, None)


def nullable_null_string(schema: dict[str, Any], value: Any) -> bool:
    return schema.get("type") == ["string", "null"] and isinstance(value, str) and value.strip() in ("null", "None")
