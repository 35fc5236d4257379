"""The in-process prefix cache (agentcpm/backends/local/cache.py) on a tiny MiniCPM-V 4.6, on CPU.

Every conversation runs twice, on a client without the cache and one with it: greedy answers must be the same
token for token (the tokenizer is byte-level, so equal text is equal tokens). The model is the scripted tiny
checkpoint with larger random weights, so that unscripted answers depend on every token of the prompt (with
the default tiny weights, every prompt gives the same token). Reuse is asserted on counts: prompt tokens
taken from the cache, tokens computed, images encoded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_model import (
    FINAL_ANSWER,
    THINK_ANSWER,
    THINK_QUESTION,
    TOOL_SCRIPT,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    build_tiny_model,
)

from agentcpm import Client, ImagePart, Message
from agentcpm.backends.local.cache import CacheConfig, cache_config
from agentcpm.errors import BackendError, ConfigurationError

pytest.importorskip("torch")

#: ``<|im_start|>assistant\n<think>\n\n</think>\n\n`` in the byte-level tokenizer: the generation prompt a
#: follow-up does not share (the previous answer is rendered without its empty think block).
GENERATION_PROMPT = 1 + len("assistant\n") + 1 + 2 + 1 + 2
THINKING_PROMPT = 1 + len("assistant\n") + 1 + 1  # <|im_start|>assistant\n<think>\n


@pytest.fixture(scope="module")
def lively(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoModelForImageTextToText

    torch.set_num_threads(1)
    path = build_tiny_model(tmp_path_factory.mktemp("lively"), replies=TOOL_SCRIPT)
    model = AutoModelForImageTextToText.from_pretrained(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() >= 2:
                weight.normal_(0, 3 / weight.shape[-1] ** 0.5, generator=generator)
    model.save_pretrained(path)
    return path


def picture(color: Any = "red", size: tuple[int, int] = (64, 48)) -> ImagePart:
    from PIL import Image

    return ImagePart(Image.new("RGB", size, color))


def answer(done: Any) -> tuple:
    return done.content, done.reasoning, [(c.name, c.arguments) for c in done.tool_calls], done.finish_reason


Step = Message | list[Message] | Callable[[list[Message]], list[Message]]


def talk(client: Client, steps: list[Step], **options: Any) -> list[tuple[tuple, Any]]:
    """Each step adds messages to the history and asks for the next answer, which joins the history."""
    history: list[Message] = []
    out = []
    for step in steps:
        added = step(history) if callable(step) else step
        history.extend(added if isinstance(added, list) else [added])
        done = client.chat(history, **{"max_tokens": 12, "temperature": 0, **options})
        history.append(done.to_message())
        out.append((answer(done), done.usage))
    return out


def both(path: Path, steps: list[Step], **options: Any) -> tuple[list[Any], Client]:
    """The conversation without and with the cache: the answers must be equal; the cached run's usages."""
    plain = talk(Client(model=str(path), device="cpu", cache=False), steps, **options)
    client = Client(model=str(path), device="cpu")
    cached = talk(client, steps, **options)
    assert [a for a, _ in cached] == [a for a, _ in plain]
    assert all(u.cached_tokens is None for _, u in plain)  # off: nothing to report
    return [u for _, u in cached], client


def tool_result(text: str, *images: ImagePart) -> Callable[[list[Message]], list[Message]]:
    def step(history: list[Message]) -> list[Message]:
        call = history[-1].tool_calls[0]
        return [Message("tool", [text, *images], tool_call_id=call.id, name=call.name)]

    return step


# ---------------------------------------------------------------------------- the matrix


def test_text_turns_compute_only_the_new_turn(lively):
    usages, client = both(lively, [Message("user", "Hello there."), Message("user", "And?"), Message("user", "So?")])
    assert usages[0].cached_tokens == 0
    for before, after in itertools.pairwise(usages):
        # a follow-up continues from the end of the previous user turn (its answer renders differently now)
        assert after.cached_tokens == before.prompt_tokens - GENERATION_PROMPT
    last = client.backend.cache.last
    assert last.tokens_computed == usages[-1].prompt_tokens - usages[-1].cached_tokens < usages[-1].prompt_tokens / 2


@pytest.mark.parametrize("mode", ["16x", "4x"])
def test_images_in_first_and_later_turns_are_encoded_once(lively, mode):
    steps: list[Step] = [
        Message("user", [picture("red"), picture("blue"), "Compare these."]),
        Message("user", "Which is brighter?"),
        Message("user", [picture("green"), "And this one?"]),
        Message("user", [picture("red"), "The first again?"]),
    ]
    usages, client = both(lively, steps, downsample_mode=mode)
    assert [u.images_encoded for u in usages] == [2, 0, 1, 0]
    assert all(
        after.cached_tokens == before.prompt_tokens - GENERATION_PROMPT for before, after in itertools.pairwise(usages)
    )
    assert client.backend.cache.total.images_encoded == 3


