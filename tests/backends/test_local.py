"""The in-process backend on the tiny MiniCPM-V 4.6 checkpoint (tests/tiny_model.py), on CPU."""

from __future__ import annotations

import _thread
import asyncio
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tiny_model import (
    FINAL_ANSWER,
    THINK_ANSWER,
    THINK_QUESTION,
    THINK_REASONING,
    WEATHER_CALL,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    build_tokenizer,
)

from agentcpm import (
    Client,
    Completed,
    ContentDelta,
    ImagePart,
    Message,
    ReasoningDelta,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
    VideoPart,
)
from agentcpm.backends.base import FinishChunk, GenerationOptions, Request, StartChunk, TextChunk, UsageChunk
from agentcpm.backends.local import LocalBackend, load_model
from agentcpm.errors import (
    BackendError,
    BadRequestError,
    ConfigurationError,
    ImageError,
    MissingDependencyError,
    ModelNotFoundError,
)

pytest.importorskip("torch")


def picture(width: int = 64, height: int = 48, color: str = "red"):
    from PIL import Image

    return Image.new("RGB", (width, height), color)


@pytest.fixture(scope="module")
def client(scripted_model_path: Path) -> Client:
    return Client(model=str(scripted_model_path), device="cpu")


@pytest.fixture(scope="module")
def random_client(tiny_model_path: Path) -> Client:
    return Client(model=str(tiny_model_path), device="cpu")


