"""The in-process backend: what agentcpm adds over transformers, and the real model's speed on this machine.

    python benchmarks/local_bench.py tiny [--repeats 20]
    python benchmarks/local_bench.py full [--modes 16x 4x text] [--max-tokens 16] [--dtype D] [--device D]
                                          [--threads N] [--folder DIR]

``tiny``: the tiny scripted checkpoint (tests/tiny_model.py) answers a question with an image and a tool
by writing a tool call (~75 tokens). The same work by hand (``apply_chat_template``, ``generate``, ``decode``),
``client.chat`` and ``client.stream`` (all events drained) take turns; printed are the medians and the overhead
(target: at most 10%), in wall time and in CPU time of the process (which other processes' load on a shared
machine disturbs less). What the overhead buys: messages and images checked, early stop, the tool-call parser,
a typed Completion with usage, and for ``stream`` a background generation thread handing tokens over in
batches. torch runs one thread here (fastest for a tiny model; see tests/conftest.py).

``full``: MiniCPM-V 4.6 at full size (SigLIP2-400M vision, Qwen3.5-0.8B language model; the published
config without quantization) with random weights, which run exactly as fast as trained ones. A 1920x1080
screenshot (``max_slice_nums=36``) and a short question go through ``Client(model=PATH, device=...)``
(CPU unless ``--device``); printed per ``downsample_mode``: prompt tokens (image tokens included), time to
first token, decode tokens/s and the process's peak memory while answering. The stop tokens are biased away
so that exactly ``--max-tokens`` tokens are decoded. ``text`` measures a text-only prompt (the language model
alone). Building the model takes a few GB of memory and disk (a temporary folder, or ``--folder`` to keep it
for the next run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

# The published MiniCPM-V 4.6 architecture (config.json of the checkpoint, quantization left out).
FULL_TEXT_CONFIG: dict[str, Any] = {
    "model_type": "qwen3_5_text",
    "attention_bias": False,
    "attn_output_gate": True,
    "full_attention_interval": 4,
    "head_dim": 256,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "intermediate_size": 3584,
    "layer_types": ["linear_attention"] * 3 + ["full_attention"],
    "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 16,
    "linear_value_head_dim": 128,
    "mamba_ssm_dtype": "float32",
    "max_position_embeddings": 262144,
    "num_attention_heads": 8,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "partial_rotary_factor": 0.25,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {"partial_rotary_factor": 0.25, "rope_theta": 10000000, "rope_type": "default"},
    "tie_word_embeddings": True,
    "vocab_size": 248094,
}
FULL_TEXT_CONFIG["layer_types"] = FULL_TEXT_CONFIG["layer_types"] * 6
FULL_VISION_CONFIG: dict[str, Any] = {
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 1152,
    "image_size": 980,
    "intermediate_size": 4304,
    "layer_norm_eps": 1e-06,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 27,
    "patch_size": 14,
    "window_kernel_size": [2, 2],
}


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


# ---------------------------------------------------------------------------- tiny: overhead


def bench_tiny(repeats: int) -> None:
    import torch
    from PIL import Image
    from tiny_model import TOOL_SCRIPT, WEATHER_CALL, WEATHER_QUESTION, WEATHER_TOOL, build_tiny_model

    from agentcpm import Client
    from agentcpm.backends.local import load_processor

    torch.set_num_threads(1)
    workdir = tempfile.TemporaryDirectory(prefix="agentcpm-bench-")
    folder = build_tiny_model(Path(workdir.name) / "tiny", replies=TOOL_SCRIPT)
    image = Image.new("RGB", (640, 480), "white")

    client = Client(model=str(folder), device="cpu", cache=False)  # the same work as by hand: nothing reused
    model = client.backend.load().model  # type: ignore[attr-defined]
    processor = load_processor(folder)

    def by_hand() -> str:
        messages = [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": WEATHER_QUESTION}]}
        ]
        inputs = processor.apply_chat_template(
            messages,
            tools=[WEATHER_TOOL],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"downsample_mode": "16x"},
        )
        with torch.inference_mode():
            output = model.generate(**inputs, downsample_mode="16x", max_new_tokens=200)
        return processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def with_agentcpm() -> str:
        answer = client.chat(WEATHER_QUESTION, images=[image], tools=[WEATHER_TOOL], max_tokens=200)
        assert answer.tool_calls[0].arguments == {"city": "Paris"}
        return answer.raw

    def streaming() -> str:
        events = list(client.stream(WEATHER_QUESTION, images=[image], tools=[WEATHER_TOOL], max_tokens=200))
        return events[-1].completion.raw  # type: ignore[union-attr]

    assert by_hand() == with_agentcpm() == streaming() == WEATHER_CALL  # same work, same answer
    runs = [("hand", by_hand), ("agentcpm", with_agentcpm), ("stream", streaming)]
    wall: dict[str, list[float]] = {name: [] for name, _ in runs}
    cpu: dict[str, list[float]] = {name: [] for name, _ in runs}
    for index in range(repeats):
        for name, run in runs[index % 3 :] + runs[: index % 3]:  # rotate the order against drift
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    print(f"tiny model, 640x480 image + tool -> 75-token tool call, {repeats} runs each (medians, ms):")
    print("                                   wall      CPU (all threads)")
    for label, name in (
        ("processor + generate by hand", "hand"),
        ("client.chat", "agentcpm"),
        ("client.stream", "stream"),
    ):
        print(f"  {label:30} {median_ms(wall[name]):8.1f}  {median_ms(cpu[name]):8.1f}")
    for api, name in (("chat", "agentcpm"), ("stream", "stream")):
        for label, times in (("wall", wall), ("CPU", cpu)):
            a, b = median_ms(times["hand"]), median_ms(times[name])
            print(f"  {api:6} overhead ({label:4})       {b - a:8.1f} ms ({(b - a) / a * 100:+.1f}%, target <= +10%)")
    workdir.cleanup()


# ---------------------------------------------------------------------------- full size: speed


def screenshot() -> Any:
    """A 1920x1080 desktop-like picture: windows, bars and lines of text."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1920, 1080), (236, 239, 244))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 1040, 1920, 1080), fill=(40, 44, 52))
    for index, (x, y) in enumerate(((80, 60), (700, 200), (1250, 120))):
        draw.rectangle((x, y, x + 600, y + 700), fill="white", outline=(120, 120, 120))
        draw.rectangle((x, y, x + 600, y + 32), fill=(60, 90, 160))
        for line in range(30):
            draw.text((x + 16, y + 48 + line * 21), f"Window {index} line {line}: the quick brown fox 0123", fill=0)
    return image