def test_the_same_image_in_another_mode_is_encoded_again(lively):
    client = Client(model=str(lively), device="cpu")
    question = [Message("user", [picture("purple"), "What?"])]
    counts = [client.chat(question, max_tokens=4, downsample_mode=m).usage.images_encoded for m in ("16x", "4x", "4x")]
    assert counts == [1, 1, 0]


def test_tool_calls_and_results_continue_from_the_end_of_the_prompt(lively):
    steps: list[Step] = [Message("user", WEATHER_QUESTION), tool_result("sunny, 21 C")]
    usages, _ = both(lively, steps, tools=[WEATHER_TOOL])
    # within a run the prompt only grows: the whole previous prompt is reused
    assert usages[1].cached_tokens == usages[0].prompt_tokens


def test_tool_images_and_thinking(lively):
    steps: list[Step] = [Message("user", WEATHER_QUESTION), tool_result("the map:", picture("navy"))]
    usages, _ = both(lively, steps, tools=[WEATHER_TOOL])
    assert usages[1].images_encoded == 1
    # the tool image is a user turn: the previous answer loses its think block, so reuse ends before it
    assert usages[1].cached_tokens == usages[0].prompt_tokens - GENERATION_PROMPT
    usages, _ = both(lively, [Message("user", THINK_QUESTION), Message("user", "Again?")], thinking=True)
    assert usages[1].cached_tokens == usages[0].prompt_tokens - THINKING_PROMPT


def test_scripted_answers_are_unchanged_by_the_cache(lively):
    client = Client(model=str(lively), device="cpu")
    for _ in range(2):
        done = client.chat(THINK_QUESTION, thinking=True)
        assert done.content == THINK_ANSWER
    history = [Message("user", WEATHER_QUESTION)]
    call = client.chat(history, tools=[WEATHER_TOOL]).to_message()
    result = Message("tool", "sunny", tool_call_id=call.tool_calls[0].id)
    assert client.chat([*history, call, result], tools=[WEATHER_TOOL]).content == FINAL_ANSWER


def test_an_edited_earlier_message_never_reuses_a_stale_state(lively):
    first: list[Step] = [Message("user", "Tell me a story."), Message("user", "Go on.")]
    _, client = both(lively, first)
    edited: list[Step] = [Message("user", "Tell me a poem."), Message("user", "Go on.")]
    plain = talk(Client(model=str(lively), device="cpu", cache=False), edited)
    again = talk(client, edited)
    assert [a for a, _ in again] == [a for a, _ in plain]
    assert again[0][1].cached_tokens < len("<|im_start|>user\nTell me a ")  # nothing past the edit


def test_another_image_with_the_same_tokens_is_not_the_same_prefix(lively):
    """Image placeholders are the same tokens for every image: the image itself must match too."""
    client = Client(model=str(lively), device="cpu")
    plain = Client(model=str(lively), device="cpu", cache=False)
    for color in ("red", "blue", "red"):
        messages = [Message("user", [picture(color), "What colour?"])]
        cached = client.chat(messages, max_tokens=12, temperature=0)
        assert answer(cached) == answer(plain.chat(messages, max_tokens=12, temperature=0))
    assert cached.usage.cached_tokens > 0 and cached.usage.images_encoded == 0  # red again: the whole prefix
    states = client.backend.cache.states
    blue = client.chat([Message("user", [picture("blue"), "What colour?"])], max_tokens=1)
    assert blue.usage.cached_tokens > 0 and client.backend.cache.states == states


def test_interleaved_conversations_never_mix(lively):
    a: list[Message] = [Message("user", [picture("red"), "Conversation A."])]
    b: list[Message] = [Message("user", [picture("red"), "Conversation B."])]
    client = Client(model=str(lively), device="cpu")
    plain = Client(model=str(lively), device="cpu", cache=False)
    for turn in range(3):
        for history in (a, b):
            options = {"max_tokens": 10, "temperature": 0}
            cached, reference = client.chat(history, **options), plain.chat(history, **options)
            assert answer(cached) == answer(reference)
            history += [cached.to_message(), Message("user", f"Turn {turn}.")]
    assert client.backend.cache.total.images_encoded == 1


