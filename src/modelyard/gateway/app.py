"""The gateway as a raw ASGI application.

Raw ASGI rather than a framework: measured here, Starlette's routing and StreamingResponse cost
about twice a plain send loop (../shared/research/ecosystem.md §2b), and this code sits on every
request's path. Routes are a dict lookup; JSON is orjson; streams are relayed chunk by chunk;
the request log is written off the hot path. The handlers live in `chat.py` (model calls),
`anthropic_count.py` (token counts) and `admin.py` (everything else); `exchange.py` is the HTTP
plumbing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modelyard.config.gateway import CaptureSpec
from modelyard.cost.budget_leases import lease_keeper
from modelyard.errors import ConfigError, UnavailableError
from modelyard.gateway.admin import AdminEndpoints
from modelyard.gateway.anthropic_count import TokenCounting
from modelyard.gateway.auth import KeyRing
from modelyard.gateway.chat import ChatEndpoints
from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import Call, Receive, Scope, Send
from modelyard.gateway.stalled import quiet_server_on_cuts
from modelyard.live import LiveConfig
from modelyard.observability.decision_log import DecisionLog
from modelyard.observability.metrics import Metrics
from modelyard.observability.request_log_postgres import shared_request_log
from modelyard.state.factory import live_store, shared_store
from modelyard.watch import ConfigWatch
from modelyard.yard import Yard

log = logging.getLogger("modelyard.gateway")

Handler = Callable[[Call], Awaitable[None]]


class Gateway:
    """Serves a LiveConfig over the OpenAI and Anthropic HTTP APIs."""

    def __init__(
        self,
        live: LiveConfig,
        *,
        keys: KeyRing,
        decisions: DecisionLog,
        metrics: Metrics | None = None,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_messages: int = 2000,
        capture: CaptureSpec | None = None,
        serving: bool = False,
        watch_config: bool = False,
        stalled_client_timeout: float = 60.0,
    ) -> None:
        self.live = live
        self.keys = keys
        self.decisions = decisions
        self.metrics = metrics or Metrics()
        self.serving = serving
        self.watch_config = watch_config
        self.chat = ChatEndpoints(
            live,
            keys=keys,
            decisions=decisions,
            metrics=self.metrics,
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            capture=capture,
            stalled_client_timeout=stalled_client_timeout,
        )
        self.counting = TokenCounting(self.chat)
        self.admin = AdminEndpoints(
            live,
            keys=keys,
            decisions=decisions,
            metrics=self.metrics,
            max_body_bytes=max_body_bytes,
            status=self._status,
        )
        live.advice = self._stranded_keys
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(4)
        self._in_flight = 0
        self._draining = False
        self._idle: asyncio.Event | None = None
        """Set when the last request ends, once shutting down (`_wind_down`)."""
        self._background: list[asyncio.Task[None]] = []
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self.chat.chat_completions,
            ("POST", "/chat/completions"): self.chat.chat_completions,
            ("POST", "/v1/responses"): self.chat.responses,
            ("POST", "/v1/messages"): self.chat.messages,
            ("POST", "/v1/messages/count_tokens"): self.counting.count_tokens,
            ("POST", "/v1/embeddings"): self.chat.embeddings,
            ("GET", "/v1/models"): self.admin.models,
            ("GET", "/healthz"): self.admin.healthz,
            ("GET", "/readyz"): self.admin.readyz,
            ("GET", "/metrics"): self.admin.prometheus,
            ("POST", "/admin/reload"): self.admin.reload,
            ("GET", "/admin/keys"): self.admin.list_keys,
            ("POST", "/admin/keys"): self.admin.create_key,
        }

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""
        return self._in_flight

    def _stranded_keys(self, yard: Yard) -> list[str]:
        """A line for each key that names a system or model `yard` lacks (`keys create` refuses
        such a name; a reload that removes one is let through, and says so)."""
        names = {*yard.names(), *yard.embedders}
        lines = []
        for key in self.keys.active():
            if missing := [n for n in key.systems if n != "*" and n not in names]:
                lines.append(
                    f"key {key.id} ({key.name}) names {', '.join(missing)}, which "
                    f"{self.live.path.name} does not have: its callers get 404 for it"
                )
        return lines

    def _status(self) -> dict[str, Any]:
        return {"status": "draining" if self._draining else "ready", "in_flight": self._in_flight}

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        # The model list is both APIs' route: Anthropic's SDK names its version on every call.
        anthropic = path.startswith("/v1/messages") or (
            path.startswith("/v1/models") and b"anthropic-version" in headers
        )
        api = "anthropic" if anthropic else "openai"
        call = Call(
            scope=scope,
            receive=receive,
            send=send,
            id=f"{self._id_prefix}{next(self._ids):08x}",
            started=time.perf_counter(),
            headers=headers,
            anthropic=anthropic,
        )
        handler = self._routes.get((method, path))
        self._in_flight += 1
        try:
            if handler is not None:
                await handler(call)
            elif method == "GET" and path.startswith("/v1/models/"):
                await self.admin.model(call, path.removeprefix("/v1/models/"))
            elif method == "GET" and path.startswith("/v1/requests/"):
                await self.admin.request_record(call, path.removeprefix("/v1/requests/"))
            elif method == "DELETE" and path.startswith("/admin/keys/"):
                await self.admin.revoke_key(call, path.removeprefix("/admin/keys/"))
            else:
                raise ApiError(
                    404, f"no route for {method} {path}", "invalid_request_error", "not_found"
                )
        except ApiError as error:
            if not error.counted:
                route = path if handler is not None else "other"  # bounded label values
                self.metrics.refused(route, error.status, error.code or error.type)
            await call.fail(error, api=api)
        except Exception:
            log.exception("unhandled error in request %s", call.id)
            await call.fail(
                ApiError(500, f"internal error (request {call.id})", "server_error", "internal"),
                api=api,
            )
        finally:
            self._in_flight -= 1
            if self._idle is not None and not self._in_flight:
                self._idle.set()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start background tasks (key refresh, log writer; when serving, reload on SIGHUP and
        on file change, `watch.py`) in the running loop."""
        self.keys.start()
        for line in self._stranded_keys(self.live.current):
            log.warning("%s", line)
        self.decisions.start()
        quiet_server_on_cuts()
        loop = asyncio.get_running_loop()
        if self.serving:
            # The config, models and libraries loaded so far live as long as the process: keep
            # the collector from rescanning them, and let it run less often (measured: about
            # 15% of CPU at saturation went to full collections).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(
                    signal.SIGHUP, lambda: loop.create_task(self.live.try_reload())
                )
        if self.watch_config:
            watch = ConfigWatch(self.live)
            self._background.append(loop.create_task(watch.run()))

    async def aclose(self) -> None:
        """Flush the request log and close every connection."""
        self._draining = True
        for task in self._background:
            task.cancel()
        await self._wind_down()
        await self.keys.aclose()
        await self.decisions.aclose()
        await self.live.aclose()

    async def _wind_down(self, seconds: float = 5.0) -> None:
        """Wait (a little) for requests still running: at shutdown, the ones the server has
        just cancelled, past `gateway.drain_timeout`, settle their budgets and record
        themselves now, and the request log and stores they write to must still be open."""
        if not self._in_flight:
            return
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()


