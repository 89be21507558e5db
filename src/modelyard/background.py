"""Work that runs apart from its caller: background tasks that outlive the request which
happened to start them, and a coroutine run to completion from sync code."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def detached(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run `work` as a task in a fresh context. A task started inside a request would inherit
    its context: its trace span (so an auto-instrumented database or HTTP call of a long-lived
    writer would join the first request's trace for good) and its cost scope."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())


def run_blocking(work: Callable[[], Coroutine[Any, Any, T]], *, name: str = "modelyard") -> T:
    """Run the coroutine `work()` makes to completion from sync code, even inside a running
    event loop (uvicorn builds the app in its loop): in a helper thread with its own loop.
    Whatever the coroutine opens is bound to that loop, so it must close it before returning."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(work())
        except BaseException as exc:  # handed back to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    value: T = result["value"]
    return value
