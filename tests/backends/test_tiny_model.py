"""The tiny test checkpoint: its chat template renders as MiniCPM-V 4.6's, and its scripted generation works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_model import (
    CHAT_TEMPLATE,
    FINAL_ANSWER,
    THINK_ANSWER,
    THINK_QUESTION,
    THINK_REASONING,
    TOOL_SCRIPT,
    WEATHER_CALL,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    build_tokenizer,
    script_bias,
)

# The published template (openbmb/MiniCPM-V-4.6's chat_template.jinja) is not copied into this repository:
# the comparison tests read it from $AGENTCPM_REFERENCE_DIR, by default the shared/ folder that sits beside
# the checkout in CI. Without it those tests (and only those) skip, saying so; in CI (CI=true) they fail.
REFERENCE_DIR = Path(
    os.environ.get("AGENTCPM_REFERENCE_DIR") or Path(__file__).resolve().parents[3] / "shared/reference/minicpm-v-4.6"
)
REFERENCE_TEMPLATE = REFERENCE_DIR / "chat_template.jinja"

TOOLS_HEADER = (
    "<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, '
    '"required": ["city"]}}}\n</tools>\n\n'
    "If you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
    "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
    "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n"
    "</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested "
    "within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language BEFORE the function call, "
    "but NOT after\n"
    "- If there is no function call available, answer the question like normal with your current knowledge and "
    "do not tell the user about function calls\n</IMPORTANT>"
)
NO_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
IMAGE = {"type": "image", "image": "photo.png"}


def render(messages: list[dict], tools: list[dict] | None = None, template: str = CHAT_TEMPLATE, **kwargs) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([messages], tools=tools, chat_template=template, **kwargs)
    return rendered[0]


# ---------------------------------------------------------------------------- rendering, against expected text


def test_plain_question_with_system_and_thinking_off_by_default():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi? "}]
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n" + NO_THINK
    assert render(messages, add_generation_prompt=True) == expected
    assert render(messages, add_generation_prompt=True, enable_thinking=False) == expected
    assert render(messages, add_generation_prompt=True, enable_thinking=True).endswith(
        "Hi?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert render(messages).endswith("Hi?<|im_end|>\n")


def test_images_become_placeholders_joined_by_newlines():
    messages = [{"role": "user", "content": [IMAGE, {"type": "text", "text": "Compare."}, IMAGE]}]
    assert render(messages) == "<|im_start|>user\n<|image_pad|>\nCompare.\n<|image_pad|><|im_end|>\n"
    video = [{"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"type": "text", "text": "What?"}]}]
    assert render(video) == "<|im_start|>user\n<|video_pad|>\nWhat?<|im_end|>\n"


def test_tools_system_text_and_a_full_tool_round():
    messages = [
        {"role": "system", "content": "You are a helper."},
        {"role": "user", "content": WEATHER_QUESTION},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "plot", "arguments": {"points": [1, 2], "style": {"c": "<b>"}, "n": 3}}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "content": [{"type": "text", "text": "plotted"}]},
    ]
    expected = (
        TOOLS_HEADER + "\n\nYou are a helper.<|im_end|>\n"
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nLet me check.\n\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>\n"
        '<tool_call>\n<function=plot>\n<parameter=points>\n[1, 2]\n</parameter>\n<parameter=style>\n{"c": "<b>"}\n'
        "</parameter>\n<parameter=n>\n3\n</parameter>\n</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nplotted\n</tool_response>"
        "<|im_end|>\n" + NO_THINK
    )
    assert render(messages, [WEATHER_TOOL], add_generation_prompt=True) == expected


def test_tool_call_without_text_and_reasoning_in_history():
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "<think>\nold thoughts\n</think>\n\nold answer"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "", "reasoning_content": " plan ", "tool_calls": [{"name": "f"}]},
        {"role": "tool", "content": "<b>x</b>"},
        {"role": "assistant", "content": "<think>done</think>final"},
    ]
    assert render(messages) == (
        "<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nold answer<|im_end|>\n"
        "<|im_start|>user\nsecond<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nplan\n</think>\n\n<tool_call>\n<function=f>\n</function>\n</tool_call>"
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n<b>x</b>\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\ndone\n</think>\n\nfinal<|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "No messages provided."),
        ([{"role": "system", "content": [IMAGE]}, {"role": "user", "content": "x"}], "cannot contain images"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "s"}], "must be at the beginning"),
        ([{"role": "assistant", "content": "a"}], "No user query found"),
        ([{"role": "user", "content": "<tool_response>\nr\n</tool_response>"}], "No user query found"),
        ([{"role": "robot", "content": "a"}, {"role": "user", "content": "x"}], "Unexpected message role."),
        ([{"role": "user", "content": [{"type": "audio"}]}], "Unexpected item type"),
    ],
)
def test_invalid_conversations_raise_as_the_real_template_does(messages, error):
    from jinja2 import TemplateError

    with pytest.raises(TemplateError, match=error):
        render(messages)


# ---------------------------------------------------------------------------- rendering, against the published file

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "  "}, {"role": "user", "content": [IMAGE, {"type": "text", "text": " q "}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}, {"type": "text", "text": "x"}]}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\na"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}],
    [
        {"role": "system", "content": [{"type": "text", "text": "sys"}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "f", "arguments": {"a": None, "b": True}}]},
        {"role": "tool", "content": "r1"},
        {"role": "user", "content": [{"type": "text", "text": "Image returned by the f tool:"}, IMAGE]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "<tool_response>\nz\n</tool_response>"},
    ],
    [{"role": "tool", "content": "orphan"}, {"role": "user", "content": "q"}],
]


@pytest.fixture(scope="module")
def published_template() -> str:
    """The published chat template's text; skips (fails under CI=true) where it is not on this machine."""
    if not REFERENCE_TEMPLATE.is_file():
        reason = (
            f"the published MiniCPM-V 4.6 chat template is not at {REFERENCE_TEMPLATE}: the tests comparing the "
            "tiny model's template with it need AGENTCPM_REFERENCE_DIR set to a folder holding chat_template.jinja "
            "(or shared/ beside the checkout)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return REFERENCE_TEMPLATE.read_text(encoding="utf-8")


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]])
@pytest.mark.parametrize("thinking", [{}, {"enable_thinking": True}, {"enable_thinking": False}])
def test_same_text_as_the_published_template(messages, tools, thinking, published_template):
    reference = published_template
    for generation_prompt in (True, False):
        options = {"add_generation_prompt": generation_prompt, **thinking}
        assert render(messages, tools, **options) == render(messages, tools, template=reference, **options)


