"""The MiniCPM-V 4.6 output parser (agentcpm.parsing): every rule of issue 2 on realistic model outputs."""

from __future__ import annotations

from agentcpm.parsing import StreamParser, parse_output

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


def stream(text: str, tools=None, *, thinking: bool = False, chunk: int = 1, finish_reason=None):
    parser = StreamParser(tools, thinking=thinking)
    events = []
    for start in range(0, len(text), chunk):
        events += parser.feed(text[start : start + chunk])
    events += parser.close(finish_reason)
    return events, parser.result()


def test_well_formed_call_with_text_before() -> None:
    text = (
        "I'll check the weather in Paris.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
        "</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    )
    out = parse_output(text, WEATHER)
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
    _, streamed = stream(text, WEATHER)
    assert streamed.content == out.content
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(call.name, call.arguments)]