def peak_memory_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def memory_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def build_full_model(folder: Path) -> Path:
    import torch
    from tiny_model import CHAT_TEMPLATE, PROCESSOR_CONFIG, build_tokenizer
    from transformers import GenerationConfig, MiniCPMV4_6Config, MiniCPMV4_6ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "processor_config.json").write_text(json.dumps(PROCESSOR_CONFIG))
    config = MiniCPMV4_6Config(
        text_config=FULL_TEXT_CONFIG,
        vision_config=FULL_VISION_CONFIG,
        insert_layer_id=6,
        image_size=1120,
        drop_vision_last_layer=False,
        merge_kernel_size=[2, 2],
        merger_times=1,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        tie_word_embeddings=True,
    )
    stops = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    started = time.perf_counter()
    model = MiniCPMV4_6ForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=stops,
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        sequence_bias=[[[token], -100.0] for token in stops],  # decode exactly max_tokens
    )
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    print(
        f"built a random full-size model: {parameters / 1e9:.2f} B parameters ({time.perf_counter() - started:.0f} s)"
    )
    return folder


def bench_full(
    modes: list[str], max_tokens: int, dtype: str, threads: int | None, folder: Path | None, device: str
) -> None:
    import torch

    from agentcpm import Client

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="agentcpm-full-") as tmp:
        if folder is None or not (folder / "config.json").exists():
            folder = build_full_model(folder or Path(tmp))
        client = Client(model=str(folder), device=device, dtype=dtype)
        loaded = client.backend.load()  # type: ignore[attr-defined]
        print(
            f"loaded on {loaded.device} ({loaded.dtype}) in {loaded.load_seconds:.0f} s; torch threads: "
            f"{torch.get_num_threads()}; resident {memory_gib('VmRSS'):.2f} GiB"
        )
        image = screenshot()
        print("prompt                    prompt tokens  TTFT (s)  decode tok/s  peak memory (GiB)")
        for mode in modes:
            peak_memory_reset()
            if mode == "text":  # no image: the language model alone
                label, images, options = "text only", [], {}
            else:
                label, images, options = f"1920x1080, {mode}", [image], {"downsample_mode": mode, "max_slice_nums": 36}
            answer = client.chat("Describe this screen.", images=images, max_tokens=max_tokens, **options)
            usage = answer.usage
            assert usage.completion_tokens == max_tokens
            print(
                f"{label:24}  {usage.prompt_tokens:13}  {usage.time_to_first_token:8.1f}  "
                f"{usage.tokens_per_second:12.2f}  {memory_gib('VmHWM'):17.2f}",
                flush=True,
            )


