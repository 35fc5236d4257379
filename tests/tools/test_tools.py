"""@tool and Tool: schemas from signatures and docstrings, validation, calling, return values."""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import threading
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from agentcpm import ImagePart, TextPart
from agentcpm.errors import ToolDefinitionError
from agentcpm.format import convert_arguments
from agentcpm.tools import (
    Tool,
    ToolArgumentsError,
    _DaemonThreads,
    as_tools,
    display_arguments,
    display_text,
    dumps_exact,
    int_text,
    parse_docstring,
    run_in_thread,
    set_thread_limit,
    text_int,
    to_content,
    tool,
)


class Unit(enum.Enum):
    CELSIUS = "c"
    FAHRENHEIT = "f"


class Address(BaseModel):
    city: str = Field(description="City name")
    street: str | None = None


class Order(BaseModel):
    items: list[str]
    ship_to: Address


def test_google_docstring_gives_descriptions_defaults_and_required():
    @tool
    def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
        """Get the current weather for a location.

        Args:
            location: City name.
            unit (str): Temperature unit,
                Celsius or Fahrenheit.

        Returns:
            A sentence.
        """
        return f"22 {unit} in {location}"

    schema = get_weather.to_openai()
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "get_weather"
    assert function["description"] == "Get the current weather for a location."
    params = function["parameters"]
    assert params["required"] == ["location"]
    assert params["properties"]["location"] == {"type": "string", "description": "City name."}
    assert params["properties"]["unit"]["enum"] == ["c", "f"]
    assert params["properties"]["unit"]["default"] == "c"
    assert params["properties"]["unit"]["description"] == "Temperature unit, Celsius or Fahrenheit."
    assert "A sentence" not in json.dumps(schema)
    assert get_weather("Paris") == "22 c in Paris"  # the Tool still calls like the function


def test_numpy_and_sphinx_docstrings():
    numpy_doc = """Sum two numbers.

    Parameters
    ----------
    a : int
        The first number.
    b : int, optional
        The second
        number.

    Returns
    -------
    int
    """
    sphinx_doc = """Sum two numbers.

    :param a: The first number.
    :param int b: The second
        number.
    :returns: the sum
    """
    expected = ("Sum two numbers.", {"a": "The first number.", "b": "The second number."})
    assert parse_docstring(numpy_doc) == expected
    assert parse_docstring(sphinx_doc) == expected


def test_docstring_styles_long_descriptions_and_star_parameters():
    google = """Search files.

    Looks through every file under a folder,
    recursively.

    Keyword Args:
        pattern (str): A glob
            pattern.
        **options: Ignored.

    Raises:
        OSError: never described to the model.
    """
    assert parse_docstring(google) == (
        "Search files.\n\nLooks through every file under a folder,\nrecursively.",
        {"pattern": "A glob pattern.", "options": "Ignored."},
    )
    notes = "Ping a host.\n\nArgs:\n    host: Name.\n\nNotes:\n    Uses ICMP.\n"
    assert parse_docstring(notes) == ("Ping a host.", {"host": "Name."})
    assert parse_docstring("Just a line.") == ("Just a line.", {})
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("   ") == ("", {})

    @tool
    def search(pattern: str) -> str:
        """Search files.

        :param pattern: A glob.
        :raises OSError: when unreadable.
        """
        return pattern

    assert search.description == "Search files."
    assert search.parameters["properties"]["pattern"]["description"] == "A glob."


def test_types_enum_optional_lists_dicts_nested_models_and_field_constraints():
    @tool
    def place(
        order: Order,
        unit: Unit = Unit.CELSIUS,
        note: Optional[str] = None,  # noqa: UP045 - the old spelling must work too
        tags: list[str] | None = None,
        counts: dict[str, int] | None = None,
        quantity: Annotated[int, Field(description="How many", ge=1, le=10)] = 1,
    ) -> str:
        """Place an order.

        Args:
            quantity: Ignored: the Field description wins.
        """
        return "ok"

    props = place.parameters["properties"]
    assert place.parameters["required"] == ["order"]
    # Nested models are inlined (no $ref) so small models can read them.
    assert "$ref" not in json.dumps(place.parameters)
    assert props["order"]["properties"]["ship_to"]["properties"]["city"]["description"] == "City name"
    assert props["unit"]["enum"] == ["c", "f"]
    assert {"type": "null"} in props["note"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}} in props["tags"]["anyOf"]
    assert props["quantity"] == {
        "type": "integer",
        "description": "How many",
        "minimum": 1,
        "maximum": 10,
        "default": 1,
    }

    args = place.validate({"order": {"items": ["a"], "ship_to": {"city": "Paris"}}, "unit": "f", "quantity": "3"})
    assert isinstance(args["order"], Order) and args["order"].ship_to.city == "Paris"
    assert args["unit"] is Unit.FAHRENHEIT
    assert args["quantity"] == 3


