"""Users' own Python functions named in config (`module:function`): importing them, and
calling them without holding the event loop."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from modelyard.errors import ConfigError


def import_function(dotted: str) -> Callable[..., Any]:
    """The callable `module:function` names; ConfigError saying what is missing otherwise."""
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = ""
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and f"{module_name}.".startswith(f"{missing}."):
            # The module itself was not found (not one it imports): the console script does not
            # look in the config's folder or the working directory.
            hint = "; install it, or add the folder that holds it to PYTHONPATH"
        raise ConfigError(
            f"cannot import module {module_name!r} for {dotted!r}: {exc}{hint}"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"module {module_name!r} has no callable {attr!r}")
    return function  # type: ignore[no-any-return]


async def call_function(function: Callable[..., Any], *args: Any) -> Any:
    """What a user's function returns (awaited when awaitable): an async one runs on the event
    loop; a synchronous one in a worker thread, so a slow one (I/O, a lock, heavy work) holds
    neither the other requests nor the deadline (abandoned at it, the thread runs to its end)."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):  # a callable object whose __call__ is async
        result = await result
    return result