# ---------------------------------------------------------------------------- full size: the prefix cache


def numbered(step: int) -> Any:
    """The screenshot with a step counter drawn on it (a new image each step)."""
    from PIL import ImageDraw

    image = screenshot()
    ImageDraw.Draw(image).text((900, 1050), f"step {step}", fill=(255, 255, 255))
    return image


def warm_up(client: Any) -> None:
    """One small request with an image, so that neither half pays the first call's set-up; nothing kept."""
    from PIL import Image

    from agentcpm import ImagePart, Message

    picture = ImagePart(Image.new("RGB", (448, 448), "gray"))
    client.chat([Message("user", [picture, "Warm up."])], max_tokens=2, max_slice_nums=1)
    cache = getattr(client.backend, "cache", None)
    if cache is not None:
        cache.clear()


def timed_chat(client: Any, messages: Any, **options: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    answer = client.chat(messages, **options)
    usage = answer.usage
    print(
        f"  .. {usage.prompt_tokens} prompt tokens, {usage.cached_tokens} cached, {usage.images_encoded} images "
        f"encoded, TTFT {usage.time_to_first_token:.2f} s",
        flush=True,
    )
    return usage, time.perf_counter() - started


def repl_turns(client: Any, slices: int, max_tokens: int) -> list[Any]:
    """Turn 1: a 1920x1080 screenshot and a question (16x); turns 2 and 3: short text follow-ups."""
    from agentcpm import ImagePart, Message

    options = {"max_tokens": max_tokens, "downsample_mode": "16x", "max_slice_nums": slices}
    history = [Message("user", [ImagePart(screenshot()), "Describe this screen."])]
    usages = []
    for follow_up in ("Which window is on top?", "What does its title say?", None):
        usage, _ = timed_chat(client, history, **options)
        usages.append(usage)
        if follow_up:
            history += [Message.assistant("The screen shows three windows with text."), Message("user", follow_up)]
    return usages


def agent_steps(client: Any, steps: int, slices: int, max_tokens: int) -> tuple[list[Any], float]:
    """A screenshot agent as agentcpm.Agent sends it: each step a tool returns a new 1920x1080 screenshot, the
    image window (keep_images=3, chunked) shapes the request, the model calls the next tool."""
    from agentcpm import ImagePart, Message, ToolCall
    from agentcpm.agent.policy import request_messages

    tool = {
        "type": "function",
        "function": {
            "name": "click",
            "description": "Click and take a screenshot.",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}},
        },
    }
    options = {"max_tokens": max_tokens, "downsample_mode": "16x", "max_slice_nums": slices, "tools": [tool]}
    history = [Message("user", "Open the settings window and turn on dark mode.")]
    usages, started = [], time.perf_counter()
    for step in range(1, steps + 1):
        call = ToolCall(id=f"call_{step}", name="click", arguments={"x": 100 * step, "y": 50})
        history += [
            Message.assistant("", [call]),
            Message("tool", ["Clicked. The screen now:", ImagePart(numbered(step))], tool_call_id=call.id),
        ]
        usage, _ = timed_chat(client, request_messages(history, 3, None), **options)
        usages.append(usage)
    return usages, time.perf_counter() - started


