"""Users' own Python functions named in config (`module:function`): importing them, and
calling them without holding the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import numbers
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

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


DEFAULT_THREADS = 32
MAX_THREADS = 1024


class FunctionThreads:
    """The worker threads users' synchronous functions run in (`functions: {threads: N}` in a
    config, 32 by default), apart from asyncio's default pool (min(32, cores + 4) threads, 6 on
    2 cores), which also resolves provider host names and serves key lookups and reloads: a few
    hung functions (abandoned at a deadline, their threads run on) must not stall those. The
    threads start on first use and, like the default pool's, end when their functions return."""

    def __init__(self, size: int = DEFAULT_THREADS) -> None:
        if not 1 <= size <= MAX_THREADS:
            raise ValueError(f"{size} threads; give 1 to {MAX_THREADS}")
        self.size = size
        self._pool: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        """The pool, made on first use."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="modelyard-function")
        return self._pool

    async def aclose(self) -> None:
        """Take no more calls; the ones running finish in their threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)


SHARED_THREADS = FunctionThreads()
"""The pool for functions called outside a config's build (an evaluation's scorers)."""


async def call_function(
    function: Callable[..., Any], *args: Any, threads: FunctionThreads = SHARED_THREADS
) -> Any:
    """What a user's function returns (awaited when awaitable): an async one runs on the event
    loop; a synchronous one in a worker thread of `threads`, so a slow one (I/O, a lock, heavy
    work) holds neither the other requests nor the deadline (abandoned at it, the thread runs to
    its end)."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    context = contextvars.copy_context()  # as asyncio.to_thread: the caller's span, request id
    call = functools.partial(context.run, function, *args)
    result = await asyncio.get_running_loop().run_in_executor(threads.executor(), call)
    if inspect.isawaitable(result):  # a callable object whose __call__ is async
        result = await result
    return result


def unit_value(value: object, *, bools: bool) -> float | None:
    """What a user's function returned as a number from 0 to 1 (numpy's scalars too, and a bool
    as 0 or 1 when `bools`), or None when it is not one (NaN, a string, a bool when not `bools`)."""
    if isinstance(value, bool | np.bool_):
        return float(value) if bools else None
    if not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if 0 <= number <= 1 else None
