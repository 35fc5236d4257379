"""Messages, parts, tool calls and their lossless conversion to and from the OpenAI chat format."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from agentcpm.client import attach_images
from agentcpm.errors import ConfigurationError
from agentcpm.types import (
    Completion,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    VideoPart,
    to_messages,
    tool_schema,
    tool_schemas,
)


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


OPENAI_HISTORY = [
    {"role": "system", "content": "You are helpful."},
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "What is this?"},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"animal": "猫", "limit": 3}'},
            }
        ],
        "reasoning_content": "I should look it up.",
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": "A cat 🐱."},
    {"role": "assistant", "content": "It is a cat."},
]


def test_openai_history_round_trips_exactly():
    messages = to_messages(OPENAI_HISTORY)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[1].images[0].source == "https://example.com/cat.png"
    assert messages[1].text == "What is this?"
    call = messages[2].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("call_1", "lookup", {"animal": "猫", "limit": 3})
    assert messages[2].reasoning == "I should look it up."
    assert messages[3].tool_call_id == "call_1"
    back = [m.to_openai() for m in messages]
    for original, converted in zip(OPENAI_HISTORY, back, strict=True):
        if "tool_calls" in original:
            assert json.loads(converted["tool_calls"][0]["function"]["arguments"]) == {"animal": "猫", "limit": 3}
            converted["tool_calls"][0]["function"]["arguments"] = original["tool_calls"][0]["function"]["arguments"]
        assert converted == original
    assert to_messages(back) == messages


def test_message_accepts_positional_role_and_string_or_parts():
    m = Message("user", "hello")
    assert m.content == [TextPart("hello")]
    assert Message("user", ["a", {"type": "text", "text": "b"}]).text == "a\nb"
    assert Message("assistant", "").content == []
    with pytest.raises(ValueError):
        Message("robot", "hi")  # type: ignore[arg-type]


def test_to_messages_accepts_every_input_form():
    assert to_messages("hi") == [Message("user", "hi")]
    assert to_messages(Message("system", "s")) == [Message("system", "s")]
    assert to_messages({"role": "user", "content": "x"}) == [Message("user", "x")]
    with pytest.raises(ConfigurationError, match="role"):
        to_messages([{"content": "no role"}])


def test_hugging_face_style_parts_are_understood():
    m = Message("user", [{"type": "image", "image": "shot.png"}, {"type": "video", "video": "clip.mp4"}, "Describe"])
    assert m.images[0].source == "shot.png"
    assert m.videos == [VideoPart("clip.mp4")]
    assert m.text == "Describe"


def test_unknown_part_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported content part"):
        Message("user", [{"type": "input_audio", "input_audio": {}}])


def test_tool_call_with_broken_json_arguments_is_kept_with_an_error():
    call = ToolCall.from_openai({"id": "c", "function": {"name": "f", "arguments": "{not json"}})
    assert call.name == "f" and call.arguments == {}
    assert call.error and "not valid JSON" in call.error
    listed = ToolCall.from_openai({"function": {"name": "f", "arguments": "[1, 2]"}})
    assert listed.error == "arguments are not a JSON object"
    assert listed.id.startswith("call_")


def test_tool_schemas_accept_openai_bare_and_tool_objects():
    openai_form = {"type": "function", "function": {"name": "a", "description": "d", "parameters": {"type": "object"}}}
    assert tool_schema(openai_form) == openai_form
    assert tool_schema({"name": "b"}) == {
        "type": "function",
        "function": {"name": "b", "parameters": {"type": "object", "properties": {}}},
    }

    class Custom:
        def to_openai(self) -> dict:
            return openai_form

    assert tool_schemas([Custom(), {"name": "b"}])[0] is openai_form
    assert tool_schemas(None) == []
    with pytest.raises(ConfigurationError):
        tool_schema({"description": "no name"})
    with pytest.raises(ConfigurationError):
        tool_schema("get_weather")


def test_tool_result_becomes_a_tool_message():
    result = ToolResult(call_id="c1", name="shot", content=["done", ImagePart(png_bytes())])
    message = result.to_message()
    assert message.role == "tool" and message.tool_call_id == "c1" and message.name == "shot"
    assert result.text == "done" and len(result.images) == 1


def test_completion_to_message_and_usage_sum():
    call = ToolCall(name="f", arguments={"x": 1})
    completion = Completion(content="ok", reasoning="because", tool_calls=[call], usage=Usage(prompt_tokens=3))
    message = completion.to_message()
    assert (message.role, message.text, message.reasoning, message.tool_calls) == ("assistant", "ok", "because", [call])
    total = Usage(prompt_tokens=3, completion_tokens=4, duration=1.0) + Usage(prompt_tokens=1, completion_tokens=1)
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens, total.duration) == (4, 5, 9, 1.0)


def test_image_bytes_become_a_data_url_with_the_same_pixels():
    part = ImagePart(png_bytes((0, 128, 255)))
    message = Message.from_openai(Message("user", [part, "what colour?"]).to_openai())
    url = message.images[0].source
    assert url.startswith("data:image/")
    assert message.images[0].open().getpixel((0, 0)) == (0, 128, 255)


def test_attach_images_goes_to_the_last_user_turn():
    history = to_messages([{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"}, "second"])
    out = attach_images(history, ["x.png"])
    assert out[0].images == [] and out[2].images[0].source == "x.png"
    assert out[2].text == "second"
    assert history[2].images == []  # the caller's messages are not modified
    assert attach_images([Message("system", "s")], ["y.png"])[-1].role == "user"