def bench_cache(
    dtype: str,
    slices: int,
    agent_slices: int,
    steps: int,
    max_tokens: int,
    folder: Path | None,
    device: str,
    only: str | None = None,
) -> None:
    """The same REPL conversation and screenshot agent (or ``only`` one of them) with the prefix cache off, then
    on."""
    from agentcpm import Client

    with tempfile.TemporaryDirectory(prefix="agentcpm-full-") as tmp:
        if folder is None or not (folder / "config.json").exists():
            folder = build_full_model(folder or Path(tmp))
        runs = {}
        for cache in (False, True):
            client = Client(model=str(folder), device=device, dtype=dtype, cache=cache)
            loaded = client.backend.load()  # type: ignore[attr-defined]
            warm_up(client)
            peak_memory_reset()
            turns = repl_turns(client, slices, max_tokens) if only != "agent" else []
            agent, total = agent_steps(client, steps, agent_slices, max_tokens) if only != "repl" else ([], 0.0)
            runs[cache] = (turns, agent, total, memory_gib("VmHWM"))
        print(f"{loaded.device} ({loaded.dtype}), torch threads {__import__('torch').get_num_threads()}")
        if only != "agent":
            print_repl(runs, slices)
        if only != "repl":
            print_agent(runs, steps, agent_slices)
        print(f"peak memory (VmHWM): {runs[False][3]:.2f} GiB off, {runs[True][3]:.2f} GiB on")


def print_repl(runs: dict[bool, Any], slices: int) -> None:
    print(f"REPL, turn 1 a 1920x1080 screenshot (16x, max_slice_nums={slices}), turns 2-3 text:")
    print("turn  prompt  cached  TTFT off (s)  TTFT on (s)  on/off  on / turn 1 on")
    for index, (off, on) in enumerate(zip(runs[False][0], runs[True][0], strict=True)):
        first = runs[True][0][0].time_to_first_token
        print(
            f"{index + 1:4}  {on.prompt_tokens:6}  {on.cached_tokens:6}  {off.time_to_first_token:12.2f}  "
            f"{on.time_to_first_token:11.2f}  {on.time_to_first_token / off.time_to_first_token:6.3f}  "
            f"{on.time_to_first_token / first:14.3f}"
        )


def print_agent(runs: dict[bool, Any], steps: int, agent_slices: int) -> None:
    print(f"agent, {steps} steps, a new 1920x1080 screenshot each (16x, max_slice_nums={agent_slices}, keep_images=3):")
    print("step  prompt  computed  images encoded off/on  TTFT off (s)  TTFT on (s)")
    for index, (off, on) in enumerate(zip(runs[False][1], runs[True][1], strict=True)):
        print(
            f"{index + 1:4}  {on.prompt_tokens:6}  {on.prompt_tokens - on.cached_tokens:8}  "
            f"{off.images_encoded:14}/{on.images_encoded:<6}  {off.time_to_first_token:12.2f}  "
            f"{on.time_to_first_token:11.2f}"
        )
    off_total, on_total = runs[False][2], runs[True][2]
    print(f"agent run: {off_total:.1f} s off, {on_total:.1f} s on: {off_total / on_total:.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["tiny", "full", "cache"])
    parser.add_argument("--slices", type=int, default=36, help="cache: max_slice_nums of the REPL screenshot")
    parser.add_argument("--agent-slices", type=int, default=4, help="cache: max_slice_nums of the agent's shots")
    parser.add_argument("--steps", type=int, default=6, help="cache: agent steps")
    parser.add_argument("--only", choices=["repl", "agent"], help="cache: run only the REPL or only the agent")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["16x", "4x"], choices=["16x", "4x", "text"])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--folder", type=Path, help="keep the built full-size model here and reuse it next time")
    args = parser.parse_args()
    if args.part == "tiny":
        bench_tiny(args.repeats)
    elif args.part == "cache":
        dtype = "bfloat16" if args.dtype == "auto" else args.dtype
        bench_cache(
            dtype, args.slices, args.agent_slices, args.steps, args.max_tokens, args.folder, args.device, args.only
        )
    else:
        bench_full(args.modes, args.max_tokens, args.dtype, args.threads, args.folder, args.device)


if __name__ == "__main__":
    main()
