"""A weather agent: two tools called in parallel, live events, a transcript.

    python examples/weather_agent.py                     # a scripted model (ScriptedBackend): runs anywhere
    python examples/weather_agent.py --base-url http://localhost:8000/v1 "Weather in Paris and Oslo?"
    python examples/weather_agent.py --model openbmb/MiniCPM-V-4.6   # the real model, in this process

Without --base-url or --model the "model" is a ScriptedBackend replaying what MiniCPM-V 4.6 writes for
this question, so the example shows the whole loop (parse, validate, run tools, answer) with no model.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Literal

from pydantic import Field

from agentcpm import (
    Agent,
    Client,
    ContentDelta,
    RunFinished,
    ScriptedBackend,
    StepFinished,
    ToolFinished,
    ToolStarted,
    tool,
)
from agentcpm.format import render_tool_calls

WEATHER = {"paris": (21.0, "sunny"), "oslo": (4.0, "rain"), "beijing": (28.0, "hazy")}


@tool
def get_weather(location: str, unit: Literal["c", "f"] = "c") -> dict:
    """Get the current weather for a city.

    Args:
        location: City name, e.g. "Paris".
        unit: Temperature unit, Celsius or Fahrenheit.
    """
    celsius, sky = WEATHER.get(location.lower(), (15.0, "cloudy"))
    temperature = celsius if unit == "c" else celsius * 9 / 5 + 32
    return {"location": location, "temperature": round(temperature, 1), "unit": unit, "sky": sky}


@tool
def get_forecast(location: str, days: Annotated[int, Field(ge=1, le=7)] = 3) -> list[str]:
    """Get the forecast for the next days.

    Args:
        location: City name.
        days: How many days ahead (1 to 7).
    """
    _, sky = WEATHER.get(location.lower(), (15.0, "cloudy"))
    return [f"day {n}: {sky}" for n in range(1, days + 1)]


# The scripted model's replies, written in MiniCPM-V 4.6's tool-call markup.
SCRIPT = [
    render_tool_calls(
        [
            {"name": "get_weather", "arguments": {"location": "Paris"}},
            {"name": "get_weather", "arguments": {"location": "Oslo"}},
        ]
    ),
    render_tool_calls([{"name": "get_forecast", "arguments": {"location": "Oslo", "days": 2}}]),
    "Paris is sunny at 21 °C; Oslo has rain at 4 °C, and the rain continues for the next two days.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What's the weather in Paris and Oslo?")
    parser.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="model name on the server, or a checkpoint to run in-process")
    parser.add_argument("--api-key")
    parser.add_argument("--transcript", help="append the run to this JSONL file")
    args = parser.parse_args()

    if args.base_url or args.model:
        client = Client(base_url=args.base_url, model=args.model, api_key=args.api_key)
    else:
        print("(no --base-url or --model: using a scripted model)\n")
        client = Client(backend=ScriptedBackend(SCRIPT))

    agent = Agent(client, tools=[get_weather, get_forecast], system="Answer briefly.", max_steps=6)
    for event in agent.stream(args.question, transcript=args.transcript):
        if isinstance(event, ContentDelta):
            print(event.text, end="", flush=True)
        elif isinstance(event, ToolStarted):
            print(f"-> {event.call.name}({event.call.arguments})")
        elif isinstance(event, ToolFinished):
            outcome = event.result.text if event.error is None else f"error: {event.error}"
            print(f"<- {event.call.name}: {outcome} ({event.duration * 1000:.1f} ms)")
        elif isinstance(event, StepFinished):
            usage = event.usage
            if event.record.message.text:  # end the streamed answer's line
                print()
            print(f"   [step {event.step}: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens]")
        elif isinstance(event, RunFinished):
            total = event.result.usage
            print(f"\n{total.requests} requests, {total.tool_calls} tool calls, {total.duration:.2f} s")


if __name__ == "__main__":
    main()
