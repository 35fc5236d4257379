"""The ``agentcpm`` command run as a user runs it: a subprocess, against a real local HTTP server
(tests/openai_server.py) or the tiny model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_process import ROOT, agentcpm, cli_env, closed_port_url, one_friendly_line, python
from markup import call, calls
from openai_server import OpenAIServer, ServerReply


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def test_help_lists_every_command(home: Path) -> None:
    result = agentcpm(home, "--help")
    assert result.returncode == 0
    for command in ("chat", "ask", "run", "watch", "doctor", "--base-url", "--thinking", "--downsample"):
        assert command in result.stdout


def test_help_does_not_import_the_model_stack(home: Path) -> None:
    code = "import sys; from agentcpm.cli.main import build_parser; build_parser(); print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for heavy in ("torch", "transformers", "rich", "openai", "mss", "pynput"):
        assert f"'{heavy}'" not in result.stdout, heavy


def test_ask_streams_the_answer(home: Path, server: OpenAIServer) -> None:
    server.push(ServerReply("The answer is **4**.", chunk_size=3))
    options = ["--max-tokens", "33", "--temperature", "0.2", "--model", server.model]
    result = agentcpm(home, "ask", "What is 2+2?", "--base-url", server.base_url, *options)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The answer is **4**.\n"
    body = server.requests[0]
    assert body["messages"][-1]["content"] == "What is 2+2?" and body["stream"] is True
    assert body["max_tokens"] == 33 and body["temperature"] == 0.2 and body["model"] == server.model


def test_ask_json_gives_content_reasoning_tool_calls_usage(home: Path, server: OpenAIServer) -> None:
    server.push(calls(("get_weather", {"city": "Paris"}), before="I will look.\n"))
    result = agentcpm(home, "ask", "Weather in Paris?", "--json", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["content"] == "I will look."
    assert [(c["name"], c["arguments"]) for c in out["tool_calls"]] == [("get_weather", {"city": "Paris"})]
    assert out["usage"]["completion_tokens"] > 0 and "reasoning" in out


def test_ask_reads_the_prompt_from_stdin(home: Path, server: OpenAIServer) -> None:
    server.push("Got it.")
    result = agentcpm(home, "ask", "-", "--base-url", server.base_url, stdin="Summarise this:\nline two\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Got it.\n"
    assert server.requests[0]["messages"][-1]["content"] == "Summarise this:\nline two\n"


def test_ask_attaches_images(home: Path, server: OpenAIServer) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), "red").save(home / "red dot.png")
    server.push("A red square.")
    image = f"file://{home / 'red%20dot.png'}"  # a file:// URL, as some file managers paste it
    result = agentcpm(home, "ask", "What is this?", "--image", image, "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    content = server.requests[0]["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["image_url", "text"]
    assert content[0]["image_url"]["url"].startswith("data:image/")


def test_bad_image_path_is_one_line_with_the_fix(home: Path, server: OpenAIServer) -> None:
    result = agentcpm(home, "ask", "What is this?", "--image", "missing.png", "--base-url", server.base_url)
    assert result.returncode == 1
    line = one_friendly_line(result.stderr)
    assert "missing.png" in line and "check the path" in line
    assert server.requests == []  # failed before asking the model


def test_unreachable_server_is_one_line_with_the_fix(home: Path) -> None:
    url = closed_port_url()
    result = agentcpm(home, "ask", "hi", "--base-url", url)
    assert result.returncode == 1
    line = one_friendly_line(result.stderr)
    assert "127.0.0.1" in line
    assert "--base-url" in line and "base_url" not in line  # the flag, not the Python argument


def test_verbose_shows_the_traceback(home: Path) -> None:
    result = agentcpm(home, "ask", "What is this?", "--image", "missing.png", "--verbose")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: no image")


def test_empty_stdin_prompt_is_refused(home: Path, server: OpenAIServer) -> None:
    result = agentcpm(home, "ask", "-", "--base-url", server.base_url, stdin="  \n")
    assert result.returncode == 1
    assert "prompt is empty" in one_friendly_line(result.stderr)


def test_run_shows_tool_calls_errors_and_the_answer(home: Path, server: OpenAIServer) -> None:
    server.push(call("screenshot"), "I cannot see the screen, but the task is done.")
    transcript = home / "run.jsonl"
    args = ["--tools", "none", "--transcript", str(transcript), "--base-url", server.base_url]
    result = agentcpm(home, "run", "Look at the screen", *args)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "→ screenshot()" in out
    assert "✗ screenshot failed" in out  # no such tool here: shown, not fatal
    assert out.index("→ screenshot()") < out.index("I cannot see the screen, but the task is done.")
    assert len(server.requests) == 2
    assert transcript.exists() and transcript.read_text().count("\n") >= 3


def test_doctor_reports_a_working_server(home: Path, server: OpenAIServer) -> None:
    result = agentcpm(home, "doctor", "--base-url", server.base_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"serves {server.model}" in result.stdout
    assert "display" in result.stdout  # no display here: a warning with the fix, not a failure
    assert "FAIL" not in result.stdout


def test_doctor_fails_with_the_fix_when_nothing_answers(home: Path) -> None:
    url = closed_port_url()
    result = agentcpm(home, "doctor", "--base-url", url)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert url in line and "vllm serve" in line and "drop --base-url" in line


def test_doctor_checks_a_local_model_folder(home: Path, tiny_model_path: Path) -> None:
    result = agentcpm(home, "doctor", "--model", str(tiny_model_path))
    assert result.returncode == 0, result.stdout
    assert "local folder" in result.stdout and "in-process" in result.stdout


@pytest.mark.slow
def test_ask_the_tiny_model(home: Path, scripted_model_path: Path) -> None:
    from tiny_model import THINK_ANSWER, THINK_QUESTION, THINK_REASONING

    result = agentcpm(home, "ask", THINK_QUESTION, "--thinking", "--json", "--model", str(scripted_model_path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["content"] == THINK_ANSWER
    assert out["reasoning"] == THINK_REASONING
    assert result.stderr == ""  # no "Loading weights" bar, no kernel notes from transformers


def run_main(home: Path, code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``main(args)`` in a fresh interpreter after ``code`` ran (to hide a package, say); exits with its status."""
    script = f"import sys\n{code}\nfrom agentcpm.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return python(home, "-c", script, *args, timeout=300, **env)