class Node(BaseModel):
    name: str
    children: list[Node] = []


def test_recursive_models_keep_a_reference_and_data_keeps_its_keys():
    @tool
    def walk(tree: Node, meta: dict | None = None) -> str:
        """Walk a tree."""
        return tree.name + "".join(child.name for child in tree.children)

    def described(meta: dict = {"title": "kept"}) -> str:  # noqa: B006
        """Keeps the default's keys."""
        return ""

    assert tool(described).parameters["properties"]["meta"]["default"] == {"title": "kept"}
    node = walk.parameters["$defs"]["Node"]
    assert node["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert walk.call({"tree": {"name": "a", "children": [{"name": "b"}, {"name": "c"}]}}) == "abc"


def test_validation_lists_every_problem():
    @tool
    def f(n: Annotated[int, Field(ge=1)], mode: Literal["a", "b"]) -> int:
        """F."""
        return n

    with pytest.raises(ToolArgumentsError) as info:
        f.validate({"n": 0, "mode": "z", "extra": 1})
    errors = info.value.errors
    assert any(e.startswith("n: Input should be greater than or equal to 1") for e in errors)
    assert any(e.startswith("mode: Input should be 'a' or 'b'") for e in errors)
    assert "extra: unknown parameter" in errors
    with pytest.raises(ToolArgumentsError, match="mode: field required"):
        f.validate({"n": 2})


def test_options_name_description_approval_timeout():
    @tool(name="rm", description="Remove a file.", requires_approval=True, timeout=5)
    def remove(path: str) -> str:
        """Not this."""
        return path

    assert (remove.name, remove.description, remove.requires_approval, remove.timeout) == (
        "rm",
        "Remove a file.",
        True,
        5,
    )
    assert repr(remove) == "Tool('rm', requires_approval=True)"
    assert remove.sequential  # actions that need approval keep their order by default
    assert not tool(sequential=False, requires_approval=True)(remove.fn).sequential
    assert tool(sequential=True)(remove.fn).sequential and not tool(remove.fn).sequential


def test_async_tools_and_sync_tools_run_with_call_and_acall():
    @tool
    async def slow_double(x: int) -> int:
        """Double."""
        await asyncio.sleep(0)
        return 2 * x

    @tool
    def thread_name(x: int) -> str:
        """Which thread runs me."""
        return threading.current_thread().name

    assert slow_double.is_async and not thread_name.is_async
    assert slow_double.call({"x": "4"}) == 8
    assert asyncio.run(slow_double.acall({"x": 5})) == 10
    # Sync tools called from async code run in a worker thread, not on the loop's thread.
    assert asyncio.run(thread_name.acall({"x": 1})) != threading.current_thread().name


def test_methods_decorated_in_a_class_and_bound_methods():
    class Counter:
        def __init__(self, start: int) -> None:
            self.value = start

        @tool
        def add(self, amount: int) -> int:
            """Add to the counter.

            Args:
                amount: How much.
            """
            self.value += amount
            return self.value

        def get(self) -> int:
            """Current value."""
            return self.value

    a, b = Counter(10), Counter(100)
    assert "self" not in a.add.parameters["properties"]
    assert a.add.call({"amount": 1}) == 11
    assert b.add.call({"amount": 1}) == 101
    assert a.value == 11 and b.value == 101
    assert a.add is a.add  # one Tool per instance
    bound = tool(b.get)
    assert bound.parameters["properties"] == {}
    assert bound.call({}) == 101


def test_callable_objects_partials_and_slotted_classes():
    class Adder:
        """Adds a constant."""

        def __call__(self, a: int) -> int:
            """Add five.

            Args:
                a: A number.
            """
            return a + 5

    adder = tool(name="add5")(Adder())
    assert adder.description == "Add five."
    assert adder.parameters["properties"]["a"] == {"type": "integer", "description": "A number."}
    assert adder.call({"a": 1}) == 6

    def power(base: int, exp: int) -> int:
        """Raise a number to a power.

        Args:
            base: The base.
        """
        return base**exp

    square = tool(name="square")(functools.partial(power, exp=2))
    assert square.description == "Raise a number to a power."
    assert square.parameters["required"] == ["base"]
    assert square.call({"base": 3}) == 9

    class Slotted:
        __slots__ = ()

        @tool
        def echo(self, x: int) -> int:
            """Echo."""
            return x

    assert Slotted().echo.call({"x": 2}) == 2


def test_from_openai_uses_the_hand_written_schema_and_checks_it():
    schema = {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "enum": [5, 10]}},
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    }
    t = Tool.from_openai(schema, lambda query, limit=5: f"{query}:{limit}")
    assert t.to_openai() == schema
    assert t.call({"query": "cats", "limit": 10}) == "cats:10"
    with pytest.raises(ToolArgumentsError) as info:
        t.validate({"limit": "many", "other": 1})
    assert set(info.value.errors) == {
        "query: field required",
        "other: unknown parameter",
        "limit: expected integer, got str 'many'",
    }
    with pytest.raises(ToolDefinitionError):
        Tool.from_openai({"function": {"description": "no name"}}, print)


