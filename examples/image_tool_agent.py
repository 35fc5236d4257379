"""An agent whose tool returns images: the model looks at what the tool drew and answers.

    python examples/image_tool_agent.py                   # a scripted model (ScriptedBackend): runs anywhere
    python examples/image_tool_agent.py --base-url http://localhost:8000/v1 "Draw a red circle and a blue square"
    python examples/image_tool_agent.py --model openbmb/MiniCPM-V-4.6

Images a tool returns reach the model in a user message right after the tool results; only the newest
``keep_images`` stay in what the model sees (older ones become "[image from step N omitted]"), while
``result.messages`` and the transcript keep them all (the transcript as PNG files beside the JSONL).

Without --base-url or --model the "model" is a ScriptedBackend replaying what MiniCPM-V 4.6 writes here, so
the example runs with no model; the script checks that the drawing really reached the model's request.
"""

from __future__ import annotations

import argparse
from typing import Literal

from PIL import Image, ImageDraw

from agentcpm import Agent, Client, Reply, ScriptedBackend, ToolFinished, ToolStarted, tool
from agentcpm.backends.scripted import ScriptedRequest

Shape = Literal["circle", "square", "triangle"]


@tool
def draw(shape: Shape, color: str = "red", size: int = 200) -> list:
    """Draw a shape on a white canvas and return the picture.

    Args:
        shape: What to draw.
        color: A colour name such as "red" or "#0080ff".
        size: Width and height of the canvas in pixels.
    """
    image = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(image)
    box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
    if shape == "circle":
        pen.ellipse(box, fill=color)
    elif shape == "square":
        pen.rectangle(box, fill=color)
    else:
        pen.polygon([(size // 2, size // 5), (size // 5, size * 4 // 5), (size * 4 // 5, size * 4 // 5)], fill=color)
    return [f"A {color} {shape} on a {size}x{size} white canvas:", image]


def scripted_answer(request: ScriptedRequest) -> Reply:
    """The scripted model's second turn: it describes the picture it was sent (and proves it got one)."""
    images = [image for message in request.messages for image in message.images]
    if not images:
        return Reply("I did not receive the drawing.")
    width, height = images[-1].open().size
    center = images[-1].open().getpixel((width // 2, height // 2))
    return Reply(f"I see a {width}x{height} picture with a shape whose centre has the colour {center}.")


SCRIPT = [
    "<tool_call>\n<function=draw>\n<parameter=shape>\ncircle\n</parameter>\n<parameter=color>\nred\n</parameter>\n"
    "</function>\n</tool_call>",
    scripted_answer,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default="Draw a red circle, then tell me what you see.")
    parser.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--model", help="model name on the server, or a checkpoint to run in-process")
    parser.add_argument("--api-key")
    parser.add_argument("--transcript", help="append the run to this JSONL file (images go beside it)")
    args = parser.parse_args()

    if args.base_url or args.model:
        client = Client(base_url=args.base_url, model=args.model, api_key=args.api_key)
    else:
        print("(no --base-url or --model: using a scripted model)\n")
        client = Client(backend=ScriptedBackend(SCRIPT))

    def show(event: object) -> None:
        if isinstance(event, ToolStarted):
            print(f"-> {event.call.name}({event.call.arguments})")
        elif isinstance(event, ToolFinished):
            images = len(event.result.images)
            print(f"<- {event.call.name}: {event.result.text or event.error!r} (+{images} image)")

    agent = Agent(client, tools=[draw], keep_images=2, max_images_per_request=4, max_steps=5, on_event=show)
    result = agent.run(args.task, transcript=args.transcript)
    print(f"\n{result.output}")
    kept = sum(len(message.images) for message in result.messages)
    print(f"({len(result.steps)} steps; {kept} image(s) kept in result.messages)")


if __name__ == "__main__":
    main()