def test_missing_model_folder_fails_at_once_without_torch(home: Path) -> None:
    code = "import atexit; atexit.register(lambda: print('torch' in sys.modules))"
    result = run_main(home, code, "ask", "hi", "--model", "./nope")
    assert result.returncode == 1
    assert result.stdout == "False\n"  # checked before the seconds torch takes to import
    line = one_friendly_line(result.stderr)
    assert "./nope" in line and "no folder" in line and "--model PATH" in line and "--base-url URL" in line
    assert "hf download" not in line and "Client(" not in line and "model=" not in line


def test_missing_model_names_flags_not_python_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from agentcpm.cli.main import main

    level = logging.getLogger("agentcpm").level
    try:  # in-process: the model stack is usually loaded already, a subprocess would load it again
        code = main(["ask", "hi", "--model", "agentcpm-tests/no-such-model"])
    finally:
        logging.getLogger("agentcpm").setLevel(level)
    assert code == 1
    line = one_friendly_line(capsys.readouterr().err)
    assert "no-such-model" in line and "--model PATH" in line and "--base-url URL" in line and "hf download" in line
    assert "Client(" not in line and "model=" not in line and "base_url" not in line


@pytest.mark.slow
def test_doctor_fails_where_ask_fails_without_accelerate(home: Path, tiny_model_path: Path) -> None:
    hide = "sys.modules['accelerate'] = None  # as if not installed"
    doctor = run_main(home, hide, "doctor", "--model", str(tiny_model_path))
    assert doctor.returncode == 1, doctor.stdout
    line = next(line for line in doctor.stdout.splitlines() if line.startswith("FAIL"))
    assert "accelerate" in line and 'pip install "agentcpm[local]"' in line
    ask = run_main(home, hide, "ask", "What is in this picture?", "--model", str(tiny_model_path))
    assert ask.returncode == 1
    line = one_friendly_line(ask.stderr)
    assert "accelerate is needed" in line and 'pip install "agentcpm[local]"' in line


