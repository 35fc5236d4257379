"""Screen vision for agents: capture, coordinates, tools and screenshot automations.

>>> from agentcpm.screen import capture, screen_tools, watch
>>> shot = capture(monitor=1)              # doctest: +SKIP
>>> shot.to_screen(500, 500)               # doctest: +SKIP
(960, 540)

mss and pynput are imported only when a capture or an action happens.
"""

from __future__ import annotations

from .capture import Screenshot, capture, list_monitors
from .geometry import Box, Monitor, Rect, monitor_at, parse_boxes, parse_points
from .tools import Action, ScreenSession, screen_tools
from .watch import Change, WatchAnswer, wait_for_change, wait_until_stable, watch

__all__ = [
    "Action",
    "Box",
    "Change",
    "Monitor",
    "Rect",
    "ScreenSession",
    "Screenshot",
    "WatchAnswer",
    "capture",
    "list_monitors",
    "monitor_at",
    "parse_boxes",
    "parse_points",
    "screen_tools",
    "wait_for_change",
    "wait_until_stable",
    "watch",
]
