"""Benchmark of agentcpm.parsing, side by side with the response parser transformers ships for Qwen3.5.

    python benchmarks/parser_bench.py            # full run (about a minute)
    python benchmarks/parser_bench.py --quick    # fewer repeats and smaller comparison sizes

Prints medians of CPU seconds (time.process_time: the machine it was written on is shared, and CPU time is
what the parser costs whoever else is running) and ratios:
1. batch throughput (MB/s) of parse_output on realistic model outputs;
2. a 1 MB string value fed one character and 30 characters at a time;
3. 100 KB vs 1 MB, and 1 MB vs 10 MB (linear growth: 10x the text should cost about 10x the time);
4. transformers' ``parse_response`` / ``ResponseParser`` with the qwen3_5 template from
   ``transformers/cli/serving/utils.py`` on the same inputs, where it finishes in reasonable time;
5. hostile input: long whitespace runs after closers inside a value (each closer waits to see what follows
   it), 100 KB vs 1 MB, batch and streamed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from agentcpm.format import StreamParser, parse_output

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "parameters": {"properties": {"path": {"type": "string"}, "content": {"type": "string"}}},
        },
    },
]
CODE = (
    "def clamp(x: int, lo: int, hi: int) -> int:\n"
    '    """Keep x within [lo, hi]; 中文注释 🚀"""\n'
    "    if x < lo:\n        return lo\n    return hi if x > hi else x\n\n"
    "html = '<div class=\"row\"><p>a &lt; b</p></div>'\n"
)


def call(name: str, **params: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def realistic_outputs() -> dict[str, str]:
    return {
        "one call": "I'll check the weather in Paris.\n\n" + call("get_weather", city="Paris", days="3"),
        "reasoning, 2 calls, text": (
            "<think>\nThe user wants both cities. 先查北京, then Shanghai.\n" * 20
            + "</think>\n\nChecking both 🌤️\n"
            + call("get_weather", city="北京")
            + "\n"
            + call("get_weather", city="上海", days="2")
        ),
        "20 KB code value": "Writing the file.\n" + call("write_file", path="src/clamp.py", content=CODE * 80),
        "long answer, no call": ("MiniCPM-V reads the screenshot: the button is at (120, 40). " * 300).strip(),
    }


def value_text(size: int) -> str:
    """A write_file call whose content (code, with '<' in it) makes the text about `size` characters."""
    head = "<tool_call>\n<function=write_file>\n<parameter=path>\nbig.py\n</parameter>\n<parameter=content>\n"
    tail = "\n</parameter>\n</function>\n</tool_call>"
    body = (CODE * (size // len(CODE) + 1))[: size - len(head) - len(tail)]
    return head + body + tail


def whitespace_text(size: int) -> str:
    """A write_file value holding </parameter>, </function> and </tool_call> as text, each followed by a
    whitespace run of about size/8 characters."""
    ws = " \n\t" * (size // 18)
    body = "".join(f"x {closer}{ws}y\n" for closer in ("</parameter>", "</function>", "</tool_call>") * 2)
    head = "<tool_call>\n<function=write_file>\n<parameter=content>\n"
    return head + body + "</parameter>\n</function>\n</tool_call>"


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def ours_batch(text: str) -> Any:
    return parse_output(text, TOOLS)


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def ours_stream(pieces: list[str]) -> Any:
    parser = StreamParser(TOOLS)
    feed = parser.feed
    for piece in pieces:
        feed(piece)
    parser.close()
    return parser.result()


def transformers_parser() -> tuple[Callable[[str], Any], Callable[[list[str]], Any]] | None:
    try:
        from transformers.cli.serving.utils import _RESPONSE_TEMPLATE_FALLBACKS
        from transformers.utils.chat_parsing import ResponseParser, parse_response
    except ImportError:
        return None
    template = next(v for types, v in _RESPONSE_TEMPLATE_FALLBACKS.items() if "qwen3_5" in types)

    def batch(text: str) -> Any:
        return parse_response(text, template, prefix="", tools=TOOLS)

    def stream(pieces: list[str]) -> Any:
        parser = ResponseParser(template, prefix="", tools=TOOLS)
        feed = parser.feed
        for piece in pieces:
            feed(piece)
        return parser.finalize()[0]

    return batch, stream


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="fewer repeats, smaller comparison sizes")
    quick = args.parse_args().quick
    repeats = 3 if quick else 7
    theirs = transformers_parser()

    print("## 1. batch throughput on realistic outputs (parse_output)")
    print(f"{'output':28} {'chars':>8} {'agentcpm MB/s':>14} {'transformers MB/s':>18} {'speedup':>8}")
    for label, text in realistic_outputs().items():
        loops = max(1, 200_000 // len(text))
        ours = median_time(lambda t=text, n=loops: [ours_batch(t) for _ in range(n)], repeats) / loops
        mb = len(text.encode()) / 1e6
        row = f"{label:28} {len(text):>8} {mb / ours:>14.1f}"
        if theirs:
            other = median_time(lambda t=text, n=loops: [theirs[0](t) for _ in range(n)], repeats) / loops
            row += f" {mb / other:>18.1f} {other / ours:>7.1f}x"
        print(row)

    print("\n## 2. a 1 MB string value, streamed (StreamParser.feed; the text is split before timing)")
    big = value_text(1_000_000)
    for chunk in (1, 30):
        pieces = chunks(big, chunk)
        seconds = median_time(lambda p=pieces: ours_stream(p), repeats)
        print(f"fed {chunk:>2} char(s) at a time: {seconds:.3f} s  ({len(pieces):,} feed calls)")
    assert ours_stream(chunks(big, 1)).tool_calls[0].arguments == parse_output(big, TOOLS).tool_calls[0].arguments

    print("\n## 3. linear growth: 100 KB vs 1 MB (and 10 MB)")
    sizes = {"100 KB": value_text(100_000), "1 MB": big, "10 MB": value_text(10_000_000)}
    print(f"{'mode':18} {'100 KB s':>10} {'1 MB s':>10} {'ratio':>7} {'10 MB s':>10} {'ratio':>7}")
    for label, chunk in (("batch", 0), ("stream, 30 chars", 30), ("stream, 1 char", 1)):
        timed = []
        for name, text in sizes.items():
            if name == "10 MB" and (quick or chunk == 1):
                continue
            if chunk:
                pieces = chunks(text, chunk)
                timed.append(median_time(lambda p=pieces: ours_stream(p), repeats))
            else:
                timed.append(median_time(lambda t=text: ours_batch(t), repeats))
        row = f"{label:18} {timed[0]:>10.4f} {timed[1]:>10.4f} {timed[1] / timed[0]:>6.1f}x"
        if len(timed) > 2:
            row += f" {timed[2]:>10.4f} {timed[2] / timed[1]:>6.1f}x"
        print(row)

    print("\n## 5. long whitespace runs inside a value (closers that wait for what follows them)")
    print(f"{'mode':18} {'100 KB s':>10} {'1 MB s':>10} {'ratio':>7}")
    hostile = {n: whitespace_text(n) for n in (100_000, 1_000_000)}
    for label, chunk in (("batch", 0), ("stream, 30 chars", 30), ("stream, 1 char", 1)):
        timed = []
        for text in hostile.values():
            if chunk:
                pieces = chunks(text, chunk)
                timed.append(median_time(lambda p=pieces: ours_stream(p), min(repeats, 3)))
            else:
                timed.append(median_time(lambda t=text: ours_batch(t), repeats))
        print(f"{label:18} {timed[0]:>10.4f} {timed[1]:>10.4f} {timed[1] / timed[0]:>6.1f}x")

    if theirs is None:
        print("\ntransformers is not installed: no comparison")
        return
    print("\n## 4. agentcpm vs transformers (qwen3_5 response template), one code-value call of growing size")
    sizes = (10_000, 20_000, 40_000) if quick else (10_000, 20_000, 40_000, 80_000)
    print(f"{'mode':18} {'chars':>7} {'agentcpm s':>11} {'transformers s':>15} {'ratio':>8}")
    for label, chunk, max_size in (
        ("batch", 0, sizes[-1]),
        ("stream, 30 chars", 30, sizes[-1]),
        ("stream, 1 char", 1, 20_000 if quick else 40_000),
    ):
        for size in sizes:
            if size > max_size:
                continue
            text = value_text(size)
            if chunk == 0:  # both parsers read the same call (transformers strips all whitespace around values)
                mine = ours_batch(text).tool_calls[0].arguments["content"]
                other = theirs[0](text)["tool_calls"][0]["function"]["arguments"]["content"]
                assert mine.strip() == other.strip(), "the parsers disagree"
            slow_repeats = 1 if size > 20_000 else repeats
            if chunk:
                pieces = chunks(text, chunk)
                a = median_time(lambda p=pieces: ours_stream(p), repeats)
                b = median_time(lambda p=pieces: theirs[1](p), slow_repeats)
            else:
                a = median_time(lambda t=text: ours_batch(t), repeats)
                b = median_time(lambda t=text: theirs[0](t), slow_repeats)
            print(f"{label:18} {size:>7} {a:>11.4f} {b:>15.4f} {b / a:>7.0f}x")


if __name__ == "__main__":
    main()
