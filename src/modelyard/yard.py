"""The library's front door: a loaded config you can ask things of.

yard = modelyard.load("config.yaml")
response = await yard.complete("support", "Where is my order 1234?")
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import threading
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import replace
from typing import Any, TypeVar, get_args

from modelyard.background import detached
from modelyard.config.build import Built
from modelyard.config.loader import LoadedConfig
from modelyard.config.resources import Resources
from modelyard.errors import BadRequestError, ModelTimeoutError, NotFoundError, YardClosedError
from modelyard.live import ConfigDiff, LiveConfig
from modelyard.loops import CLOSE_ELSEWHERE, PerLoop, ended, on_loop
from modelyard.model import Embedder, Model
from modelyard.resilience.deadline import DEADLINE
from modelyard.resilience.health import HealthReport
from modelyard.resilience.streams import closing
from modelyard.suggest import did_you_mean
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    Role,
)
from modelyard.watch import ConfigWatch

Prompt = str | ChatRequest | Sequence[Message | Mapping[str, Any]]
"""A question as text, a list of messages (Message or {"role", "content"} dicts), or a request."""


_FIELDS = frozenset(f.name for f in dataclasses.fields(ChatRequest))
_ROLES = get_args(Role)
T = TypeVar("T")


def as_request(prompt: Prompt, **fields: Any) -> ChatRequest:
    """`prompt` as a ChatRequest, with `fields` (temperature, max_tokens, ...) set on it.
    BadRequestError names what is wrong: an unknown field, no message, an unknown role, text
    that is not valid Unicode (a lone surrogate, as undecodable bytes in argv become)."""
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        known = sorted(_FIELDS - {"messages"})
        # One slip ('max_tokns') gets its likely fix named before the list, as config keys do.
        hint = (
            did_you_mean(unknown[0], known) if len(unknown) == 1 else f"; known: {', '.join(known)}"
        )
        raise BadRequestError(f"unknown request field {', '.join(map(repr, unknown))}{hint}")
    if isinstance(prompt, ChatRequest):
        request = replace(prompt, **fields) if fields else prompt
    else:
        if isinstance(prompt, str):
            messages: tuple[Message, ...] = (Message(role="user", content=prompt),)
        else:
            messages = tuple(
                m
                if isinstance(m, Message)
                else Message(role=m["role"], content=m.get("content") or "")
                for m in prompt
            )
        request = ChatRequest(messages=messages, **fields)
    _check(request)
    return request


def _check(request: ChatRequest) -> None:
    if not request.messages:
        raise BadRequestError("the request has no messages")
    for i, message in enumerate(request.messages):
        if message.role not in _ROLES:
            raise BadRequestError(
                f"messages[{i}].role: expected {', '.join(_ROLES)}, got {message.role!r}"
            )
        _check_text(message.text, f"messages[{i}]")
    _check_text(request.system or "", "system")


def _check_deadline(target: str, deadline: float | None) -> None:
    """A deadline already passed fails as the graph would, saying what a deadline is: one
    given as seconds (`deadline=5`) reads as a time.monotonic() instant long past."""
    if deadline is None:
        return
    ago = time.monotonic() - deadline
    if ago >= 0:
        raise ModelTimeoutError(
            f"deadline {deadline:g} passed {ago:.1f} s before the call to {target} started (a "
            "deadline is a time.monotonic() instant, not seconds from now: time.monotonic() + "
            f"{deadline:g} is {deadline:g} s from now)",
            model=target,
            code=DEADLINE,
            retryable=False,
        )


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            f"{where}: not valid Unicode text (a lone surrogate at character {exc.start}; "
            "undecodable bytes read as text become one)"
        ) from None


class Yard:
    """A built config: its systems, models and embedders, ready to answer. One that `load`
    made can `reload()` its file; one made from a `Built` serves that build as it is."""

    def __init__(
        self,
        built: Built,
        resources: Resources,
        *,
        live: LiveConfig | None = None,
        watch: bool = False,
    ) -> None:
        self._built = built
        self.resources = resources
        self._live = live
        """The generations of the config file (`load`), which `reload` swaps."""
        self._watch = watch
        self._closed = False
        self._loops: PerLoop[asyncio.Task[None]] = PerLoop()
        """Each loop served now: the task that waits for its end (`_until_loop_ends`)."""

    @property
    def built(self) -> Built:
        """The build new calls run on (the latest one `reload` swapped in)."""
        return self._built if self._live is None else self._live.current.built

    @property
    def loaded(self) -> LoadedConfig:
        """The config this yard was built from."""
        return self.built.loaded

    @property
    def version(self) -> str:
        """A short hash identifying the config text."""
        return self.built.loaded.version

    @property
    def systems(self) -> Mapping[str, Model]:
        """Systems by name."""
        return self.built.systems

    @property
    def models(self) -> Mapping[str, Model]:
        """Models by name."""
        return self.built.models

    @property
    def embedders(self) -> Mapping[str, Embedder]:
        """Embedders by name, as the nodes using them hold them; `embedder(name)` is one with
        its budgets and ledger, as `embed` calls it."""
        return self.built.embedders

    @property
    def notes(self) -> list[str]:
        """What the build wants the user told once (disabled providers, skipped stages)."""
        return self.built.notes

    def _check_open(self) -> None:
        if self._closed:
            raise YardClosedError(
                f"the yard of {self.loaded.path} is closed: load the config again to ask it more"
            )

    def get(self, name: str) -> Model:
        """The system or model called `name`; NotFoundError listing what exists otherwise,
        YardClosedError once the yard is closed."""
        self._check_open()
        model = self.built.entries.get(name)
        if model is None:
            raise NotFoundError(
                f"no system or model named {name!r}"
                + did_you_mean(name, self.available(), listed="available"),
                code="model_not_found",
            )
        return model

    def names(self) -> list[str]:
        """Every system and model name, systems first."""
        return [*sorted(self.built.systems), *sorted(self.built.models)]

    def available(self) -> list[str]:
        """The names that can answer, systems first: every one but the disabled models (an
        optional provider without its key), which a caller told of one would find refused."""
        return [n for n in self.names() if n not in self.built.disabled]

    def _prepare(self, target: str, prompt: Prompt, fields: dict[str, Any]) -> ChatRequest:
        request = as_request(prompt, **fields)
        _check_deadline(target, request.deadline)
        return request.with_budget(self.built.loaded.config.default_deadline)

    def _call(self) -> contextlib.AbstractContextManager[Yard]:
        """The yard one call runs on to its end: refused once closed; else the build serving
        now, held so that a reload closes nothing it uses until the call has finished. Pools
        are the running loop's own (see `_enter`)."""
        self._check_open()
        self._enter()
        return contextlib.nullcontext(self) if self._live is None else self._live.serving()

    def _enter(self) -> None:
        """Serve on the running loop. On a loop new to this yard (each `asyncio.run` of a
        script, each test's loop, each thread's loop in a threaded server) a task waits for the
        loop's end, as its runner cancels what is left, to close the pools and stop the writers
        it used there (other loops keep theirs), and watches the file for `watch=True`."""
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._loops.put(loop, detached(self._until_loop_ends()))

    async def _serve_here(self) -> None:
        self._enter()

    async def _until_loop_ends(self) -> None:
        watch = None
        if self._watch and self._live is not None:
            watch = detached(ConfigWatch(self._live).run(catch_up=True))
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.wait([watch])
            await self.resources.leave_loop()
            self._loops.pop(asyncio.get_running_loop(), None)

    async def _leave(self) -> None:
        """End `_until_loop_ends` on every loop served now (closing): the running loop's, then
        each other thread's, on its loop, waited for a few seconds each."""
        here = asyncio.get_running_loop()
        for loop in sorted(self._loops, key=lambda loop: loop is not here):
            task = self._loops.get(loop)
            if task is not None:
                await on_loop(loop, functools.partial(ended, task), within=CLOSE_ELSEWHERE)

    async def complete(self, target: str, prompt: Prompt, **fields: Any) -> ChatResponse:
        """Ask system or model `target`; `fields` set request options (max_tokens, ...)."""
        with self._call() as yard:
            return await yard.get(target).complete(yard._prepare(target, prompt, fields))

    async def stream(self, target: str, prompt: Prompt, **fields: Any) -> AsyncIterator[Chunk]:
        """Ask `target` and stream the answer; the last chunk carries the whole response."""
        with self._call() as yard:
            model = yard.get(target)
            # Closed even when the caller stops reading: the ledger and budgets settle what the
            # stream spent now, not when (or if) the garbage collector gets to it.
            async with closing(model.stream(yard._prepare(target, prompt, fields))) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def health(self) -> HealthReport:
        """Every circuit breaker's state now (what the gateway's /readyz reports)."""
        self._check_open()
        return await self.built.health.report()

    def embedder(self, name: str) -> Embedder:
        """The embedder called `name` as callers reach it: its calls charged to the budgets and
        recorded in the ledger, as a system's are. NotFoundError listing what exists otherwise."""
        self._check_open()
        embedder = self.built.embedder_entries.get(name)
        if embedder is None:
            raise NotFoundError(
                f"no embedder named {name!r}; available: "
                f"{', '.join(sorted(self.built.embedder_entries)) or 'none'}",
                code="model_not_found",
            )
        return embedder

    async def embed(
        self,
        target: str,
        inputs: str | Iterable[str],
        *,
        key_id: str | None = None,
        tags: Iterable[str] = (),
    ) -> EmbeddingResponse:
        """Embed one text or many with embedder `target` (`key_id` and `tags` select the key
        and tag budgets it is charged to, as for `complete`), within the config's
        `default_deadline`."""
        with self._call() as yard:
            embedder = yard.embedder(target)
            texts = (inputs,) if isinstance(inputs, str) else tuple(inputs)
            if not texts:
                raise BadRequestError("nothing to embed: no input")
            for i, text in enumerate(texts):
                _check_text(text, f"inputs[{i}]")
            request = EmbeddingRequest(inputs=texts, key_id=key_id, tags=tuple(tags))
            return await embedder.embed(request.with_budget(yard.loaded.config.default_deadline))

    async def reload(self) -> ConfigDiff:
        """Read, validate and build the config file anew, then serve it: calls already running
        finish on the build they started with; budgets, caches, the ledger and pools whose spec
        is unchanged are kept (the `state:` store is the one loaded first). A config that does
        not validate or build raises ConfigError and the old one keeps serving. Returns what
        changed."""
        self._check_open()
        if self._live is None:
            raise RuntimeError(
                f"this yard of {self.loaded.path} was made from a build, not loaded from its "
                "file: only a yard from modelyard.load can reload"
            )
        self._enter()
        return await self._live.reload()

    async def aclose(self) -> None:
        """Close connection pools and local models; calls after it raise YardClosedError."""
        self._closed = True
        await self._leave()
        if self._live is not None:
            await self._live.aclose()
            return
        for model in self.built.models.values():
            await model.aclose()
        await self.resources.aclose()

    async def __aenter__(self) -> Yard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def load(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    resources: Resources | None = None,
    watch: bool = False,
) -> Yard:
    """Load, validate and build the config at `path`; `watch=True` reloads it when the file
    changes (from the first call on, on each event loop the yard serves)."""
    live = LiveConfig(path, env=env, resources=resources)
    return Yard(live.current.built, live.resources, live=live, watch=watch)