def test_a_cancelled_stream_then_a_new_request(lively):
    client = Client(model=str(lively), device="cpu")
    plain = Client(model=str(lively), device="cpu", cache=False)
    history = [Message("user", [picture("orange"), "Describe it at length."])]
    for _event in client.stream(history, max_tokens=500, temperature=0):
        break
    assert not client.backend.load().lock.locked()
    options = {"max_tokens": 12, "temperature": 0}
    assert answer(client.chat(history, **options)) == answer(plain.chat(history, **options))
    follow = [*history, Message("assistant", "It is orange."), Message("user", "Sure?")]
    assert answer(client.chat(follow, **options)) == answer(plain.chat(follow, **options))


def test_a_failed_generation_stores_nothing(lively, monkeypatch):
    client = Client(model=str(lively), device="cpu")
    model = client.backend.load().model

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(BackendError, match="out of memory"):
        client.chat([Message("user", [picture("teal"), "Hi."])], max_tokens=4)
    assert client.backend.cache.states == 0  # the prefill ran, its state was not kept
    monkeypatch.undo()
    plain = Client(model=str(lively), device="cpu", cache=False)
    messages = [Message("user", [picture("teal"), "Hi."])]
    options = {"max_tokens": 8, "temperature": 0}
    assert answer(client.chat(messages, **options)) == answer(plain.chat(messages, **options))


def test_an_image_is_encoded_once_even_when_the_prefix_breaks(lively):
    client = Client(model=str(lively), device="cpu")
    client.chat([Message("user", [picture("olive"), "What?"])], max_tokens=2)
    other = client.chat([Message("system", "Be brief."), Message("user", [picture("olive"), "What?"])], max_tokens=2)
    assert (other.usage.cached_tokens, other.usage.images_encoded) == (0, 0)


# ---------------------------------------------------------------------------- bounded, and the knob


def test_the_budget_bounds_what_is_kept(lively):
    small = CacheConfig(max_bytes=200_000)
    client = Client(model=str(lively), device="cpu", cache=small)
    plain = Client(model=str(lively), device="cpu", cache=False)
    history: list[Message] = []
    for n in range(4):
        history.append(Message("user", [picture((n * 60, 0, 0)), f"Step {n}."]))
        cached = client.chat(history, max_tokens=6, temperature=0)
        assert answer(cached) == answer(plain.chat(history, max_tokens=6, temperature=0))
        assert client.backend.cache.bytes_used <= small.max_bytes
        history.append(cached.to_message())
    client.backend.cache.clear()
    assert (client.backend.cache.bytes_used, client.backend.cache.states) == (0, 0)


