"""A tiny, randomly initialised MiniCPM-V 4.6 checkpoint for tests, built in about a second without the hub.

The folder is a standard checkpoint (``config.json``, ``model.safetensors``, ``generation_config.json``,
``tokenizer.json``, ``tokenizer_config.json``, ``processor_config.json``, ``chat_template.jinja``) that
``AutoModelForImageTextToText`` and ``agentcpm.backends.local.load_processor`` (or ``transformers serve``
with the same no-torchvision processor patch) load like the real one. The architecture is the real one
(SigLIP-style vision tower with the window merger, Qwen3.5 hybrid linear/full attention), only small.
The chat template renders exactly as the published MiniCPM-V 4.6 template (tests/test_tiny_model.py).

The tokenizer is byte-level with no merges: every byte is one token, plus the model's special tokens
(``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, the image/slice/video placeholders) and the markup
tokens ``<think> </think> <tool_call> </tool_call> <tool_response> </tool_response>``. So a text always
becomes the same tokens wherever it appears, which is what makes scripting reliable.

Scripted generation
-------------------
``replies`` maps a *trigger* to a *reply*: when the prompt's last turn ends with the trigger text and is
followed by the generation prompt (thinking on or off), the model writes exactly the reply, then
``<|im_end|>`` (finish reason "stop"). Anything else gets random text from the random weights that never
stops by itself (the stop tokens are biased away), so pass ``max_tokens`` when nothing is scripted: the
answer is then exactly ``max_tokens`` tokens long (finish reason "length"). The script lives in
``generation_config.sequence_bias`` (large biases keyed on the preceding tokens), so it works through
``generate`` and through servers alike, with sampling on or off. Triggers are matched on tokens, and every
byte is a token here, so any text works; two triggers where one ends the other conflict.

- A user question: the turn text ends with the trigger, e.g. ``"What is the weather in Paris?"``.
- A tool result: tool turns render as ``...\\n</tool_response><|im_end|>``, so the trigger
  ``"</tool_response>"`` answers after any tool result (or use the result's own last words plus
  ``"\\n</tool_response>"`` to tell results apart).
- Thinking: with ``thinking=True`` the prompt ends inside ``<think>``, so a reply like
  ``"Reasoning.\\n</think>\\n\\nAnswer."`` yields reasoning and content.

>>> path = build_tiny_model(tmp / "m", replies={"Hi?": "Hello!", "</tool_response>": "Done."})  # doctest: +SKIP
>>> Client(model=str(path)).chat("Hi?").content  # doctest: +SKIP
'Hello!'

The pytest fixtures in tests/conftest.py: ``tiny_model_path`` (nothing scripted) and ``scripted_model_path``
(:data:`TOOL_SCRIPT`: the weather question gets a ``get_weather`` call (:data:`WEATHER_TOOL`), a tool result
gets :data:`FINAL_ANSWER`, and :data:`THINK_QUESTION` gets a reasoning block then :data:`THINK_ANSWER`).
For another script, call ``build_tiny_model(tmp_path_factory.mktemp("m"), replies=...)`` in your own
session-scoped fixture.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The published template is re-expressed here (same output, see tests/test_tiny_model.py).
CHAT_TEMPLATE = r"""{#- MiniCPM-V 4.6 prompt format (Qwen3.5 style, XML tool calls), for agentcpm's test model. -#}
{#- It renders exactly as the template published with the model. -#}
{%- macro flatten(content, in_system=false) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is iterable and content is not mapping -%}
        {%- set acc = namespace(pieces=[]) -%}
        {%- for part in content -%}
            {%- if 'image' in part or 'image_url' in part or part.type == 'image' -%}
                {%- if in_system -%}{{- raise_exception('System message cannot contain images.') -}}{%- endif -%}
                {%- set acc.pieces = acc.pieces + ['<|image_pad|>'] -%}
            {%- elif 'video' in part or part.type == 'video' -%}
                {%- if in_system -%}{{- raise_exception('System message cannot contain videos.') -}}{%- endif -%}
                {%- set acc.pieces = acc.pieces + ['<|video_pad|>'] -%}
            {%- elif 'text' in part -%}
                {%- set acc.pieces = acc.pieces + [part.text] -%}
            {%- else -%}
                {{- raise_exception('Unexpected item type in content.') -}}
            {%- endif -%}
        {%- endfor -%}
        {{- acc.pieces | join('\n') -}}
    {%- elif content is not none and content is defined -%}
        {{- raise_exception('Unexpected content type.') -}}
    {%- endif -%}
{%- endmacro -%}

{%- if not messages -%}{{- raise_exception('No messages provided.') -}}{%- endif -%}

{#- System turn: the tool list and calling instructions first, then the caller's own system text. -#}
{%- set system_text = flatten(messages[0].content, true) | trim if messages[0].role == 'system' else none -%}
{%- if tools and tools is iterable and tools is not mapping -%}
    {{- '<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>' -}}
    {%- for tool in tools -%}{{- '\n' + tool | tojson -}}{%- endfor -%}
    {{- '\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n' -}}
    {{- '<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n' -}}
    {{- '<parameter=example_parameter_2>\nThis is the value for the second parameter\n' -}}
    {{- 'that can span\nmultiple lines\n' -}}
    {{- '</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n' -}}
    {{- '- Function calls MUST follow the specified format: an inner <function=...></function> block ' -}}
    {{- 'must be nested within <tool_call></tool_call> XML tags\n' -}}
    {{- '- Required parameters MUST be specified\n' -}}
    {{- '- You may provide optional reasoning for your function call in natural language ' -}}
    {{- 'BEFORE the function call, but NOT after\n' -}}
    {{- '- If there is no function call available, answer the question like normal with your current ' -}}
    {{- 'knowledge and do not tell the user about function calls\n</IMPORTANT>' -}}
    {%- if system_text -%}{{- '\n\n' + system_text -}}{%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- elif system_text is not none -%}
    {{- '<|im_start|>system\n' + system_text + '<|im_end|>\n' -}}
{%- endif -%}

{#- The last user turn that is a real question (not only tool responses): assistant turns after it keep their
    reasoning block. -#}
{%- set query = namespace(index=-1) -%}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}
        {%- set text = flatten(message.content) | trim -%}
        {%- if not (text.startswith('<tool_response>') and text.endswith('</tool_response>')) -%}
            {%- set query.index = loop.index0 -%}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if query.index < 0 -%}{{- raise_exception('No user query found in messages.') -}}{%- endif -%}

{%- for message in messages -%}
    {%- set text = flatten(message.content) | trim -%}
    {%- if message.role == 'system' -%}
        {%- if not loop.first -%}{{- raise_exception('System message must be at the beginning.') -}}{%- endif -%}
    {%- elif message.role == 'user' -%}
        {{- '<|im_start|>user\n' + text + '<|im_end|>\n' -}}
    {%- elif message.role == 'assistant' -%}
        {%- set reasoning = '' -%}
        {%- if message.reasoning_content is string -%}
            {%- set reasoning = message.reasoning_content -%}
        {%- elif '</think>' in text -%}
            {%- set reasoning = text.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') -%}
            {%- set text = text.split('</think>')[-1].lstrip('\n') -%}
        {%- endif -%}
        {{- '<|im_start|>assistant\n' -}}
        {%- if loop.index0 > query.index -%}
            {{- '<think>\n' + reasoning | trim + '\n</think>\n\n' -}}
        {%- endif -%}
        {{- text -}}
        {%- if message.tool_calls and message.tool_calls is iterable and message.tool_calls is not mapping -%}
            {%- for call in message.tool_calls -%}
                {%- set call = call.function if call.function is defined else call -%}
                {%- if not loop.first -%}
                    {{- '\n' -}}
                {%- elif text | trim -%}
                    {{- '\n\n' -}}
                {%- endif -%}
                {{- '<tool_call>\n<function=' + call.name + '>\n' -}}
                {%- if call.arguments is defined -%}
                    {%- for name, value in call.arguments | items -%}
                        {#- Objects and lists as JSON, everything else as text. -#}
                        {{- '<parameter=' + name + '>\n' -}}
                        {%- if value is mapping or (value is sequence and value is not string) -%}
                            {{- value | tojson -}}
                        {%- else -%}
                            {{- value | string -}}
                        {%- endif -%}
                        {{- '\n</parameter>\n' -}}
                    {%- endfor -%}
                {%- endif -%}
                {{- '</function>\n</tool_call>' -}}
            {%- endfor -%}
        {%- endif -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'tool' -%}
        {#- Consecutive tool results share one user turn. -#}
        {%- if loop.previtem and loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
        {{- '\n<tool_response>\n' + text + '\n</tool_response>' -}}
        {%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
    {%- else -%}
        {{- raise_exception('Unexpected message role.') -}}
    {%- endif -%}
{%- endfor -%}

{%- if add_generation_prompt -%}
    {%- if enable_thinking is not defined or enable_thinking is false -%}
        {{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' -}}
    {%- else -%}
        {{- '<|im_start|>assistant\n<think>\n' -}}
    {%- endif -%}
{%- endif -%}
"""

# The tool, question and answers of the default script (the ``scripted_model_path`` fixture).
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_CALL = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
FINAL_ANSWER = "It is sunny in Paris, 21 degrees."
THINK_QUESTION = "Say hello after thinking."
THINK_REASONING = "The user wants a greeting."
THINK_ANSWER = "Hello!"
TOOL_SCRIPT: dict[str, str] = {
    WEATHER_QUESTION: WEATHER_CALL,
    "</tool_response>": FINAL_ANSWER,
    THINK_QUESTION: f"{THINK_REASONING}\n</think>\n\n{THINK_ANSWER}",
}

SPECIAL_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}
MARKUP_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
GENERATION_PROMPTS = ("<|im_start|>assistant\n<think>\n\n</think>\n\n", "<|im_start|>assistant\n<think>\n")

# The published processor settings (reference processor_config.json).
_VISION_SETTINGS: dict[str, Any] = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "downsample_mode": "16x",
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "max_slice_nums": 9,
    "patch_size": 14,
    "resample": 3,
    "rescale_factor": 1 / 255,
    "scale_resolution": 448,
    "slice_mode": True,
    "use_image_id": True,
}
PROCESSOR_CONFIG: dict[str, Any] = {
    "image_processor": {**_VISION_SETTINGS, "image_processor_type": "MiniCPMV4_6ImageProcessor"},
    "processor_class": "MiniCPMV4_6Processor",
    "video_processor": {
        **_VISION_SETTINGS,
        "do_sample_frames": True,
        "max_num_frames": 128,
        "return_metadata": False,
        "stack_frames": 1,
        "video_processor_type": "MiniCPMV4_6VideoProcessor",
    },
}

#: Bias added to each scripted token's logit: far above anything random weights produce.
SCRIPT_BIAS = 100.0
#: How many preceding tokens a scripted step looks at (the trigger itself is always matched in full).
SCRIPT_WINDOW = 64


def build_tokenizer() -> Any:
    """The byte-level tokenizer with MiniCPM-V 4.6's special tokens (a ``Qwen3_5Tokenizer``)."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    vocab = {char: index for index, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Qwen3_5Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        extra_special_tokens=SPECIAL_TOKENS,
        model_max_length=262144,
    )
    tokenizer.add_tokens([AddedToken("<|im_start|>", special=True, normalized=False)], special_tokens=True)
    tokenizer.add_tokens(MARKUP_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def script_bias(tokenizer: Any, replies: Mapping[str, str]) -> list[list[Any]]:
    """``generation_config.sequence_bias`` entries (``[[token ids...], bias]``) that make the model write
    each reply after its trigger and never stop anywhere else (see the module docstring)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    targets: dict[tuple[int, ...], int] = {}
    for trigger, reply in replies.items():
        answer = [*tokenizer.encode(reply, add_special_tokens=False), end]
        for prompt in GENERATION_PROMPTS:
            context = tokenizer.encode(trigger + "<|im_end|>\n" + prompt, add_special_tokens=False)
            for token in answer:
                key = tuple(context[-SCRIPT_WINDOW:])
                if targets.setdefault(key, token) != token:
                    raise ValueError(
                        f"the script is ambiguous: {tokenizer.decode(list(key))!r} is followed by two different "
                        "texts; make the triggers or replies more distinct"
                    )
                context.append(token)
    # Stop tokens always get -SCRIPT_BIAS, so a scripted stop gets twice the bias to come out ahead.
    scripted = [[[*key, token], SCRIPT_BIAS * (2 if token in stops else 1)] for key, token in targets.items()]
    return [[[token], -SCRIPT_BIAS] for token in stops] + scripted


def build_tiny_model(path: str | Path, *, replies: Mapping[str, str] | None = None, seed: int = 0) -> Path:
    """Write a tiny random MiniCPM-V 4.6 checkpoint to ``path`` (created if needed) and return it.

    ``replies``: ``{trigger: reply}``, scripted generation (see the module docstring).

    >>> build_tiny_model("/tmp/tiny", replies={"Hi?": "Hello!"})  # doctest: +SKIP
    PosixPath('/tmp/tiny')
    """
    import torch
    from transformers import GenerationConfig, MiniCPMV4_6Config, MiniCPMV4_6ForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (path / "processor_config.json").write_text(json.dumps(PROCESSOR_CONFIG, indent=2) + "\n", encoding="utf-8")

    config = MiniCPMV4_6Config(
        text_config={
            "model_type": "qwen3_5_text",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "layer_types": ["linear_attention", "full_attention"],
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 16,
            "linear_conv_kernel_dim": 4,
            "max_position_embeddings": 65536,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000, "partial_rotary_factor": 0.25},
            "tie_word_embeddings": True,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 980,
            "patch_size": 14,
        },
        insert_layer_id=1,  # must be below the number of vision layers, or the merger never runs
        image_size=1120,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = MiniCPMV4_6ForConditionalGeneration(config).eval()
    # Like the published checkpoint: sampling at temperature 0.7, stopping on <|endoftext|> or <|im_end|>.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"]),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        repetition_penalty=1.0,
        sequence_bias=script_bias(tokenizer, replies or {}),
    )
    model.save_pretrained(path)
    return path