@pytest.mark.slow
def test_doctor_fails_where_ask_fails_with_no_hub_and_no_cache(home: Path) -> None:
    offline_hub = {"HF_ENDPOINT": closed_port_url().removesuffix("/v1"), "HF_HUB_CACHE": str(home / "cache")}
    doctor = agentcpm(home, "doctor", HF_HUB_OFFLINE="0", **offline_hub)
    assert doctor.returncode == 1, doctor.stdout
    line = next(line for line in doctor.stdout.splitlines() if line.startswith("FAIL"))
    assert "openbmb/MiniCPM-V-4.6 is not cached and the hub does not answer" in line and "--model" in line
    ask = agentcpm(home, "ask", "hi", HF_HUB_OFFLINE="0", **offline_hub)
    assert ask.returncode == 1
    assert "the hub is unreachable" in one_friendly_line(ask.stderr)


def test_doctor_fails_on_a_folder_that_is_not_there(home: Path) -> None:
    result = agentcpm(home, "doctor", "--model", "./nope")
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert str(home / "nope") in line


def test_run_and_chat_leave_out_the_screen_tools_without_a_display(home: Path, server: OpenAIServer) -> None:
    server.push("Done without tools.", "Hello.")
    result = agentcpm(home, "run", "Tidy up", "--base-url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert "Done without tools." in result.stdout
    assert "tools" not in server.requests[0]  # not offered only to fail at the first call
    result = agentcpm(home, "chat", "--base-url", server.base_url, stdin="Hi\n")
    assert result.returncode == 0, result.stderr
    assert "tools: none" in result.stdout and "tools" not in server.requests[1]


def test_tools_named_without_a_display_fail_before_the_model_is_asked(home: Path, server: OpenAIServer) -> None:
    for command in (["run", "Tidy up"], ["chat"]):
        result = agentcpm(home, *command, "--tools", "screen", "--base-url", server.base_url, stdin="Hi\n")
        assert result.returncode == 1, result.stdout
        line = one_friendly_line(result.stderr)
        assert "display" in line and "--tools none" in line
    assert server.requests == []


def test_every_argument_has_help(home: Path) -> None:
    result = agentcpm(home, "watch", "--help")
    assert result.returncode == 0
    assert re.search(r"QUESTION\s+what to ask about the screen", result.stdout), result.stdout


def test_cli_bench_help(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/cli_bench.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "RUNS" in result.stdout


# ---------------------------------------------------------------------------- on a real display (Xvfb)


def test_ask_with_a_screenshot(home: Path, server: OpenAIServer, xvfb: Any) -> None:
    server.push("A white screen.")
    result = agentcpm(home, "ask", "What is on screen?", "--screen", "--base-url", server.base_url, DISPLAY=xvfb.name)
    assert result.returncode == 0, result.stderr
    content = server.requests[0]["messages"][-1]["content"]
    assert [p["type"] for p in content] == ["image_url", "text"]
    assert content[0]["image_url"]["url"].startswith("data:image/")


def test_screenshot_without_a_display_is_one_line(home: Path, server: OpenAIServer) -> None:
    result = agentcpm(home, "ask", "What is on screen?", "--screen", "--base-url", server.base_url)
    assert result.returncode == 1
    assert "display" in one_friendly_line(result.stderr).lower()


@pytest.mark.slow
def test_watch_exits_0_when_the_answer_holds(home: Path, server: OpenAIServer, xvfb: Any) -> None:
    from xdisplay import TkApp

    server.push("No, still building.", "Yes, the build is done.")
    args = ["--every", "0.3", "--until", "done", "--timeout", "60", "--base-url", server.base_url]
    with TkApp(xvfb.name) as app:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentcpm", "watch", "Has the build finished?", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=home,
            env=cli_env(home, DISPLAY=xvfb.name),
        )
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            app.send("rect 800 300 300 200 blue 0")  # the screen changes: the model is asked again
            rest, errors = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, errors
    lines = (first + rest).splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["No, still building.", "Yes, the build is done."]
    assert all(line.startswith("[") and line[9] == "]" for line in lines)  # [HH:MM:SS]
    assert len(server.requests) == 2


def test_watch_exits_1_on_timeout(home: Path, server: OpenAIServer, xvfb: Any) -> None:
    server.push("No.")
    args = ["--every", "0.3", "--until", "yes", "--timeout", "1.5", "--base-url", server.base_url]
    result = agentcpm(home, "watch", "Is a dialog open?", *args, DISPLAY=xvfb.name)
    assert result.returncode == 1, result.stderr
    assert result.stdout.endswith("] No.\n")
    assert "timed out after 1.5 s" in result.stderr