def test_hand_written_schemas_share_the_parsers_json_type_check():
    # anyOf/oneOf, type lists and Python spellings ("int") are read as the parser reads them (format.coerce):
    # before, only a top-level "type" string was checked and the rest let anything through.
    t = Tool.from_openai(
        {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {
                    "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "x": {"type": ["number", "string"]},
                    "k": {"type": "int"},
                    "mode": {"enum": ["a", "b"]},
                },
            },
        },
        lambda **kw: kw,
    )
    assert t.call({"n": None, "x": 1.5, "k": 3, "mode": "a"}) == {"n": None, "x": 1.5, "k": 3, "mode": "a"}
    assert t.validate({"n": 2, "x": "1.5"}) == {"n": 2, "x": "1.5"}
    with pytest.raises(ToolArgumentsError) as info:
        t.validate({"n": "2", "x": [1], "k": True, "mode": "c"})
    assert info.value.errors == [
        "n: expected integer or null, got str '2'",
        "x: expected number or string, got list [1]",
        "k: expected integer, got bool True",
        "mode: must be one of ['a', 'b'], got 'c'",
    ]
    # the parser converts value text by the same schema before a tool ever sees it
    arguments, error = convert_arguments("f", {"n": "2", "k": "3.0"}, [t])
    assert (arguments, error) == ({"n": 2, "k": 3}, None)


@pytest.mark.parametrize(
    ("fn_source", "reason"),
    [
        ("def f(x): pass", "no type annotation"),
        ("def f(*args: int): pass", "takes *args"),
        ("def f(**kw: int): pass", "takes *kw"),
        ("def f(lock: threading.Lock): pass", "parameter 'lock'"),
        ("def f(cb: Callable[[int], int]): pass", "parameter 'cb'"),
        ("def f(x: 'NoSuchType'): pass", "cannot resolve the type hints"),
    ],
)
def test_unbuildable_schemas_fail_at_decoration_time_with_the_reason(fn_source, reason):
    from collections.abc import Callable

    namespace = {"threading": threading, "Callable": Callable}
    exec(fn_source, namespace)
    with pytest.raises(ToolDefinitionError, match=reason.replace("*", r"\*")):
        tool(namespace["f"])


def test_bad_names_and_duplicates():
    with pytest.raises(ToolDefinitionError, match=r"name=\.\.\."):
        tool(lambda: None)

    def a() -> None:
        """A."""

    assert as_tools([a])[0].name == "a"
    with pytest.raises(ToolDefinitionError, match="two tools are named a"):
        as_tools([a, tool(a)])


def test_return_values_become_content_parts():
    @dataclass
    class Reading:
        temp: float

    image = Image.new("RGB", (4, 4), "red")
    assert to_content("hi") == [TextPart("hi")]
    assert to_content(3) == [TextPart("3")]
    assert to_content(2.5) == [TextPart("2.5")]
    assert to_content(True) == [TextPart("true")]
    assert to_content(None) == [TextPart("null")]
    assert to_content({"a": [1, "é"]}) == [TextPart('{"a": [1, "é"]}')]
    assert to_content([1, 2]) == [TextPart("[1, 2]")]
    assert to_content(Address(city="Paris")) == [TextPart('{"city":"Paris","street":null}')]
    assert to_content(Reading(21.5)) == [TextPart('{"temp": 21.5}')]
    assert to_content(Unit.CELSIUS) == [TextPart("c")]
    (part,) = to_content(image)
    assert isinstance(part, ImagePart) and part.open().size == (4, 4)
    given = ImagePart(image)
    assert to_content(given) == [given]
    mixed = to_content(["Here it is:", image, 7])
    assert [type(p).__name__ for p in mixed] == ["TextPart", "ImagePart", "TextPart"]
    assert mixed[2] == TextPart("7")


# ---------------------------------------------------------------------------- hardening (issue 10)


