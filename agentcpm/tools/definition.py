"""Tool, @tool and as_tools: a function the model can call, with its schema, validation and calling."""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from ..errors import ToolDefinitionError
from .docstrings import parse_docstring
from .schema import _build_model, _check_json_schema, _model_schema, format_validation_error
from .threads import run_in_thread


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's parameters; ``errors`` lists what is wrong, one per line."""

    def __init__(self, tool_name: str, errors: list[str]) -> None:
        super().__init__(f"invalid arguments for {tool_name}: " + "; ".join(errors))
        self.tool_name = tool_name
        self.errors = errors


class Tool:
    """A function the model can call: name, description, JSON schema of its parameters, and how to run it.

    Make one with :func:`tool` (from a function's signature and docstring) or :meth:`from_openai` (from a
    schema written by hand). Calling the Tool object itself calls the plain function.

    >>> def add(a: int, b: int = 1) -> int:
    ...     '''Add two numbers.'''
    ...     return a + b
    >>> t = Tool(add)
    >>> t.to_openai()["function"]["name"], t.call({"a": "2"})
    ('add', 3)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        timeout: float | None = None,
        parameters: dict[str, Any] | None = None,
        sequential: bool | None = None,
    ) -> None:
        if not callable(fn):
            raise ToolDefinitionError(f"{fn!r} is not callable: a tool wraps a function or method")
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        self.fn: Callable[..., Any] = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not self.name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}", self.name):
            raise ToolDefinitionError(
                f"tool name {self.name!r} is not usable: use letters, digits, _ . - (at most 64), "
                "or pass name=... to @tool"
            )
        self.requires_approval = bool(requires_approval)
        # Tools that need approval act on the world, where order matters (click, then type).
        self.sequential = self.requires_approval if sequential is None else bool(sequential)
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"timeout of {self.name} must be positive seconds, got {timeout!r}")
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
        )
        self._bound: Any = None
        # A method decorated in a class body arrives as a plain function with ``self`` first.
        first = next(iter(inspect.signature(fn).parameters), "") if inspect.isfunction(fn) else ""
        self._skip_self = first in ("self", "cls")
        self._positional: list[str] = []
        self._model: type[BaseModel] | None = None
        qualname = getattr(fn, "__qualname__", self.name)
        if parameters is not None:
            if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
                raise ToolDefinitionError(f"parameters of {self.name} must be a JSON schema of type object")
            self.parameters: dict[str, Any] = {"type": "object", "properties": {}, **parameters}
            self.description = description if description is not None else parse_docstring(inspect.getdoc(fn))[0]
        else:
            model, self._positional, doc_description, _ = _build_model(fn, self._skip_self)
            self._model = model
            self.parameters = _model_schema(model, qualname)
            self.description = description if description is not None else doc_description
        functools.update_wrapper(self, fn, updated=())

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_openai(
        cls,
        schema: dict[str, Any],
        fn: Callable[..., Any],
        *,
        requires_approval: bool = False,
        timeout: float | None = None,
        sequential: bool | None = None,
    ) -> Tool:
        """A tool from a hand-written OpenAI schema (``{"type": "function", "function": {...}}`` or the bare
        ``{"name", "description", "parameters"}``); ``fn`` is called with the arguments as keywords.

        >>> t = Tool.from_openai({"name": "echo", "parameters": {"type": "object",
        ...     "properties": {"text": {"type": "string"}}, "required": ["text"]}}, lambda text: text)
        >>> t.call({"text": "hi"})
        'hi'
        """
        function = schema.get("function", schema) if isinstance(schema, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            raise ToolDefinitionError(f"not an OpenAI tool schema (no function name): {schema!r}")
        return cls(
            fn,
            name=str(function["name"]),
            description=str(function.get("description") or ""),
            parameters=dict(function.get("parameters") or {"type": "object", "properties": {}}),
            requires_approval=requires_approval,
            timeout=timeout,
            sequential=sequential,
        )

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI tool schema ``{"type": "function", "function": {name, description, parameters}}``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def __repr__(self) -> str:
        flags = ", requires_approval=True" if self.requires_approval else ""
        return f"Tool({self.name!r}{flags})"

    # methods: ``@tool`` inside a class body gives a Tool per instance ----------------------------------
    def __get__(self, instance: Any, owner: Any = None) -> Tool:
        if instance is None or not self._skip_self:
            return self
        cache = getattr(instance, "__dict__", {}).setdefault("__agentcpm_tools__", {})  # {}: __slots__ classes
        bound = cache.get(self.name)
        if bound is None:
            bound = copy.copy(self)
            bound._bound = instance
            cache[self.name] = bound
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._bound is not None:
            return self.fn(self._bound, *args, **kwargs)
        return self.fn(*args, **kwargs)

    # validation and calling -------------------------------------------------------------------------
    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check and convert the model's arguments; raises :class:`ToolArgumentsError` listing every problem.

        >>> def f(n: int) -> int: return n
        >>> Tool(f).validate({"n": "3"})
        {'n': 3}
        """
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(self.name, [f"arguments must be a JSON object, got {type(arguments).__name__}"])
        if self._model is None:
            errors = _check_json_schema(arguments, self.parameters)
            if errors:
                raise ToolArgumentsError(self.name, errors)
            return dict(arguments)
        try:
            model = self._model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, format_validation_error(exc)) from None
        # Keep nested models as model instances, as the function's annotations promise.
        return {name: getattr(model, name) for name in type(model).model_fields}

    def _invoke(self, arguments: dict[str, Any]) -> Any:
        args = [arguments.pop(name) for name in self._positional if name in arguments]
        return self(*args, **arguments)

    def call(self, arguments: dict[str, Any]) -> Any:
        """Validate ``arguments`` and run the tool here, returning what the function returned
        (an async tool is run to completion with ``asyncio.run``)."""
        result = self._invoke(self.validate(arguments))
        if inspect.isawaitable(result):
            return asyncio.run(_await(result))
        return result

    async def acall(self, arguments: dict[str, Any], *, validate: bool = True) -> Any:
        """Validate ``arguments`` (unless ``validate=False``: already done) and run the tool: async tools on
        this loop, sync tools in a daemon worker thread."""
        validated = self.validate(arguments) if validate else dict(arguments)
        if self.is_async:
            return await self._invoke(validated)
        result = await run_in_thread(self._invoke, validated)
        if inspect.isawaitable(result):
            result = await result
        return result


