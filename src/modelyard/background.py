"""Background work that outlives the request which happened to start it."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def detached(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run `work` as a task in a fresh context. A task started inside a request would inherit
    its context: its trace span (so an auto-instrumented database or HTTP call of a long-lived
    writer would join the first request's trace for good) and its cost scope."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())