def test_validation_errors_about_huge_integers_are_normal_errors():
    huge = 10**5000

    def f(n: Annotated[int, Field(le=10)], s: str) -> int:
        return n

    with pytest.raises(ToolArgumentsError) as caught:  # was: ValueError "Exceeds the limit (4300 digits)"
        Tool(f).validate({"n": huge, "s": huge})
    assert caught.value.errors[0].startswith("n: Input should be less than or equal to 10 (got 1000")
    assert all(len(e) < 300 for e in caught.value.errors)
    hand_written = Tool.from_openai(
        {"name": "g", "parameters": {"type": "object", "properties": {"s": {"type": "string", "enum": ["a"]}}}},
        lambda s: s,
    )
    with pytest.raises(ToolArgumentsError, match="expected string, got int 1000"):
        hand_written.validate({"s": huge})
    assert Tool(f).validate({"n": 7, "s": "x"}) == {"n": 7, "s": "x"}


def test_exact_integers_of_any_size_round_trip_through_json():
    values = [10**5000 + 1, -(10**4400), 12, True, None, "text"]
    text = dumps_exact({"a": values, "b": {"c": 10**9000}}, ensure_ascii=False)
    assert json.loads(text, parse_int=text_int) == {"a": values, "b": {"c": 10**9000}}
    assert dumps_exact({"x": 1}) == json.dumps({"x": 1})
    assert text_int(int_text(-(10**7000) - 5)) == -(10**7000) - 5
    with pytest.raises(ValueError):
        text_int("12a" * 2000)


def test_display_text_escapes_everything_that_can_hide_or_reorder_text():
    hidden = {
        0x202E: "right-to-left override",
        0x202A: "left-to-right embedding",
        0x2066: "isolate",
        0x200B: "zero-width space",
        0x200D: "zero-width joiner",
        0x2060: "word joiner",
        0xFEFF: "byte order mark",
        0x00AD: "soft hyphen",
        0x061C: "arabic letter mark",
        0x1B: "escape (terminal sequences)",
        0x0D: "carriage return",
        0x7F: "delete",
        0x2028: "line separator",
        0x3164: "hangul filler (an invisible letter)",
        0xFE0F: "variation selector",
        0xE0041: "tag letter",
        0xD83D: "lone surrogate",
    }
    for point, what in hidden.items():
        escape = f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"
        assert display_text(f"a{chr(point)}b") == f"a{escape}b", what
    assert display_text("plain ASCII, 中文, émoji 😀") == "plain ASCII, 中文, émoji 😀"
    shown = display_arguments({"path": "invoice\u202egpj.exe", "n": 10**5000, "flags": ["a\u200b"]})
    assert shown.startswith("path='invoice\\u202egpj.exe', n=1000") and shown.endswith("flags=['a\\u200b']")


def run(coro):
    return asyncio.run(coro)


def test_the_thread_pool_is_bounded_and_queued_calls_wait_their_turn():
    pool = _DaemonThreads(limit=3)
    release = threading.Event()
    running: list[int] = []
    threads: set[int] = set()
    done = threading.Semaphore(0)

    def job(i: int):
        def go() -> None:
            running.append(i)
            threads.add(threading.get_ident())
            release.wait(10)
            done.release()

        return go

    for i in range(10):
        pool.submit(job(i))
    for _ in range(1000):  # the three workers each hold a call (the others queue) before any is released
        if len(running) == 3:
            break
        threading.Event().wait(0.01)
    assert sorted(running) == [0, 1, 2]
    release.set()
    for _ in range(10):
        assert done.acquire(timeout=10)
    assert sorted(running) == list(range(10)) and sorted(running[:3]) == [0, 1, 2]
    assert len(threads) == 3  # three workers did all ten calls


def test_a_call_cancelled_before_it_started_never_runs_and_hung_calls_do_not_starve_the_pool():
    set_thread_limit(2)
    ran: list[str] = []
    hang = threading.Event()

    def hung() -> None:
        ran.append("hung")
        hang.wait(10)

    async def scenario() -> str:
        first, second = run_in_thread(hung), run_in_thread(hung)
        queued = run_in_thread(ran.append, "queued")  # both workers are busy: it waits
        for _ in range(1000):
            if len(ran) == 2:
                break
            await asyncio.sleep(0.01)
        queued.cancel()
        for future in (first, second):  # the hung calls time out: abandoned, no longer counted
            future.cancel()
        return await asyncio.wait_for(run_in_thread(lambda: "fresh"), 10)

    try:
        assert run(scenario()) == "fresh"
        assert ran == ["hung", "hung"]  # the cancelled call never ran
    finally:
        hang.set()
        set_thread_limit(None)
    with pytest.raises(ValueError):
        set_thread_limit(0)