async def _await(value: Any) -> Any:
    return await value


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
    sequential: bool | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
    sequential: bool | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function (sync or async, or a method) into a :class:`Tool`; use bare or with options.

    The schema comes from the signature and the docstring (Google, NumPy or Sphinx style). A function
    whose schema cannot be built raises :class:`~agentcpm.errors.ToolDefinitionError` right here.
    ``requires_approval``: the agent asks before each call. ``timeout``: seconds per call. ``sequential``:
    an answer that calls this tool runs all its calls one by one, in order, instead of concurrently
    (default: the same as ``requires_approval``, since actions on the world must keep their order).

    >>> @tool(requires_approval=True, timeout=30)
    ... def delete_file(path: str) -> str:
    ...     '''Delete a file.'''
    ...     return "deleted"
    >>> delete_file.requires_approval, delete_file.timeout
    (True, 30)
    """

    def make(function: Callable[..., Any]) -> Tool:
        return Tool(
            function,
            name=name,
            description=description,
            requires_approval=requires_approval,
            timeout=timeout,
            sequential=sequential,
        )

    return make(fn) if fn is not None else make


def as_tools(tools: Sequence[Any]) -> list[Tool]:
    """Tools, plain functions and bound methods -> a list of :class:`Tool` (names must be unique)."""
    out = [t if isinstance(t, Tool) else Tool(t) for t in tools]
    names = [t.name for t in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ToolDefinitionError(f"two tools are named {', '.join(duplicates)}: give one of them name=...")
    return out