def test_cache_off_and_settings():
    off = Client(model="/nonexistent/checkpoint/dir", cache=False)
    assert off.backend.cache is None  # type: ignore[attr-defined]
    assert cache_config(True) == CacheConfig() and cache_config(None) == CacheConfig()
    assert cache_config(False).enabled is False and cache_config(0).enabled is False
    assert cache_config("512MB").max_bytes == 512 * 10**6
    assert cache_config("2GiB").max_bytes == 2 * 2**30
    assert cache_config(1234).max_bytes == 1234
    for bad in ("lots", "-1MB", -5, 1.5):
        with pytest.raises(ConfigurationError, match="cache="):
            cache_config(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the agent's image window


def test_tool_images_are_dropped_in_chunks_so_most_requests_only_grow():
    from agentcpm.agent.policy import prune_chunk, request_messages, tool_images_kept

    assert [prune_chunk(k) for k in (1, 2, 3, 4, 6)] == [1, 1, 2, 2, 3]
    assert [tool_images_kept(n, 3, 2) for n in range(1, 9)] == [1, 2, 3, 2, 3, 2, 3, 2]
    assert [tool_images_kept(n, 2, 1) for n in range(1, 6)] == [1, 2, 2, 2, 2]  # chunk 1: the old sliding window
    history: list[Message] = [Message("user", "Watch the screen.")]
    sent: list[list[str]] = []
    for step in range(1, 7):
        history += [Message.assistant("", []), Message("tool", [f"shot {step}", picture((step, 0, 0))])]
        request = request_messages(history, keep_images=3, max_images=None)
        sent.append([p.describe() if isinstance(p, ImagePart) else p.text for m in request for p in m.content])
    kept = [sum(1 for m in request_messages(history[: 1 + 2 * n], 3, None) for _ in m.images) for n in range(1, 7)]
    assert kept == [1, 2, 3, 2, 3, 2]
    grows = [sent[i][: len(sent[i - 1]) - 1] == sent[i - 1][:-1] for i in range(1, 6)]
    assert grows == [True, True, False, True, False]  # the window moves at steps 4 and 6 only


def test_an_agent_dropping_old_screenshots_continues_from_the_turn_of_the_first_one_dropped(lively):
    """A screenshot agent as agentcpm.Agent sends it (keep_images=3, chunked): between drops a step computes its
    new turns only; a step that drops screenshots continues from the turn of the first one dropped, kept when
    it was the first image of a prompt. Each screenshot is encoded once."""
    from agentcpm import ToolCall
    from agentcpm.agent.policy import request_messages
    from agentcpm.backends.local.backend import _to_hf_message

    def run(client: Client) -> tuple[list[tuple], list[Any], list[int]]:
        history = [Message("system", "You operate a computer."), Message("user", "Turn on dark mode.")]
        answers, usages, anchors = [], [], []
        for step in range(1, 7):
            call = ToolCall(id=f"call_{step}", name="get_weather", arguments={"city": f"step {step}"})
            shot = picture((40 * step, 0, 0))
            history += [Message.assistant("", [call]), Message("tool", ["Done.", shot], tool_call_id=call.id)]
            request = request_messages(history, keep_images=3, max_images=None)
            done = client.chat(request, tools=[WEATHER_TOOL], max_tokens=8, temperature=0)
            answers.append(answer(done))
            usages.append(done.usage)
            # where each screenshot's turn starts in this request (tokens: the tokenizer is byte-level)
            loaded = client.backend.load()
            text = loaded.processor.apply_chat_template(
                [_to_hf_message(m) for m in request], tools=[WEATHER_TOOL], add_generation_prompt=True, tokenize=False
            )
            marks = [i for i in range(len(text)) if text.startswith("<|im_start|>user\nImage returned", i)]
            anchors.append([len(loaded.tokenizer(text[:i], add_special_tokens=False).input_ids) for i in marks])
        return answers, usages, anchors

    plain, _, _ = run(Client(model=str(lively), device="cpu", cache=False))
    client = Client(model=str(lively), device="cpu")
    answers, usages, anchors = run(client)
    assert answers == plain
    assert [len(a) for a in anchors] == [1, 2, 3, 4, 5, 6]  # a turn per screenshot, sent or dropped
    assert [u.images_encoded for u in usages] == [1] * 6  # each screenshot once
    for step in (2, 3, 5):  # the window did not move: the previous prompt less its generation prompt
        assert usages[step - 1].cached_tokens == usages[step - 2].prompt_tokens - GENERATION_PROMPT
    # steps 4 and 6 drop screenshots 1-2 and 3-4: they continue from the start of the turn of screenshot 1
    # (kept at step 1, where it was the first image) and of screenshot 3 (kept at step 4)
    assert usages[3].cached_tokens == anchors[3][0] == anchors[0][0]
    assert usages[5].cached_tokens == anchors[5][2] == anchors[3][2]
    assert usages[5].prompt_tokens - usages[5].cached_tokens < usages[5].prompt_tokens / 2


def test_a_new_screenshot_with_the_same_system_prompt_reuses_the_text_before_it(lively):
    """Scripted screenshot reading: the same system prompt and tools with a new screenshot each time."""
    client = Client(model=str(lively), device="cpu")
    plain = Client(model=str(lively), device="cpu", cache=False)
    usages = []
    for color in ("red", "blue", "green"):
        messages = [Message("system", "You read screens."), Message("user", [picture(color), "What is on it?"])]
        options = {"tools": [WEATHER_TOOL], "max_tokens": 6, "temperature": 0}
        cached = client.chat(messages, **options)
        assert answer(cached) == answer(plain.chat(messages, **options))
        usages.append(cached.usage)
    assert usages[0].cached_tokens == 0
    # everything up to the user turn that holds the screenshot: the system prompt and the tools
    assert usages[1].cached_tokens == usages[2].cached_tokens > len("You read screens.")
    assert [u.images_encoded for u in usages] == [1, 1, 1]


# ---------------------------------------------------------------------------- visible in the REPL


def test_repl_usage_shows_cached_tokens_and_images_encoded(lively, tmp_path):
    from io import StringIO

    from rich.console import Console

    from agentcpm.cli.app import parse_args
    from agentcpm.cli.repl import Repl

    out = StringIO()
    typed = iter(["Hello there.", "And?", "/usage"])

    def read(prompt: str) -> str:
        line = next(typed, None)
        if line is None:
            raise EOFError
        return line

    client = Client(model=str(lively), device="cpu", max_tokens=6)
    session = Repl(parse_args(["chat", "--no-log"]), console=Console(file=out, width=200), client=client, read=read)
    assert session.run() == 0
    shown = out.getvalue()
    cached = session.turn_usage.cached_tokens
    assert cached and f"last turn: {session.turn_usage.prompt_tokens} prompt" in shown
    assert f"{cached} prompt tokens from the cache, 0 images encoded" in shown