class _LoopThread:
    """An event loop running in a daemon thread of its own, which any thread hands work to
    (asyncio.run_coroutine_threadsafe) and waits for. It holds no reference to its SyncYard, so
    that can be collected. `lock` orders handing work over against stopping: once stopping,
    nothing more is handed over (it would never run, and its caller would wait for good)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.stopping = False
        self.calls: set[asyncio.Task[Any]] = set()  # the callers' work; touched on the loop only
        self.thread = threading.Thread(target=self._serve, name="modelyard-sync", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `work` on the loop, as a call that stopping cancels. Hold `lock`."""
        return asyncio.run_coroutine_threadsafe(self._tracked(work), self.loop)

    async def _tracked(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            return await work
        finally:
            self.calls.discard(task)

    def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel `task` without waiting (once stopping, stopping cancels it)."""
        with self.lock:
            if not self.stopping:
                self.loop.call_soon_threadsafe(task.cancel)

    async def stop(self, yard: Yard) -> None:
        """Cancel the calls still running (their callers are told the yard is closed) but not
        the loop's own tasks (the ledger's writer), close the yard, then stop the loop, which
        the thread then closes."""
        try:
            calls = list(self.calls)
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            await yard.aclose()
        finally:
            self.loop.call_soon(self.loop.stop)


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _close_sync(yard: Yard, runner: _LoopThread) -> None:
    """Close a SyncYard's yard on its loop, then the loop, and wait for it; but not on a thread
    running an event loop (a SyncYard collected in a notebook, or on its own loop), which must
    not be blocked: the closing goes on in the yard's thread."""
    with runner.lock:
        runner.stopping = True
        yard._closed = True  # every call from now on is refused, before any is handed over
        closing = asyncio.run_coroutine_threadsafe(runner.stop(yard), runner.loop)
    if not _running_loop():
        closing.result()
        runner.thread.join()


