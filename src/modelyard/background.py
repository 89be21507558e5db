"""Work that runs apart from its caller: background tasks that outlive the request which
happened to start them, a coroutine run to completion from sync code, and how a background
writer tells of an outage of what it writes to."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from modelyard.errors import ModelError, redact

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


def error_text(exc: BaseException) -> str:
    """What a log line says of `exc`: our own errors' message (no HTTP status), anything
    else's text with whatever looks like a secret redacted."""
    return exc.message if isinstance(exc, ModelError) else redact(str(exc))


class WriteOutage:
    """The outage of a background writer's store, in two log lines however long it lasts:
    one when writes start failing (what failed, and that what is waiting is kept and
    retried), one when a write goes through again (how long it lasted, how much it held
    back). A writer retrying every second would otherwise log every second of it."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        items: str,
        retry_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        """The writer and where it writes (no secret), as the lines name it."""
        self.items = items
        """What it writes, as a count names them (`request record(s)`)."""
        self.retry_every = retry_every
        self._clock = clock
        self._since: float | None = None
        self._dropped = 0
        """Items refused since the queue filled, told once at the first and in sum at the end."""

    @property
    def ongoing(self) -> bool:
        """Whether the last write failed."""
        return self._since is not None

    def failed(self, exc: BaseException, waiting: int) -> None:
        """A write failed with `exc`, `waiting` items kept to retry: logged once an outage."""
        if self._since is not None:
            return
        self._since = self._clock()
        self.log.error(
            "%s: cannot write, %s; keeping the %d %s waiting (and those to come) and "
            "retrying every %g s; told again when they are written",
            self.what,
            error_text(exc),
            waiting,
            self.items,
            self.retry_every,
        )

    def dropped(self, count: int, limit: int) -> None:
        """`count` items were refused, the queue holding `limit` already: logged at the first
        refusal of an outage (a full queue refuses every item after it), summed when it ends."""
        if not self._dropped:
            self.log.error(
                "%s: the queue of %d %s waiting is full; dropping those that come until a "
                "write goes through (told then how many)",
                self.what,
                limit,
                self.items,
            )
        self._dropped += count

    def written(self, count: int) -> None:
        """A write of `count` items went through: logged if it ends an outage."""
        dropped, self._dropped = self._dropped, 0
        lost = f"; dropped {dropped} {self.items} while the queue was full" if dropped else ""
        if self._since is None:  # no write had failed: the writes only fell behind
            if dropped:
                self.log.warning("%s: writing keeps up again%s", self.what, lost)
            return
        lasted, self._since = self._clock() - self._since, None
        self.log.warning(
            "%s: writing again after %.0f s; wrote the %d %s held back meanwhile%s",
            self.what,
            lasted,
            count,
            self.items,
            lost,
        )