def create_app(
    config: str | os.PathLike[str] | None = None, *, serving: bool = False, workers: int = 1
) -> Gateway:
    """Build a Gateway for the config at `config` (or $MODELYARD_CONFIG): the factory uvicorn
    calls in each of the `workers` processes serving it."""
    from modelyard.gateway.keys_postgres import key_store

    path = config or os.environ.get("MODELYARD_CONFIG")
    if not path:
        raise ConfigError("no config: pass a path or set MODELYARD_CONFIG")
    live = LiveConfig(path, workers=workers, log=log)
    loaded = live.current.loaded
    spec = loaded.config.gateway
    admin = spec.admin_key.get_secret_value() if spec.admin_key else None
    store = key_store(spec, loaded.local_path(spec.keys_db))
    try:
        keys = KeyRing(store, mode=spec.auth, admin_secret=admin)
    except UnavailableError as exc:  # not serving beats serving without knowing the keys
        raise ConfigError(exc.message, path=str(live.path)) from None
    decisions = DecisionLog(
        loaded.local_path(spec.request_log) if spec.request_log else None,
        shared=shared_request_log(spec),
    )
    gateway = Gateway(
        live,
        keys=keys,
        decisions=decisions,
        max_body_bytes=spec.max_body_bytes,
        max_messages=spec.max_messages,
        capture=spec.capture,
        serving=serving,
        watch_config=serving and spec.watch_config,
        stalled_client_timeout=spec.stalled_client_timeout,
    )
    # Per-key rate limits live where the circuits and provider limits do (shared with Redis or
    # PostgreSQL, or the SQLite file under `--workers N`: one limit across every process); a
    # key's own budget is spend, kept with the configured budgets.
    key_limits = gateway.chat.key_limits
    key_limits.limits = live_store(loaded.config.state, loaded.base_dir, live.resources)
    key_limits.spend = shared_store(loaded.config.state, loaded.base_dir, live.resources)
    key_limits.leases = lease_keeper(
        key_limits.spend, loaded.config.state.hold_lease, live.resources
    )
    return gateway