class SyncYard:
    """A blocking facade over a Yard for scripts and threaded servers: its calls run on an
    event loop in a thread of its own, so many threads can share one SyncYard and their calls
    run at the same time. Not for code already inside a running loop (a notebook): there, await
    the Yard itself. One left open is closed when it is collected or the interpreter exits, so
    a script's spend still reaches the ledger (its writes are batched)."""

    def __init__(self, yard: Yard) -> None:
        self.yard = yard
        self._runner = _LoopThread()
        self._closer = weakref.finalize(self, _close_sync, yard, self._runner)
        # At exit, before the interpreter stops its worker threads (as concurrent.futures
        # does): closing writes through them (the ledger's SQLite thread). An atexit hook, which
        # weakref.finalize uses, runs after they are gone, and the writes failed.
        self._closer.atexit = False
        threading._register_atexit(self._closer)  # type: ignore[attr-defined]

    def _run(self, what: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine `work()` makes on the yard's loop and wait for it. Raise, before
        anything is started, when it cannot run: the yard is closed, or this thread already runs
        an event loop (which waiting would block). A call that close() cancels is told the yard
        is closed."""
        with self._runner.lock:
            self.yard._check_open()
            if _running_loop():
                raise RuntimeError(
                    f"SyncYard.{what} cannot run inside a running event loop (a notebook, an "
                    f"async function): await the Yard's own {what} there (modelyard.load), or "
                    "call it from another thread"
                )
            future = self._runner.submit(work())
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            self.yard._check_open()
            raise
        except BaseException:  # KeyboardInterrupt while waiting: stop the call too
            future.cancel()
            raise

    def complete(self, target: str, prompt: Prompt, **fields: Any) -> ChatResponse:
        """Ask `target` and wait for the answer."""
        return self._run("complete", lambda: self.yard.complete(target, prompt, **fields))

    def stream(self, target: str, prompt: Prompt, **fields: Any) -> Iterator[Chunk]:
        """Ask `target` and yield the answer's chunks as they come; the last carries the whole
        response. Stopping early closes the stream (its spend is settled then).

        One task reads the stream and hands each chunk over: stepping the async stream from a
        new task per chunk would run each step in a fresh copy of the context, losing the
        request's scope (its deadline, its spend meter) between chunks."""
        yard = self.yard  # not self: a reader left running must not keep this SyncYard alive
        handed: asyncio.Queue[Chunk | Exception | None] = asyncio.Queue(maxsize=1)

        async def read() -> None:
            try:
                async for chunk in yard.stream(target, prompt, **fields):
                    await handed.put(chunk)
            except Exception as exc:  # raised on the caller's side, in its own frame
                await handed.put(exc)
                return
            await handed.put(None)

        async def start() -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(read())

        reader = self._run("stream", start)

        async def stop() -> None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

        try:
            while (item := self._run("stream", handed.get)) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            try:
                self._run("stream", stop)
            except RuntimeError:  # closed (which cancelled it), or left in a running loop
                self._runner.cancel(reader)

    def embed(
        self,
        target: str,
        inputs: str | Iterable[str],
        *,
        key_id: str | None = None,
        tags: Iterable[str] = (),
    ) -> EmbeddingResponse:
        """Embed and wait for the vectors."""
        return self._run("embed", lambda: self.yard.embed(target, inputs, key_id=key_id, tags=tags))

    def reload(self) -> ConfigDiff:
        """`Yard.reload`, waited for: the config file read, validated and built anew, then
        served; ConfigError, with the old config still serving, when it is invalid."""
        return self._run("reload", self.yard.reload)

    def close(self) -> None:
        """Close the yard and the loop, from any thread (in a notebook's too), and wait for it;
        calls still running are cancelled, raising YardClosedError, as do calls after it.
        Closing again does nothing."""
        self._closer()
        if threading.current_thread() is not self._runner.thread:
            self._runner.thread.join()

    def __enter__(self) -> SyncYard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_sync(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None, watch: bool = False
) -> SyncYard:
    """`load` for code without an event loop; `watch=True` reloads the config when its file
    changes, from now on."""
    sync = SyncYard(load(path, env=env, watch=watch))
    if watch:
        sync._run("load", sync.yard._serve_here)  # watching from now on, not the first call
    return sync
