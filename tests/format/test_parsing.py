"""The MiniCPM-V 4.6 output parser (agentcpm.parsing): every rule of issue 2 on realistic model outputs.

Each batch case is also streamed (several chunkings, one character at a time included) and must end the same.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentcpm.errors import ConfigurationError
from agentcpm.format import (
    ParsedOutput,
    StreamParser,
    convert_arguments,
    normalize_text,
    parse_output,
    render_tool_calls,
)
from agentcpm.types import (
    ContentDelta,
    ReasoningDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallFinished,
    ToolCallStarted,
)

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
WRITE_FILE = {  # the bare {"name", "parameters"} form
    "name": "write_file",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "mode": {"type": "string"}},
    },
}
TOOLS = [*WEATHER, WRITE_FILE]


def call_block(name: str, **params: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def stream(
    text: str, tools: Any = None, *, thinking: bool = False, chunk: int = 1, finish_reason: str | None = None
) -> tuple[list[Any], ParsedOutput]:
    parser = StreamParser(tools, thinking=thinking)
    events: list[Any] = []
    for start in range(0, len(text), chunk):
        events += parser.feed(text[start : start + chunk])
    events += parser.close(finish_reason)
    return events, parser.result()


def summary(out: ParsedOutput) -> tuple[Any, ...]:
    """Everything but the random call ids."""
    return (
        out.content,
        out.reasoning,
        [(c.name, c.arguments, c.raw, c.complete, c.error) for c in out.tool_calls],
    )


def parse(text: str, tools: Any = None, **kwargs: Any) -> ParsedOutput:
    """parse_output, checked against streaming with several chunkings."""
    out = parse_output(text, tools, **kwargs)
    for chunk in (1, 2, 7, 30):
        events, streamed = stream(text, tools, chunk=chunk, **kwargs)
        assert summary(streamed) == summary(out), f"chunk={chunk}"
        assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == out.content
        assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == (out.reasoning or "")
        assert [e.call for e in events if isinstance(e, ToolCallFinished)] == streamed.tool_calls
    return out


# ---------------------------------------------------------------------------- rule 1: the format


def test_well_formed_call_with_text_before() -> None:
    text = "I'll check the weather in Paris.\n\n" + call_block("get_weather", city="Paris", days="3")
    out = parse(text, WEATHER)
    assert out.content == "I'll check the weather in Paris."
    assert out.reasoning is None
    [call] = out.tool_calls
    assert (call.name, call.arguments, call.complete, call.error) == (
        "get_weather",
        {"city": "Paris", "days": 3},
        True,
        None,
    )
    assert call.raw == text[text.index("<tool_call>") :]


def test_several_calls_with_text_between_and_after_are_kept_in_order() -> None:
    text = (
        "先查北京的天气 🌤️\n"
        + call_block("get_weather", city="北京")
        + "\n然后查上海。\n"
        + call_block("get_weather", city="上海 🏙️", days="2")
        + "\n\n两个都查好了 ✅  \n"
    )
    out = parse(text, WEATHER)
    assert out.content == "先查北京的天气 🌤️\n\n然后查上海。\n\n\n两个都查好了 ✅"
    assert [c.arguments for c in out.tool_calls] == [{"city": "北京"}, {"city": "上海 🏙️", "days": 2}]
    assert all(c.error is None and c.complete for c in out.tool_calls)


def test_code_value_with_angle_brackets_newlines_and_indentation() -> None:
    code = (
        "def clamp(x: int, lo: int, hi: int) -> int:\n"
        "    if x < lo:\n        return lo\n    return hi if x > hi else x\n\n\n"
        "html = '<div class=\"a\"><p>hi</p></div>'  # 中文注释 🚀\n"
        "assert 1 <2 and 3<= 4 and a<<1 and b</c\n"
    )
    text = call_block("write_file", path="src/clamp.py", content=code)
    out = parse(text, TOOLS)
    assert out.tool_calls[0].arguments == {"path": "src/clamp.py", "content": code}
    assert out.content == ""


def test_plain_answer_without_calls() -> None:
    out = parse("  The answer is 42 (because 6 × 7 < 43).\n", TOOLS)
    assert summary(out) == ("The answer is 42 (because 6 × 7 < 43).", None, [])


# ---------------------------------------------------------------------------- rule 2: JSON form


def test_json_form_inside_tool_call() -> None:
    text = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": "3"}}\n</tool_call>'
    out = parse(text, WEATHER)
    [call] = out.tool_calls
    assert (call.name, call.arguments, call.error) == ("get_weather", {"city": "Paris", "days": 3}, None)
    assert out.content == "Checking."
    assert call.raw == text[len("Checking.\n") :]


def test_json_form_with_arguments_as_a_json_string_and_markup_in_strings() -> None:
    arguments = json.dumps({"path": "a.html", "content": "<p>x</p>\n</tool_call> {braces}"})
    text = "<tool_call>\n" + json.dumps({"name": "write_file", "arguments": arguments}) + "\n</tool_call>\nDone."
    out = parse(text, TOOLS)
    assert out.tool_calls[0].arguments == {"path": "a.html", "content": "<p>x</p>\n</tool_call> {braces}"}
    assert out.content == "Done."


def test_json_form_events_and_sloppy_variants() -> None:
    events, out = stream('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')
    assert [type(e) for e in events] == [ToolCallStarted, ToolCallArgumentsDelta, ToolCallFinished]
    assert events[1].parameter is None and json.loads(events[1].text) == {"a": 1}
    # a missing closing brace and a missing </tool_call>
    assert parse('<tool_call>\n{"name": "f", "arguments": {"a": [1, 2]}\n</tool_call>').tool_calls[0].arguments == {
        "a": [1, 2]
    }
    out = parse('<tool_call>\n{"name": "f", "arguments": {}}\nAnd some text after.')
    assert (out.tool_calls[0].name, out.content) == ("f", "And some text after.")
    # Python repr, as older templates wrote it (read as the JSON data it stands for)
    assert parse("<tool_call>{'name': 'f', 'arguments': {'ok': True, 1: (2, 3)}}</tool_call>").tool_calls[
        0
    ].arguments == {"ok": True, "1": [2, 3]}
    # arguments written as JSON inside <function=...>
    out = parse(
        '<tool_call>\n<function=get_weather>\n{"city": "Oslo", "days": "2"}\n</function>\n</tool_call>', WEATHER
    )
    assert out.tool_calls[0].arguments == {"city": "Oslo", "days": 2}


def test_several_json_calls_in_one_block() -> None:
    first = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
    second = json.dumps({"name": "get_weather", "arguments": {"city": "Rome", "days": "2"}})
    for sep in ("\n", "", ",\n", " , "):
        text = f"Both.\n<tool_call>\n{first}{sep}{second}\n</tool_call>\nDone."
        out = parse(text, WEATHER)
        assert [c.arguments for c in out.tool_calls] == [{"city": "Paris"}, {"city": "Rome", "days": 2}], sep
        assert out.content == "Both.\n\nDone." and all(c.complete and not c.error for c in out.tool_calls)
        assert "".join(c.raw for c in out.tool_calls) == text[len("Both.\n") : -len("\nDone.")]
    # an object that is not a call ends the block's calls (it stays text, as after a lone call)
    out = parse(f'<tool_call>\n{first}\n{{"note": 1}}\n</tool_call>', WEATHER)
    assert len(out.tool_calls) == 1 and out.content == '{"note": 1}\n</tool_call>'
    # cut inside the second object
    out = parse(f"<tool_call>\n{first}\n{second[:30]}", WEATHER, finish_reason="length")
    assert [(c.name, c.complete) for c in out.tool_calls] == [("get_weather", True), ("get_weather", False)]


def test_leaked_special_tokens_are_dropped() -> None:
    text = "<think>\nhm<|im_end|>\n</think>\nAnswer<|endoftext|>\n" + call_block("write_file", content="a<|im_end|>b")
    out = parse(text + "<|im_end|>", TOOLS)
    assert (out.reasoning, out.content) == ("hm", "Answer")
    assert out.tool_calls[0].arguments == {"content": "ab"}
    # the end of the answer: what precedes a leaked token counts as the end of the text
    out = parse("<function=get_weather>\n<parameter=city>\nRome\n</function><|im_end|>", WEATHER)
    assert out.tool_calls[0].arguments == {"city": "Rome"}
    # removed in one pass over the text as written; unfinished look-alikes stay text
    assert parse("a <|im_<|im_end|>end|> b <|endof").content == "a <|im_end|> b <|endof"
    assert parse("x <|im_start|> y").content == "x <|im_start|> y"


def test_json_arguments_that_are_not_an_object_give_an_error() -> None:
    [call] = parse('<tool_call>{"name": "f", "arguments": "not json"}</tool_call>').tool_calls
    assert call.name == "f" and call.arguments == {} and "not valid JSON" in (call.error or "")


# ---------------------------------------------------------------------------- rule 3: sloppy output


def test_bare_function_without_tool_call() -> None:
    text = "Sure.\n<function=get_weather>\n<parameter=city>\nLyon\n</parameter>\n</function>\nAnything else?"
    out = parse(text, WEATHER)
    assert out.tool_calls[0].arguments == {"city": "Lyon"}
    assert out.content == "Sure.\n\nAnything else?"


@pytest.mark.parametrize(
    "text",
    [
        # the value ends at the next <parameter= (no well-formed closer follows: see rule 5 for when one does)
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n<parameter=days>\n4\n</function>\n</tool_call>",
        # ... at </function>
        "<tool_call>\n<function=get_weather>\n<parameter=days>\n4\n<parameter=city>\nRome\n</function>\n</tool_call>",
        # ... at </tool_call>
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n</tool_call>",
        # ... at the end of the text
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n",
        # ... at the next <parameter=, also when that parameter is then properly closed (a forgotten closer)
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n<parameter=days>\n4\n</parameter>\n</function>\n</tool_call>",
        "<function=get_weather><parameter=city>Rome<parameter=days>4</parameter></function>",
        # drifted closers
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter1>\n<parameter=days>\n4\n</parameter_days>\n</function>\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n</parameter\n</function>\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n</parameter",
        # missing </function>, missing </tool_call>, missing both
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n</parameter>\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n</parameter>\n</function>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4\n</parameter>\n",
    ],
)
def test_missing_and_drifted_closers_are_recovered(text: str) -> None:
    out = parse(text, WEATHER)
    [call] = out.tool_calls
    assert call.arguments == {"city": "Rome", "days": 4}
    assert (call.error, call.complete, out.content) == (None, True, "")


def test_missing_closers_between_calls_and_before_text() -> None:
    text = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n</function>\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nBergen\n</parameter>\n</function>\n"
        "Both requested."
    )
    out = parse(text, WEATHER)
    assert [c.arguments["city"] for c in out.tool_calls] == ["Oslo", "Bergen"]
    assert out.content == "Both requested."


# ---------------------------------------------------------------------------- rule 4: values

TYPED = [
    {
        "name": "typed",
        "parameters": {
            "type": "object",
            "properties": {
                "s": {"type": "string"},
                "i": {"type": "integer"},
                "n": {"type": "number"},
                "b": {"type": "boolean"},
                "o": {"type": "object"},
                "a": {"type": "array"},
                "ns": {"type": ["string", "null"]},
                "ni": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "i_or_s": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "s_or_i": {"type": ["string", "integer"]},
                "py_int": {"type": "int"},
                "py_float": {"type": "float"},
                "py_bool": {"type": "bool"},
                "py_str": {"type": "str"},
                "py_dict": {"type": "dict"},
                "py_list": {"type": "list"},
                "choice": {"enum": [1, 2, 3]},
            },
        },
    }
]


def typed(**params: str) -> ToolCall:
    [call] = parse(call_block("typed", **params), TYPED).tool_calls
    return call


def test_string_values_lose_exactly_one_newline_each_side() -> None:
    assert typed(s="\n  indented\n\n").arguments == {"s": "\n  indented\n\n"}
    assert typed(s="").arguments == {"s": ""}
    assert parse("<function=typed>\n<parameter=s>x\t </parameter></function>", TYPED).tool_calls[0].arguments == {
        "s": "x\t "
    }


def test_numbers_are_exact() -> None:
    big = "9" * 5000
    call = typed(i=" 42 ", n="3", py_int=f"-{big}", py_float="2.5")
    assert call.arguments == {"i": 42, "n": 3, "py_int": -(10**5000 - 1), "py_float": 2.5}
    assert type(call.arguments["n"]) is int and call.error is None
    call = typed(n="123456789012345678901234567890", i="7.0", py_float="1e3")
    assert call.arguments == {"n": 123456789012345678901234567890, "i": 7, "py_float": 1000.0}
    assert type(call.arguments["py_float"]) is float


def test_booleans_any_case_and_never_a_silent_false() -> None:
    assert typed(b="TRUE", py_bool="false").arguments == {"b": True, "py_bool": False}
    call = typed(b="yes")
    assert call.arguments == {"b": "yes"}
    assert "parameter 'b': expected boolean" in (call.error or "")


def test_null_only_where_allowed() -> None:
    assert typed(ns="null", ni="None").arguments == {"ns": None, "ni": None}
    call = typed(s="None", i="null")
    assert call.arguments == {"s": "None", "i": "null"}
    assert "parameter 'i'" in (call.error or "") and "parameter 's'" not in (call.error or "")


def test_objects_and_arrays_json_encoded_as_a_string_are_decoded_once_more() -> None:
    encoded = {"o": json.dumps(json.dumps({"k": [1, None]})), "a": json.dumps("[True, None]")}
    encoded["py_dict"] = json.dumps("{'a': 1}")
    expected = {"o": {"k": [1, None]}, "a": [True, None], "py_dict": {"a": 1}}
    call = typed(**encoded)
    assert (call.arguments, call.error) == (expected, None)
    structured = {"o": json.dumps({"k": [1, None]}), "a": "[True, None]", "py_dict": "{'a': 1}"}
    assert convert_arguments("typed", structured, TYPED) == (expected, None)
    assert convert_arguments("typed", encoded, TYPED) == (expected, None)
    block = "<tool_call>" + json.dumps({"name": "typed", "arguments": encoded}) + "</tool_call>"
    assert parse(block, TYPED).tool_calls[0].arguments == expected
    # only once more, and only for an object or array: a string stays the text written
    assert typed(s=json.dumps("[1]")).arguments == {"s": '"[1]"'}
    call = typed(o=json.dumps(json.dumps(json.dumps({}))))
    assert call.arguments["o"] == json.dumps(json.dumps(json.dumps({}))) and "expected object" in (call.error or "")


def test_objects_and_arrays_from_json_or_python_literals() -> None:
    call = typed(
        o='{"k": [1, 2.5, null], "中": "文"}', a="[1, 2]", py_dict="{'a': True, 'b': None}", py_list="(1, 'x')"
    )
    assert call.arguments == {
        "o": {"k": [1, 2.5, None], "中": "文"},
        "a": [1, 2],
        "py_dict": {"a": True, "b": None},
        "py_list": [1, "x"],
    }
    call = typed(o="[1]", a="{not json")
    assert call.arguments == {"o": "[1]", "a": "{not json"}
    assert "parameter 'o': expected object" in (call.error or "") and "parameter 'a'" in (call.error or "")


def test_type_lists_and_any_of_are_tried_in_order() -> None:
    assert typed(i_or_s="5", s_or_i="5").arguments == {"i_or_s": 5, "s_or_i": "5"}
    assert typed(i_or_s="five", choice="2").arguments == {"i_or_s": "five", "choice": 2}
    assert typed(py_str=" 5 ").arguments == {"py_str": " 5 "}


def test_failed_conversion_keeps_the_raw_string_and_sets_the_error() -> None:
    call = typed(i="12 apples", n="NaN")
    assert call.arguments == {"i": "12 apples", "n": "NaN"}
    assert call.error is not None and "expected integer" in call.error and "expected number" in call.error


def test_unknown_parameters_and_no_schema_stay_strings() -> None:
    call = typed(extra="5", i="5")
    assert call.arguments == {"extra": "5", "i": 5}
    [call] = parse(call_block("typed", i="5", b="true")).tool_calls
    assert call.arguments == {"i": "5", "b": "true"} and call.error is None


def test_convert_arguments_for_structured_calls() -> None:
    assert convert_arguments("typed", {"i": "5", "b": True, "o": '{"a": 1}', "n": 2.5, "x": 1}, TYPED) == (
        {"i": 5, "b": True, "o": {"a": 1}, "n": 2.5, "x": 1},
        None,
    )
    assert convert_arguments("typed", {"s": 5, "i": 7.0}, TYPED) == ({"s": "5", "i": 7}, None)
    converted, error = convert_arguments("typed", {"i": "many"}, TYPED)
    assert converted == {"i": "many"} and error and "expected integer" in error
    converted, error = convert_arguments("nope", {"a": "1"}, TYPED)
    assert converted == {"a": "1"} and error and "unknown tool 'nope'" in error and "typed" in error
    assert convert_arguments("anything", {"a": "1"}, None) == ({"a": "1"}, None)


# ---------------------------------------------------------------------------- rule 5: markup inside values


def test_values_may_contain_tool_call_markup_as_text() -> None:
    doc = (
        "To call a tool write:\n<tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n"
        "and then </parameter> is shown again.\n<think>not reasoning</think>"
    )
    out = parse(call_block("write_file", path="docs/format.md", content=doc), TOOLS)
    assert out.tool_calls[0].arguments == {"path": "docs/format.md", "content": doc}
    xml = '<config>\n  <parameter=timeout>30</parameter>\n  <parameter name="x"/>\n</config>'
    out = parse(call_block("write_file", path="c.xml", content=xml, mode="w"), TOOLS)
    assert out.tool_calls[0].arguments == {"path": "c.xml", "content": xml, "mode": "w"}


def test_function_and_tool_call_closers_inside_a_value_are_text_unless_structure_follows() -> None:
    # Tools that write code, XML or templates get their whole value (issue 10).
    template = (
        "{% macro f() %}</function>{% endmacro %}\n"
        "<xml><call></tool_call> is how a call ends</call>\n"
        "  </function>\n  done\n</tool_call>\t!"
    )
    text = "Saving.\n" + call_block("write_file", path="t.j2", content=template) + "\nSaved."
    out = parse(text, TOOLS)
    assert [c.arguments for c in out.tool_calls] == [{"path": "t.j2", "content": template}]
    assert out.content == "Saving.\n\nSaved." and out.tool_calls[0].error is None
    # structural markup (or the end) after them: they end the value, as before
    for closer in ("\n</function>\n</tool_call>", "\n</function>", "\n</tool_call>", "</function>  ", "</tool_call>\n"):
        out = parse("<function=get_weather>\n<parameter=city>\nRome" + closer, WEATHER)
        assert [c.arguments for c in out.tool_calls] == [{"city": "Rome"}] and out.content == "", closer
    for between in ("</function>\n", "</tool_call>\n", "</function>\n</tool_call>\n"):
        text = "<function=get_weather>\n<parameter=city>\nRome\n" + between + call_block("get_weather", city="Oslo")
        assert [c.arguments["city"] for c in parse(text, WEATHER).tool_calls] == ["Rome", "Oslo"], between
    # </function> followed by text: still the value (it runs to the next real closer or the end)
    out = parse("<function=get_weather>\n<parameter=city>\nRome\n</function>\nNice city.", WEATHER)
    assert out.tool_calls[0].arguments == {"city": "Rome\n</function>\nNice city."}


def test_a_streamed_call_is_not_finished_before_its_closer_is_decided() -> None:
    parser = StreamParser(TOOLS)
    events = parser.feed("<tool_call>\n<function=write_file>\n<parameter=content>\nhtml = '</function>")
    events += parser.feed("\n  ")
    assert not [e for e in events if isinstance(e, ToolCallFinished)]
    events += parser.feed("'\n</parameter>\n</function>\n</tool_call>")
    [finished] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert finished.call.arguments == {"content": "html = '</function>\n  '"}
    # an unclosed value meets </tool_call> at the end of what arrived: text or the end? Not decided yet
    parser = StreamParser(WEATHER)
    assert not [
        e
        for e in parser.feed("<function=get_weather>\n<parameter=city>\nRome\n</tool_call>\n")
        if isinstance(e, ToolCallFinished)
    ]
    [finished] = [e for e in parser.close() if isinstance(e, ToolCallFinished)]
    assert (finished.call.arguments, finished.call.complete) == ({"city": "Rome"}, True)


def test_a_parameter_tag_in_an_unclosed_value() -> None:
    # a parameter of the function not given yet starts it, even when a closer follows later (issue 10: a
    # forgotten </parameter> is far more common than a value quoting its own function's parameter tag)
    text = "<function=write_file>\n<parameter=content>\nx = 1\n<parameter=mode>\nw\n</parameter>\n</function>"
    assert parse(text, TOOLS).tool_calls[0].arguments == {"content": "x = 1", "mode": "w"}
    # no closer anywhere: the tag starts the parameter
    text = "<function=write_file>\n<parameter=content>\nhello\n<parameter=mode>\nw\n</function>"
    assert parse(text, TOOLS).tool_calls[0].arguments == {"content": "hello", "mode": "w"}
    # not a parameter of the function, or already given: text
    text = "<function=write_file>\n<parameter=content>\na\n<parameter=size>\n<parameter=content>\nb\n</function>"
    assert parse(text, TOOLS).tool_calls[0].arguments == {"content": "a\n<parameter=size>\n<parameter=content>\nb"}
    # without a schema any new name starts a parameter
    text = "<function=write_file>\n<parameter=content>\na\n<parameter=size>\n3\n</function>"
    assert parse(text).tool_calls[0].arguments == {"content": "a", "size": "3"}


# ---------------------------------------------------------------------------- rule 6: reasoning


def test_thinking_mode_starts_in_reasoning() -> None:
    text = "The user wants Paris weather.\nI should call the tool.\n</think>\n\n" + call_block(
        "get_weather", city="Paris"
    )
    out = parse(text, WEATHER, thinking=True)
    assert out.reasoning == "The user wants Paris weather.\nI should call the tool."
    assert out.content == "" and out.tool_calls[0].arguments == {"city": "Paris"}
    # some servers echo the opening tag
    assert parse("<think>\nhmm\n</think>\nok", thinking=True).reasoning == "hmm"


def test_leading_think_block_in_either_mode() -> None:
    for thinking in (False, True):
        out = parse("\n<think>\n让我想想… 🤔\n</think>\n\n答案是 4。", thinking=thinking)
        assert (out.reasoning, out.content) == ("让我想想… 🤔", "答案是 4。")
    assert parse("<think>\n\n</think>\n\nHi").reasoning is None


def test_tool_call_inside_open_reasoning_ends_it() -> None:
    text = "Need weather data.\n" + call_block("get_weather", city="Nice") + "\nThat was it."
    out = parse(text, WEATHER, thinking=True)
    assert out.reasoning == "Need weather data."
    assert out.tool_calls[0].arguments == {"city": "Nice"}
    assert out.content == "That was it."


def test_think_tags_that_are_not_leading() -> None:
    out = parse("Answer: use <think> tags.</think> Done.")
    assert out.content == "Answer: use <think> tags. Done." and out.reasoning is None


# ---------------------------------------------------------------------------- rule 7: never raise, errors


def test_unknown_and_invalid_names() -> None:
    [call] = parse(call_block("get_wether", city="Paris"), WEATHER).tool_calls
    assert call.error and "unknown tool 'get_wether'" in call.error and "get_weather" in call.error
    assert call.arguments == {"city": "Paris"}
    assert parse(call_block("get_wether", city="Paris")).tool_calls[0].error is None
    for name in ("get weather", 'say"hi', "a{b}", "x'y", ""):
        [call] = parse(f"<tool_call>\n<function={name}>\n</function>\n</tool_call>").tool_calls
        assert call.error and "invalid function name" in call.error


def test_function_name_without_closing_bracket_runs_to_the_end_of_the_line() -> None:
    text = "<tool_call>\n<function=get_weather\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    [call] = parse(text, WEATHER).tool_calls
    assert (call.name, call.arguments, call.error) == ("get_weather", {"city": "Paris"}, None)


def test_tool_call_block_without_a_call_stays_in_content() -> None:
    text = "Here is the tag: <tool_call>\nI am not sure which tool\n</tool_call> ok"
    assert summary(parse(text, WEATHER)) == (text, None, [])
    text = '<tool_call>{"city": "Paris"}</tool_call>'
    assert summary(parse(text, WEATHER)) == (text, None, [])


def test_cut_off_call_is_incomplete_only_with_finish_reason_length() -> None:
    text = (
        "Writing.\n<tool_call>\n<function=write_file>\n<parameter=path>\nnotes.md\n</parameter>\n"
        "<parameter=content>\n# Ti"
    )
    [call] = parse(text, TOOLS, finish_reason="length").tool_calls
    assert call.complete is False and "cut off" in (call.error or "")
    assert call.arguments == {"path": "notes.md", "content": "# Ti"}
    [call] = parse(text, TOOLS).tool_calls
    assert call.complete is True and call.error is None
    # a call that ended before the cut is complete; the one cut in its name too
    text = call_block("get_weather", city="Paris") + "\n<tool_call>\n<function=get_wea"
    calls = parse(text, WEATHER, finish_reason="length").tool_calls
    assert [(c.name, c.complete) for c in calls] == [("get_weather", True), ("get_wea", False)]
    [call] = parse('<tool_call>\n{"name": "get_weather", "arguments": {"ci', WEATHER, finish_reason="length").tool_calls
    assert (call.name, call.complete) == ("get_weather", False)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<",
        "<tool_call>",
        "<tool_call>\n<function=",
        "</parameter></function></tool_call></think>",
        "<function=f>\n<parameter=x>\n<parameter=x>\n<parameter=",
        '<tool_call>{"name": "f", "arguments": {"a": "\\ud800"',
        '<tool_call>{"name": 5}</tool_call>',
        "<tool_call>[" + "[" * 5000 + "</tool_call>",
        "<function=f><parameter=o>\n" + "[" * 5000 + "\n</parameter></function>",
        "<think><think></think></think><tool_call><tool_call></tool_call>",
        "<tool_call>{'name': 'f', 'arguments': {1: {2, 3}, (4,): b'x', 'c': 1j}}</tool_call>",
        "<function=f>\n{1: 2}\n</function>",
    ],
    ids=lambda text: repr(text[:24]),
)
def test_never_raises_on_garbage(text: str) -> None:
    tools = [{"name": "f", "parameters": {"properties": {"o": {"type": "object"}, "x": {"type": "integer"}}}}]
    for finish_reason in (None, "length"):
        for thinking in (False, True):
            parse(text, tools, thinking=thinking, finish_reason=finish_reason)


# ---------------------------------------------------------------------------- rule 8: streaming


def test_stream_events_arrive_early() -> None:
    parser = StreamParser(TOOLS)
    assert parser.feed("Let me write it.\n<tool_") == [ContentDelta("Let me write it.")]
    assert parser.feed("call>\n<function=write_file") == []
    [started] = parser.feed(">\n")
    assert isinstance(started, ToolCallStarted) and (started.index, started.name) == (0, "write_file")
    assert parser.feed("<parameter=content>\nif a <") == [ToolCallArgumentsDelta(0, started.id, "content", "if a ")]
    assert parser.feed(" b:\n") == [ToolCallArgumentsDelta(0, started.id, "content", "< b:")]
    assert parser.feed("    pass\n</para") == [ToolCallArgumentsDelta(0, started.id, "content", "\n    pass")]
    assert parser.feed("meter>\n") == []  # the closer waits for what follows it
    [finished] = parser.feed("</function>\n</tool_call>")
    assert parser.close() == []
    assert isinstance(finished, ToolCallFinished) and finished.call.id == started.id
    assert parser.result().tool_calls == [finished.call]
    assert finished.call.arguments == {"content": "if a < b:\n    pass"}


def test_stream_ids_match_the_result_and_finish_reason_is_honoured() -> None:
    text = call_block("get_weather", city="Paris") + call_block("get_weather", city="Pa")[:-30]
    events, out = stream(text, WEATHER, chunk=3, finish_reason="length")
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [e.id for e in started] == [c.id for c in out.tool_calls]
    assert [c.complete for c in out.tool_calls] == [True, False]
    assert summary(out) == summary(parse_output(text, WEATHER, finish_reason="length"))
    deltas = [e for e in events if isinstance(e, ToolCallArgumentsDelta) and e.index == 0]
    assert "".join(e.text for e in deltas) == "Paris"


def test_long_undecided_text_streams_the_same() -> None:
    """Texts that must be held back for long (a JSON call, a value that may split at <parameter=mode>)."""
    code = "for i in range(10):\n    print(i < 5)\n" * 100
    json_call = '<tool_call>\n{"name": "write_file", "arguments": {"content": ' + json.dumps(code) + "}}\n</tool_call>"
    split = "<function=write_file>\n<parameter=content>\nstart\n<parameter=mode>\n" + code + "</function>"
    # a </function> in a value is decided by what follows it, here after a long run of whitespace
    ws = " \n" * 3000
    held = "<function=write_file>\n<parameter=content>\nx</function>" + ws + "y\n</parameter>\n</function>"
    assert parse(json_call, TOOLS).tool_calls[0].arguments == {"content": code}
    assert parse(split, TOOLS).tool_calls[0].arguments == {"content": "start", "mode": code[:-1]}
    assert parse(held, TOOLS).tool_calls[0].arguments == {"content": "x</function>" + ws + "y"}


class CountingParser(StreamParser):
    """Counts the characters each pass of the state machine starts from (what it may have to re-examine)."""

    scanned = 0

    def _run(self, final: bool) -> None:
        self.scanned += len(self._buf) - self._pos
        super()._run(final)


@pytest.mark.parametrize(
    "make",
    [
        lambda ws: f"<function=write_file>\n<parameter=content>\nx</parameter>{ws}y\n</function>",
        lambda ws: f"<function=write_file>\n<parameter=content>\nx</function>{ws}y\n</function>",
        lambda ws: f"<function=write_file>\n<parameter=content>\nx</tool_call>{ws}y\n</function>",
        lambda ws: f"<function=write_file>\n<parameter=content>\nx\n<parameter=mode>{ws}w</function>{ws}",
        lambda ws: f"<tool_call>{ws}<function=write_file>{ws}<parameter=path>{ws}</parameter>{ws}</function>{ws}",
        lambda ws: f'<tool_call>{{"name": "f", "arguments": {{}}}}{ws}{{"name": "g", "arguments": {{}}}}{ws}',
    ],
)
def test_long_whitespace_runs_stream_in_linear_time(make: Any) -> None:
    """Work, counted in characters, grows like the text (10x), not like its square (100x), fed a character at a
    time, with long whitespace runs where a decision waits for what follows them."""
    work = []
    for size in (10_000, 100_000):
        text = make(" \n\t" * (size // 3))
        parser = CountingParser(TOOLS)
        for ch in text:
            parser.feed(ch)
        parser.close()
        work.append(parser.scanned)
        assert summary(parser.result()) == summary(parse_output(text, TOOLS))
    assert work[1] < 15 * work[0], work


def test_stream_lifecycle() -> None:
    parser = StreamParser()
    parser.feed("Hello")
    assert parser.result().content == "Hello"  # result() closes when needed
    with pytest.raises(ConfigurationError):
        parser.feed("more")
    assert parser.close() == []


# ---------------------------------------------------------------------------- rule 9: render


def test_render_is_the_chat_template_format() -> None:
    calls = [
        ToolCall(name="get_weather", arguments={"city": "Paris", "days": 3}),
        ToolCall(name="typed", arguments={"o": {"k": ["中", 1.5]}, "b": True, "ns": None, "a": [1, 2]}),
    ]
    assert render_tool_calls(calls) == (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
        "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=typed>\n<parameter=o>\n"
        '{"k": ["中", 1.5]}\n</parameter>\n<parameter=b>\nTrue\n</parameter>\n<parameter=ns>\nNone\n</parameter>\n'
        "<parameter=a>\n[1, 2]\n</parameter>\n</function>\n</tool_call>"
    )
    assert render_tool_calls([c.to_openai() for c in calls]) == render_tool_calls(calls)
    back = parse_output(render_tool_calls(calls), [*WEATHER, *TYPED]).tool_calls
    assert [(c.name, c.arguments) for c in back] == [(c.name, c.arguments) for c in calls]


def test_render_matches_the_real_chat_template() -> None:
    jinja2 = pytest.importorskip("jinja2")
    from tests.tiny_model import CHAT_TEMPLATE

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    calls = [
        ToolCall(name="write_file", arguments={"path": "a.py", "content": "x = 1\n", "mode": {"append": False}}),
        ToolCall(name="get_weather", arguments={"city": "東京", "days": 2}),
    ]
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [c.to_openai() for c in calls]},
        {"role": "tool", "content": "ok"},
    ]
    for message in messages[1:2]:
        for call in message["tool_calls"]:  # the template iterates arguments as a mapping
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    prompt = env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=False)
    start = prompt.index("<tool_call>")
    assert prompt[start : prompt.rindex("</tool_call>") + len("</tool_call>")] == render_tool_calls(calls)


def test_render_round_trips_big_ints_and_awkward_strings() -> None:
    tools = [{"name": "t", "parameters": {"properties": {"i": {"type": "integer"}, "l": {"type": "array"}}}}]
    calls = [
        ToolCall(
            name="t", arguments={"i": -(10**5000), "l": [10**5000, "</parameter> x"], "s": "\n\n a </parameter>\n"}
        )
    ]
    [back] = parse_output(render_tool_calls(calls), tools).tool_calls
    assert back.arguments == calls[0].arguments and back.error is None


# ---------------------------------------------------------------------------- rule 10: normalize_text


def test_normalize_text() -> None:
    text = r"Steps:\n1. Run `ls\n -la`\n2. Solve $a\neq b$ and \(x\nu\) or \[\nabla f\]\n```bash\necho hi\n```\nDone\\n"
    assert normalize_text(text) == (
        "Steps:\n1. Run `ls\\n -la`\n2. Solve $a\\neq b$ and \\(x\\nu\\) or \\[\\nabla f\\]\n"
        "```bash\\necho hi\\n```\nDone\\\\n"
    )
    assert normalize_text("$$\\nabla$$ then\\nnext") == "$$\\nabla$$ then\nnext"
    assert normalize_text("plain text") == "plain text"
    assert normalize_text("unclosed ```code\\n") == "unclosed ```code\\n"
    assert parse_output("a\\nb").content == "a\\nb"  # opt-in: the parser leaves text alone


def test_docs_examples_run() -> None:
    import doctest
    import re
    from pathlib import Path

    import agentcpm.parsing

    text = (Path(__file__).resolve().parents[2] / "docs" / "parsing.md").read_text(encoding="utf-8")
    namespace = {name: getattr(agentcpm.parsing, name) for name in agentcpm.parsing.__all__}
    failures = 0
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if ">>>" in block:
            test = doctest.DocTestParser().get_doctest(block, namespace, "parsing.md", "docs/parsing.md", 0)
            runner = doctest.DocTestRunner()
            runner.run(test, clear_globs=False)
            namespace.update(test.globs)
            failures += runner.failures
    assert failures == 0
