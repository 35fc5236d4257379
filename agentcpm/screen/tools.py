"""The screen as agent tools: look (screenshot, zoom, list_monitors, wait_for_change) and, with the ``gui``
extra, act (click, double_click, type_text, press, scroll, drag, move).

>>> from agentcpm import Agent, Client
>>> agent = Agent(Client(), tools=screen_tools(actions=True))          # doctest: +SKIP
>>> agent.run("Open the File menu and tell me what is in it.")        # doctest: +SKIP

Points are 0..1000 across the latest screenshot, as MiniCPM-V writes them; every action needs approval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ..errors import ConfigurationError, MissingDependencyError
from ..tools import Tool, tool
from .actions import Desktop, gui_available
from .capture import RectLike, Screenshot, capture, list_monitors
from .geometry import Rect
from .watch import wait_for_change as _wait_for_change
from .watch import wait_until_stable

if TYPE_CHECKING:
    from ..images import DownsampleMode

Coordinate = Annotated[int, Field(ge=0, le=1000)]  # 0..1000 across the latest screenshot

#: Zoomed regions are enlarged up to this factor, until they have about as many pixels as four slices.
MAX_ZOOM = 4.0
ZOOM_TARGET_PIXELS = 4 * 448 * 448
#: The longest ``wait_for_change`` the model may ask for, in seconds.
MAX_WAIT = 300.0


@dataclass
class Action:
    """One GUI action: its tool name, arguments (0..1000), where it lands on the screen, and whether it ran."""

    name: str
    arguments: dict[str, Any]
    screen_points: list[tuple[int, int]]
    performed: bool
    at: float = field(default_factory=time.time)


class ScreenSession:
    """What the screen tools share: the monitor, the latest screenshot (whose 0..1000 space the actions use),
    redactions, and the log of actions (``actions``; in a dry run, what would have been done).

    >>> session = ScreenSession(dry_run=True)
    >>> tools = session.tools(actions=True)     # doctest: +SKIP
    """

    def __init__(
        self,
        monitor: int = 1,
        *,
        redact: Sequence[RectLike] = (),
        dry_run: bool = False,
        max_slice_nums: int | None = None,
        downsample_mode: DownsampleMode | None = None,
        settle: float = 0.3,
        settle_timeout: float = 3.0,
    ) -> None:
        self.monitor = monitor
        self.redact = list(redact)
        self.dry_run = dry_run
        self.max_slice_nums = max_slice_nums
        self.downsample_mode = downsample_mode
        self.settle = settle
        self.settle_timeout = settle_timeout
        self.last: Screenshot | None = None
        self.actions: list[Action] = []
        self._desktop: Desktop | None = None
        # The agent may run several calls at once; input events and the screenshot after them must not interleave.
        self._acting = threading.Lock()

    # plumbing -------------------------------------------------------------------------------------------
    def capture(self, monitor: int | None = None) -> Screenshot:
        """Capture (with the session's redactions) and make it the latest screenshot."""
        self.last = capture(self.monitor if monitor is None else monitor, redact=self.redact)
        return self.last

    def _latest(self) -> Screenshot:
        return self.last if self.last is not None else self.capture()

    def _show(self, shot: Screenshot, text: str) -> list[Any]:
        return [text, shot.to_part(max_slice_nums=self.max_slice_nums, downsample_mode=self.downsample_mode)]

    def _act(
        self,
        name: str,
        arguments: dict[str, Any],
        points: list[tuple[int, int]],
        do: Callable[[list[tuple[int, int]]], None],
    ) -> Any:
        """Run ``do(screen_points)`` (or, in a dry run, only record it), then show the screen once it settles."""
        shot = self._latest()
        screen = [shot.to_screen(x, y) for x, y in points]
        where = ""
        if points:
            given = ", ".join(f"({x}, {y})" for x, y in points)
            where = f" at {given} (screen {', '.join(f'({x}, {y})' for x, y in screen)})"
        if self.dry_run:
            self.actions.append(Action(name, dict(arguments), screen, performed=False))
            return f"Dry run: {name}{where} was recorded, not performed. The screen is unchanged."
        with self._acting:
            do(screen)
            self.actions.append(Action(name, dict(arguments), screen, performed=True))
            self.last = wait_until_stable(
                monitor=shot.monitor, quiet=self.settle, timeout=self.settle_timeout, redact=self.redact
            )
            return self._show(self.last, f"Done: {name}{where}. The screen now:")

    @property
    def desktop(self) -> Desktop:
        """The input controller (pynput), created on the first real action."""
        if self._desktop is None:
            self._desktop = Desktop()
        return self._desktop

    def close(self) -> None:
        """Release the input controllers (their display connections)."""
        self._desktop = None

    def __enter__(self) -> ScreenSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # looking -------------------------------------------------------------------------------------------
    @tool
    def screenshot(self, monitor: int | None = None) -> list[Any]:
        """Take a screenshot. Points and boxes you give other tools are 0..1000 across this image.

        Args:
            monitor: Which monitor to capture (1, 2, ...; 0 for all of them); default: the current one.
        """
        shot = self.capture(monitor)
        return self._show(shot, f"Screenshot of monitor {shot.monitor} ({shot.width}x{shot.height}):")

    @tool
    def zoom(self, x1: Coordinate, y1: Coordinate, x2: Coordinate, y2: Coordinate) -> list[Any]:
        """Look closer at a box of the latest screenshot, at full resolution and enlarged, to read small text.
        Coordinates you give other tools still refer to the latest screenshot, not to this close-up.

        Args:
            x1: Left edge, 0..1000.
            y1: Top edge, 0..1000.
            x2: Right edge, 0..1000.
            y2: Bottom edge, 0..1000.
        """
        from PIL import Image

        crop = self._latest().crop(x1, y1, x2, y2)
        image = crop.image
        factor = min(MAX_ZOOM, (ZOOM_TARGET_PIXELS / (image.width * image.height)) ** 0.5)
        if factor > 1:
            size = (round(image.width * factor), round(image.height * factor))
            image = image.resize(size, Image.Resampling.LANCZOS)
        zoomed = Screenshot(image, crop.left, crop.top, crop.width, crop.height, image.width / crop.width, crop.monitor)
        enlarged = f", enlarged {factor:.1f}x" if factor > 1 else ""
        return self._show(zoomed, f"Close-up of <box>{x1} {y1} {x2} {y2}</box> ({crop.width}x{crop.height}{enlarged}):")

    @tool
    def list_monitors(self) -> str:
        """List the monitors: number, position and size in screen pixels (monitor 0 is all of them)."""
        lines = []
        for m in list_monitors():
            role = "all monitors" if m.index == 0 else ("primary" if m.primary else m.name or "monitor")
            lines.append(f"{m.index}: {m.width}x{m.height} at ({m.left}, {m.top}), {role}")
        return "\n".join(lines)

    @tool(timeout=MAX_WAIT + 10)
    def wait_for_change(
        self,
        timeout: Annotated[float, Field(gt=0, le=MAX_WAIT)] = 30.0,
        region: list[Coordinate] | None = None,
    ) -> Any:
        """Wait until the screen changes (a build finishing, a download, a dialog appearing) and show it.

        Args:
            timeout: Seconds to wait at most.
            region: Only watch this box of the latest screenshot, [x1, y1, x2, y2] in 0..1000.
        """
        latest = self._latest()
        area: Rect | None = None
        if region is not None:
            if len(region) != 4:
                raise ConfigurationError("region must be four numbers [x1, y1, x2, y2] in 0..1000")
            area = latest.rect.box_to_screen(*region)
        change = _wait_for_change(area, timeout, monitor=latest.monitor, redact=self.redact)
        if change is None:
            return f"Nothing changed in {timeout:g} s."
        shot = self.capture(latest.monitor)
        r = change.rect
        x1, y1 = shot.from_screen(r.left, r.top)
        x2, y2 = shot.from_screen(r.right - 1, r.bottom - 1)
        box = f"<box>{x1:.0f} {y1:.0f} {x2:.0f} {y2:.0f}</box>"
        return self._show(shot, f"The screen changed in {box} ({change.fraction:.0%} of the watched area). Now:")

    # acting (gui extra) ---------------------------------------------------------------------------------
    @tool(requires_approval=True)
    def click(self, x: Coordinate, y: Coordinate, button: Literal["left", "right", "middle"] = "left") -> Any:
        """Click at a point of the latest screenshot.

        Args:
            x: 0..1000 from the left.
            y: 0..1000 from the top.
            button: Mouse button.
        """
        arguments = {"x": x, "y": y, "button": button}
        return self._act("click", arguments, [(x, y)], lambda at: self.desktop.click(*at[0], button))

    @tool(requires_approval=True)
    def double_click(self, x: Coordinate, y: Coordinate) -> Any:
        """Double-click at a point of the latest screenshot (open a file, select a word).

        Args:
            x: 0..1000 from the left.
            y: 0..1000 from the top.
        """
        return self._act("double_click", {"x": x, "y": y}, [(x, y)], lambda at: self.desktop.click(*at[0], count=2))

    @tool(requires_approval=True)
    def type_text(self, text: str) -> Any:
        """Type text with the keyboard into whatever has focus (click the field first).

        Args:
            text: The text to type.
        """
        return self._act("type_text", {"text": text}, [], lambda _: self.desktop.type_text(text))

    @tool(requires_approval=True)
    def press(self, keys: str) -> Any:
        """Press a key or a key combination, such as "enter", "ctrl+s", "alt+tab" or "ctrl+shift+t".

        Args:
            keys: Key names joined by +.
        """
        from .actions import parse_keys

        if not self.dry_run:
            parse_keys(keys)  # an unknown key name goes back to the model before anything is pressed
        return self._act("press", {"keys": keys}, [], lambda _: self.desktop.press(keys))

    @tool(requires_approval=True)
    def scroll(
        self,
        x: Coordinate,
        y: Coordinate,
        direction: Literal["up", "down", "left", "right"] = "down",
        amount: Annotated[int, Field(ge=1, le=50)] = 3,
    ) -> Any:
        """Scroll with the mouse wheel over a point of the latest screenshot.

        Args:
            x: 0..1000 from the left.
            y: 0..1000 from the top.
            direction: Which way to scroll.
            amount: Wheel clicks.
        """
        dx = {"left": -amount, "right": amount}.get(direction, 0)
        dy = {"up": amount, "down": -amount}.get(direction, 0)
        arguments = {"x": x, "y": y, "direction": direction, "amount": amount}
        return self._act("scroll", arguments, [(x, y)], lambda at: self.desktop.scroll(*at[0], dx=dx, dy=dy))

    @tool(requires_approval=True)
    def drag(self, x1: Coordinate, y1: Coordinate, x2: Coordinate, y2: Coordinate) -> Any:
        """Drag with the left button held from one point of the latest screenshot to another.

        Args:
            x1: Start, 0..1000 from the left.
            y1: Start, 0..1000 from the top.
            x2: End, 0..1000 from the left.
            y2: End, 0..1000 from the top.
        """
        arguments = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
        return self._act("drag", arguments, [(x1, y1), (x2, y2)], lambda at: self.desktop.drag(*at[0], *at[1]))

    @tool(requires_approval=True)
    def move(self, x: Coordinate, y: Coordinate) -> Any:
        """Move the mouse pointer to a point of the latest screenshot (to hover).

        Args:
            x: 0..1000 from the left.
            y: 0..1000 from the top.
        """
        return self._act("move", {"x": x, "y": y}, [(x, y)], lambda at: self.desktop.move(*at[0]))

    # -----------------------------------------------------------------------------------------------------
    def tools(self, actions: bool | None = None) -> list[Tool]:
        """The tools bound to this session. ``actions``: True requires the gui extra, False leaves the actions
        out, None (default) includes them when pynput is installed."""
        if actions and not gui_available():
            raise MissingDependencyError("pynput", extra="gui", purpose="the click/type/press screen tools")
        looking = [self.screenshot, self.zoom, self.list_monitors, self.wait_for_change]
        acting = [self.click, self.double_click, self.type_text, self.press, self.scroll, self.drag, self.move]
        include = gui_available() if actions is None else actions
        return [*looking, *acting] if include else looking


def screen_tools(
    monitor: int = 1,
    *,
    actions: bool | None = None,
    dry_run: bool = False,
    redact: Sequence[RectLike] = (),
    max_slice_nums: int | None = None,
    downsample_mode: DownsampleMode | None = None,
) -> list[Tool]:
    """The screen tools for an agent, sharing one :class:`ScreenSession` (build that yourself and call its
    ``tools()`` to read the action log or the latest screenshot).

    ``actions``: include click, type and the other GUI actions (True: require the ``gui`` extra; None: when
    pynput is installed; False: never). ``dry_run``: record actions without performing them. ``redact``:
    screen rectangles blacked out in every image. ``max_slice_nums``/``downsample_mode``: what the client
    uses, so screenshots are sent at the size the model will see.

    >>> tools = screen_tools(actions=False)
    >>> [t.name for t in tools]
    ['screenshot', 'zoom', 'list_monitors', 'wait_for_change']
    """
    session = ScreenSession(
        monitor, redact=redact, dry_run=dry_run, max_slice_nums=max_slice_nums, downsample_mode=downsample_mode
    )
    return session.tools(actions)