# ---------------------------------------------------------------------------- the checkpoint


def test_script_bias_refuses_an_ambiguous_script():
    # After 64 A's the model could not know whether another A or the B comes next.
    with pytest.raises(ValueError, match="ambiguous"):
        script_bias(build_tokenizer(), {"Hi?": "A" * 70 + "B"})


def test_tokenizer_is_context_free_and_keeps_markup_tokens():
    tokenizer = build_tokenizer()
    alone = tokenizer.encode("weather?", add_special_tokens=False)
    assert tokenizer.encode("the weather?", add_special_tokens=False)[-len(alone) :] == alone
    ids = tokenizer.encode("<think>x</think><tool_call>", add_special_tokens=False)
    assert len(ids) == 4
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>x</think><tool_call>"
    assert tokenizer.image_token == "<|image_pad|>"


@pytest.mark.slow
def test_scripted_checkpoint_generates_the_script(scripted_model_path, tiny_processor):
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from agentcpm.backends.local import load_processor

    processor = load_processor(scripted_model_path)
    model = AutoModelForImageTextToText.from_pretrained(scripted_model_path)
    tokenizer = processor.tokenizer

    def generate(messages, **kwargs):
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", **kwargs
        )
        output = model.generate(**inputs, max_new_tokens=120)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True), inputs

    image = Image.new("RGB", (64, 48), "red")
    content = [{"type": "image", "image": image}, {"type": "text", "text": "Hm. " + WEATHER_QUESTION}]
    question = [{"role": "user", "content": content}]
    text, inputs = generate(question, tools=[WEATHER_TOOL])
    assert text == WEATHER_CALL
    assert (inputs["input_ids"] == tokenizer.image_token_id).sum() > 0
    history = [
        {"role": "user", "content": WEATHER_QUESTION},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "content": "sunny, 21 C"},
    ]
    assert generate(history, tools=[WEATHER_TOOL])[0] == FINAL_ANSWER
    thought = generate([{"role": "user", "content": THINK_QUESTION}], enable_thinking=True)[0]
    assert thought == TOOL_SCRIPT[THINK_QUESTION] == f"{THINK_REASONING}\n</think>\n\n{THINK_ANSWER}"
    assert tiny_processor.tokenizer.image_token_id == tokenizer.image_token_id