class RunSpy:
    """Records the generation runs a backend starts (to see how far a cancelled one got)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list = []
        original = LocalBackend._new_run

        def new_run(backend, *args):
            run = original(backend, *args)
            self.runs.append(run)
            return run

        monkeypatch.setattr(LocalBackend, "_new_run", new_run)


# ---------------------------------------------------------------------------- answers


def test_image_and_question_give_a_parsed_tool_call(client):
    answer = client.chat(WEATHER_QUESTION, images=[picture()], tools=[WEATHER_TOOL])
    assert [(c.name, c.arguments, c.complete) for c in answer.tool_calls] == [("get_weather", {"city": "Paris"}, True)]
    assert answer.content == ""
    assert answer.finish_reason == "tool_calls"
    usage = answer.usage
    assert usage.completion_tokens == len(build_tokenizer().encode(WEATHER_CALL)) + 1  # the call and <|im_end|>
    assert usage.time_to_first_token is not None and usage.tokens_per_second is not None


def test_usage_counts_image_tokens_and_several_images(client):
    one = client.chat(WEATHER_QUESTION, images=[picture()], max_tokens=1)
    two = client.chat(WEATHER_QUESTION, images=[picture(), picture(color="blue")], max_tokens=1)
    none = client.chat(WEATHER_QUESTION, max_tokens=1)
    per_image = one.usage.prompt_tokens - none.usage.prompt_tokens
    assert per_image > 10  # the image's placeholder tokens, not one <|image_pad|>
    # Each image adds its tokens and the "\n" joining it to the next part; ids are <image_id>0</image_id>, 1.
    assert two.usage.prompt_tokens - one.usage.prompt_tokens == per_image
    without_ids = client.chat(WEATHER_QUESTION, images=[picture()], max_tokens=1, use_image_id=False)
    assert one.usage.prompt_tokens - without_ids.usage.prompt_tokens == 3
    # The prefix cache (on by default) encodes an image once per client: only images not seen before count.
    new = client.chat(WEATHER_QUESTION, images=[picture(color="#123456"), picture(color="#654321")], max_tokens=1)
    seen = client.chat(WEATHER_QUESTION, images=[picture(color="#654321")], max_tokens=1)
    assert [a.usage.images_encoded for a in (none, new, seen)] == [0, 2, 0]


def test_downsample_4x_gives_about_four_times_the_image_tokens(client):
    base = client.chat("Describe.", max_tokens=1).usage.prompt_tokens
    image = picture(896, 448)
    tokens = {
        mode: client.chat("Describe.", images=[image], max_tokens=1, downsample_mode=mode).usage.prompt_tokens - base
        for mode in ("16x", "4x")
    }
    assert 3.5 < tokens["4x"] / tokens["16x"] < 4.1
    fewer = client.chat("Describe.", images=[image], max_tokens=1, max_slice_nums=1).usage.prompt_tokens - base
    assert fewer < tokens["16x"]


def test_tool_round_with_dict_arguments_and_an_image_from_the_tool(client):
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris", "units": {"temp": "C"}})
    text_only = [Message("user", WEATHER_QUESTION), Message.assistant("", [call]), Message("tool", "sunny, 21 C")]
    answer = client.chat(text_only, tools=[WEATHER_TOOL])
    assert (answer.content, answer.finish_reason) == (FINAL_ANSWER, "stop")
    # An image a tool returns goes to a user turn after the results, as "Image returned by the get_weather tool:"
    # followed by the image's tokens.
    result = ToolResult(call_id="call_1", name="get_weather", content=["sunny, 21 C", ImagePart(picture())])
    with_image = client.chat([*text_only[:2], result.to_message()], tools=[WEATHER_TOOL], max_tokens=1)
    image_only = client.chat(Message("user", [ImagePart(picture())]), max_tokens=1).usage.prompt_tokens
    bare = client.chat("x", max_tokens=1).usage.prompt_tokens
    image_tokens = image_only - bare + 1  # bare is one byte token, "x"
    text = "user\nImage returned by the get_weather tool:\n"
    turn = 1 + len(text) + image_tokens + 2  # <|im_start|>, the text, the image, <|im_end|>, "\n"
    # That user turn is now the last query, so the assistant turn before it loses its empty think block.
    empty_think = len(["<think>", "\n", "\n", "</think>", "\n", "\n"])
    assert with_image.usage.prompt_tokens - answer.usage.prompt_tokens == turn - empty_think


def test_thinking_on_and_off(client):
    on = client.chat(THINK_QUESTION, thinking=True)
    assert (on.reasoning, on.content) == (THINK_REASONING, THINK_ANSWER)
    off = client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], thinking=False)
    default = client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL])
    assert not off.reasoning and off.tool_calls and default.usage.prompt_tokens == off.usage.prompt_tokens
    thinking = client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], thinking=True, max_tokens=1)
    assert off.usage.prompt_tokens - thinking.usage.prompt_tokens == 4  # "\n", "</think>", "\n", "\n"


def test_streaming_events_arrive_in_order(client):
    events = list(client.stream(THINK_QUESTION, thinking=True))
    assert isinstance(events[-1], Completed) and not any(isinstance(e, Completed) for e in events[:-1])
    kinds = [type(e) for e in events[:-1]]
    assert ReasoningDelta in kinds and ContentDelta in kinds
    assert max(i for i, k in enumerate(kinds) if k is ReasoningDelta) < kinds.index(ContentDelta)
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)).strip() == THINK_ANSWER
    calls = list(client.stream(WEATHER_QUESTION, tools=[WEATHER_TOOL]))
    kinds = [type(e) for e in calls]
    assert kinds.index(ToolCallStarted) < kinds.index(ToolCallFinished) < kinds.index(Completed)
    assert calls[-1].completion.tool_calls[0].arguments == {"city": "Paris"}


def test_sampling_options(random_client):
    greedy = [random_client.chat("hello", max_tokens=8, temperature=0).raw for _ in range(2)]
    assert greedy[0] == greedy[1]
    seeded = [random_client.chat("hello", max_tokens=8, temperature=1.5, seed=7).raw for _ in range(2)]
    assert seeded[0] == seeded[1]
    limited = random_client.chat("hello", max_tokens=3, temperature=0)
    assert (limited.usage.completion_tokens, limited.finish_reason) == (3, "length")


def test_stop_strings_and_length_limit(client):
    history = [Message("user", WEATHER_QUESTION), Message("tool", "sunny")]
    stopped = client.chat(history, stop=["Paris"])
    assert stopped.content == "It is sunny in" and stopped.finish_reason == "stop"
    cut = client.chat(WEATHER_QUESTION, tools=[WEATHER_TOOL], max_tokens=20)
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 20
    assert all(not call.complete for call in cut.tool_calls)


def generated(backend: LocalBackend, request: Request) -> list:
    async def collect() -> list:
        return [chunk async for chunk in backend.generate(request)]

    return asyncio.run(collect())


@pytest.mark.parametrize("blocking", [True, False])
@pytest.mark.parametrize("stream", [True, False])
def test_generate_yields_start_text_usage_finish_on_every_path(client, blocking, stream):
    """The raw chunks themselves (the engine does the parsing): the same on the calling thread, a background
    thread with thread waits, and the async hand-offs."""
    new_image = picture(color=(10 + 20 * blocking, 10 + 20 * stream, 99))  # not seen before by this client's cache
    messages = [Message("user", [ImagePart(new_image), THINK_QUESTION])]
    options = GenerationOptions(thinking=True)
    chunks = generated(client.backend, Request(messages, [], options, stream=stream, blocking=blocking))
    assert chunks[0] == StartChunk(in_reasoning=True)  # the prompt ends inside <think>
    assert [type(c) for c in chunks[-2:]] == [UsageChunk, FinishChunk] and chunks[-1].reason == "stop"
    text = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    assert text.strip().endswith(THINK_ANSWER) and THINK_REASONING in text
    assert all(isinstance(c, TextChunk) for c in chunks[1:-2])
    usage = chunks[-2]
    assert usage.images_encoded == 1 and usage.completion_tokens > 0 and usage.time_to_first_token is not None
    limited = GenerationOptions(thinking=True, max_tokens=2)
    cut = generated(client.backend, Request(messages, [], limited, stream=stream, blocking=blocking))
    assert (cut[-2].completion_tokens, cut[-1].reason) == (2, "length")


@pytest.mark.parametrize("stream", [True, False])
def test_a_generation_error_raises_backend_error_and_frees_the_model(client, stream):
    request = Request([Message("user", "hello")], [], GenerationOptions(max_tokens=-1), stream=stream)
    with pytest.raises(BackendError, match="generation failed: ValueError"):
        generated(client.backend, request)
    assert not client.backend.load().lock.locked()


def test_streamed_text_is_decoded_whole_characters_at_a_time():
    from agentcpm.backends.local.generation import Detokenizer

    tokenizer = build_tokenizer()  # one token per byte: every non-ASCII character arrives in pieces
    text = "héllo 你好 🎉\n<tool_call>\n<parameter=x>\nü\n</parameter>"
    ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    detokenizer = Detokenizer(tokenizer)
    pieces = [detokenizer.push([token]) for token in ids] + [detokenizer.flush()]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)


# ---------------------------------------------------------------------------- stopping early


def test_breaking_out_of_a_stream_stops_generation_and_frees_the_model(random_client, monkeypatch):
    spy = RunSpy(monkeypatch)
    for _event in random_client.stream("hello", max_tokens=2000, temperature=1.0):
        generated_at_break = spy.runs[0].generated
        break
    assert not random_client.backend.load().lock.locked()
    assert spy.runs[0].generated - generated_at_break <= 3  # stopped within a token or two of the break
    assert random_client.chat("hello", max_tokens=3).usage.completion_tokens == 3


def test_closing_the_client_stops_its_generation(tiny_model_path):
    client = Client(model=str(tiny_model_path), device="cpu")
    events = client.stream("hello", max_tokens=5000)
    next(events)
    client.close()
    last = list(events)[-1]
    assert last.completion.finish_reason == "cancelled" and last.completion.usage.completion_tokens < 5000
    assert client.chat("hello", max_tokens=2).finish_reason == "length"  # still usable


def test_ctrl_c_while_streaming_stops_generation(random_client, monkeypatch):
    spy = RunSpy(monkeypatch)
    interrupt = threading.Timer(0.05, _thread.interrupt_main)  # Ctrl-C while the stream waits for tokens
    try:
        with pytest.raises(KeyboardInterrupt):
            for _event in random_client.stream("hello", max_tokens=5000):
                if not interrupt.is_alive() and not interrupt.finished.is_set():
                    interrupt.start()
    finally:
        interrupt.cancel()
    assert not random_client.backend.load().lock.locked()
    assert spy.runs[0].generated < 5000


def test_ctrl_c_during_chat_stops_generation(random_client, monkeypatch):
    spy = RunSpy(monkeypatch)  # chat generates on the calling thread: Ctrl-C lands inside generate
    random_client.backend.load()
    interrupt = threading.Timer(0.5, _thread.interrupt_main)
    interrupt.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            random_client.chat("hello", max_tokens=5000)
    finally:
        interrupt.cancel()
    assert not random_client.backend.load().lock.locked()
    assert spy.runs[0].generated < 5000
    assert random_client.chat("hello", max_tokens=2).usage.completion_tokens == 2


def test_async_chat_stream_and_cancellation(client, random_client, monkeypatch):
    spy = RunSpy(monkeypatch)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        answer = await client.achat(WEATHER_QUESTION, images=[picture()], tools=[WEATHER_TOOL])
        assert answer.tool_calls[0].name == "get_weather"
        assert ticks > 3  # the loop kept running while the model worked

        events = [event async for event in client.astream(THINK_QUESTION, thinking=True)]
        assert isinstance(events[-1], Completed) and events[-1].completion.content == THINK_ANSWER

        async def consume():
            async for _event in random_client.astream("hello", max_tokens=2000):
                started.set()

        started = asyncio.Event()
        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ticking.cancel()
        # the next call waits for the cancelled generation to stop, then runs
        follow_up = await random_client.achat("hello", max_tokens=2)
        return follow_up

    follow_up = asyncio.run(main())
    assert follow_up.usage.completion_tokens == 2
    cancelled = spy.runs[-2]
    assert cancelled.cancelled.is_set() and cancelled.generated < 2000


# ---------------------------------------------------------------------------- errors and loading


def test_corrupt_image_raises_image_error(client):
    with pytest.raises(ImageError):
        client.chat("What is this?", images=[b"definitely not an image"])


def test_conversation_the_template_refuses(client):
    with pytest.raises(BadRequestError, match="No user query"):
        client.chat([{"role": "assistant", "content": "hi"}])


def test_video_without_torchvision_names_it_and_the_server_option(client):
    with pytest.raises(MissingDependencyError, match="torchvision") as info:
        client.chat(Message("user", [VideoPart("clip.mp4"), "What happens?"]))
    assert "base_url" in str(info.value)


def test_missing_model_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        Client(model="agentcpm-tests/no-such-model", device="cpu").chat("hi")
    message = str(info.value)
    assert "model=PATH" in message and "base_url=URL" in message and "hf download agentcpm-tests/" in message
    with pytest.raises(ModelNotFoundError, match="no folder") as info:
        load_model(str(tmp_path / "missing" / "model"))
    assert "hf download" not in str(info.value)  # a mistyped folder is not a hub id to download


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        (
            ["accelerate"],
            "accelerate is needed for running the model in-process but not installed: "
            'run `pip install "agentcpm[local]"`',
        ),
        (
            ["torch", "transformers"],
            "torch and transformers are needed for running the model in-process but not installed: run "
            "`pip install torch==2.13.0` (or the torch build for your platform) first, "
            'then `pip install "agentcpm[local]"`',
        ),
    ],
)
def test_missing_model_stack_names_each_package_and_the_torch_pin(monkeypatch, tiny_model_path, hidden, expected):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(MissingDependencyError) as info:
        Client(model=str(tiny_model_path), device="cpu").chat("hi", max_tokens=1)
    assert str(info.value) == expected


def test_quantized_checkpoint_without_its_package(tiny_model_path, tmp_path):
    quantized = shutil.copytree(tiny_model_path, tmp_path / "awq")
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}
    (quantized / "config.json").write_text(json.dumps(config))
    pytest.importorskip("transformers")
    if __import__("importlib").util.find_spec("gptqmodel"):
        pytest.skip("gptqmodel is installed")
    with pytest.raises(MissingDependencyError, match="gptqmodel"):
        load_model(str(quantized), device="cpu")


def test_unknown_device_or_dtype(tiny_model_path):
    with pytest.raises(ConfigurationError, match="unknown device"):
        LocalBackend(str(tiny_model_path), device="tpu").load()
    with pytest.raises(ConfigurationError, match="unknown dtype"):
        LocalBackend(str(tiny_model_path), device="cpu", dtype="int3").load()


def test_concurrent_calls_take_turns(random_client):
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(random_client.chat("hi", max_tokens=5))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.usage.completion_tokens for a in answers] == [5, 5]


def test_model_is_loaded_once_and_shared(scripted_model_path, client):
    other = Client(model=str(scripted_model_path), device="cpu", dtype="float32")
    assert other.backend is not client.backend
    assert other.backend.load() is client.backend.load()


def test_creating_a_local_client_imports_nothing_heavy():
    code = (
        "import sys, agentcpm; agentcpm.Client(model='some/model');"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("cache", [False, True])
def test_the_prompt_never_goes_through_the_vocabulary_projection_whole(scripted_model_path, monkeypatch, cache):
    """The model's forward has no logits_to_keep: given the whole prompt it projects every position onto the
    248k-word vocabulary (1 GB per 1,000 tokens in float32). The prompt goes through the language model first;
    the projection sees at most a short rest of it, then one token at a time."""
    from agentcpm.backends.local.generation import SHORT_REST

    client = Client(model=str(scripted_model_path), device="cpu", cache=cache)
    head = client.backend.load().model.lm_head
    widths: list[int] = []
    original = head.forward
    monkeypatch.setattr(head, "forward", lambda hidden: widths.append(hidden.shape[1]) or original(hidden))
    long_question = "Describe this picture in detail, please. " * 8
    done = client.chat([Message("user", [picture(), long_question])], max_tokens=5, temperature=0)
    assert done.usage.prompt_tokens > 4 * SHORT_REST
    assert widths and max(widths) <= SHORT_REST and widths[1:] == [1] * (len(widths) - 1)
