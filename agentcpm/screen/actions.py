"""Mouse and keyboard input through pynput (``pip install "agentcpm[gui]"``), in screen coordinates.

pynput is imported on first use; it needs a display (on X11, ``DISPLAY``) when it is imported.

>>> desktop = Desktop()                  # doctest: +SKIP
>>> desktop.click(960, 540)              # doctest: +SKIP
>>> desktop.press("ctrl+s")              # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import re
import time
from typing import Any

from ..errors import ConfigurationError, DisplayError, MissingDependencyError

#: Key names the model may use in ``press``, besides single characters, mapped to pynput's ``Key`` names.
KEY_ALIASES = {
    "control": "ctrl",
    "return": "enter",
    "escape": "esc",
    "win": "cmd",
    "windows": "cmd",
    "super": "cmd",
    "meta": "cmd",
    "command": "cmd",
    "option": "alt",
    "del": "delete",
    "pgup": "page_up",
    "pageup": "page_up",
    "pgdn": "page_down",
    "pagedown": "page_down",
    "arrowup": "up",
    "arrowdown": "down",
    "arrowleft": "left",
    "arrowright": "right",
    "ins": "insert",
    "spacebar": "space",
    "plus": "+",
}


def gui_available() -> bool:
    """True when the ``gui`` extra (pynput) is installed; it is not imported."""
    try:
        return importlib.util.find_spec("pynput") is not None
    except ValueError:  # a module set to None in sys.modules: blocked on purpose
        return False


def _pynput() -> tuple[Any, Any]:
    if not gui_available():
        raise MissingDependencyError("pynput", extra="gui", purpose="mouse and keyboard actions")
    try:
        from pynput import keyboard, mouse
    except ImportError as exc:  # pynput raises ImportError when it cannot reach a display
        raise DisplayError(f"pynput cannot control this display ({exc}); run inside a desktop session") from exc
    return mouse, keyboard


def parse_keys(combo: str) -> list[Any]:
    """``"ctrl+shift+s"`` -> pynput keys, modifiers first. Raises ConfigurationError naming unknown keys."""
    _, keyboard = _pynput()
    if not combo.strip():
        raise ConfigurationError("no key given: write a key or a combination such as 'enter' or 'ctrl+s'")
    keys = []
    for part in re.split(r"\+(?=.)", combo.strip()):  # "ctrl++" is ctrl and the + key
        name = part.strip() or part
        key_name = KEY_ALIASES.get(name.lower(), name.lower())
        if len(name) == 1 or len(key_name) == 1:
            keys.append(keyboard.KeyCode.from_char(name if len(name) == 1 else key_name))
        elif key_name in keyboard.Key.__members__:
            keys.append(keyboard.Key[key_name])
        else:
            known = ", ".join(sorted(keyboard.Key.__members__))
            raise ConfigurationError(f"unknown key {name!r} in {combo!r}: use a single character or one of {known}")
    return keys


class Desktop:
    """Real input events at screen coordinates (the space of :meth:`Screenshot.to_screen`)."""

    def __init__(self, step_delay: float = 0.01) -> None:
        mouse, keyboard = _pynput()
        self._mouse_module, self._keyboard_module = mouse, keyboard
        self.mouse = mouse.Controller()
        self.keyboard = keyboard.Controller()
        self.step_delay = step_delay

    def _button(self, name: str) -> Any:
        try:
            return self._mouse_module.Button[name]
        except KeyError:
            raise ConfigurationError(f"unknown mouse button {name!r}: use left, right or middle") from None

    def move(self, x: int, y: int) -> None:
        self.mouse.position = (x, y)
        time.sleep(self.step_delay)

    def click(self, x: int, y: int, button: str = "left", count: int = 1) -> None:
        self.move(x, y)
        self.mouse.click(self._button(button), count)

    def drag(self, x1: int, y1: int, x2: int, y2: int, steps: int = 12) -> None:
        # Move in steps while the button is down: applications track the drag through motion events.
        self.move(x1, y1)
        self.mouse.press(self._button("left"))
        try:
            for step in range(1, steps + 1):
                self.move(round(x1 + (x2 - x1) * step / steps), round(y1 + (y2 - y1) * step / steps))
        finally:
            self.mouse.release(self._button("left"))

    def scroll(self, x: int, y: int, dx: int = 0, dy: int = 0) -> None:
        """Scroll at a point; ``dy`` > 0 scrolls up, ``dx`` > 0 right, in wheel clicks."""
        self.move(x, y)
        self.mouse.scroll(dx, dy)

    def type_text(self, text: str) -> None:
        self.keyboard.type(text)

    def press(self, combo: str) -> None:
        keys = parse_keys(combo)
        pressed = []
        try:
            for key in keys:
                self.keyboard.press(key)
                pressed.append(key)
        finally:
            for key in reversed(pressed):
                self.keyboard.release(key)
