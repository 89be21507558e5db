"""The gateway as a raw ASGI application.

Raw ASGI rather than a framework: measured here, Starlette's routing and StreamingResponse cost
about twice a plain send loop (../shared/research/ecosystem.md §2b), and this code sits on every
request's path. Routes are a dict lookup; JSON is orjson; streams are relayed chunk by chunk;
the request log is written off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from modelyard.errors import BadResponseError, ConfigError, ModelError, NotFoundError
from modelyard.gateway import anthropic_api, openai_api
from modelyard.gateway.auth import KeyRing
from modelyard.gateway.errors import ApiError, bad_request, from_model_error
from modelyard.gateway.keys import VirtualKey
from modelyard.gateway.live import LiveConfig
from modelyard.model import Model
from modelyard.observability.decision_log import DecisionLog, RequestRecord
from modelyard.observability.metrics import CONTENT_TYPE, Metrics
from modelyard.state.base import StateStore
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, ChatResponse, Chunk, EmbeddingRequest
from modelyard.yard import Yard

log = logging.getLogger("modelyard.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class Call:
    """One HTTP request being served."""

    scope: Scope
    receive: Receive
    send: Send
    id: str
    started: float
    headers: dict[bytes, bytes]
    key: VirtualKey | None = None

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


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
        serving: bool = False,
        watch_config: bool = False,
    ) -> None:
        self.live = live
        self.serving = serving
        self.watch_config = watch_config
        self._background: list[asyncio.Task[None]] = []
        self.keys = keys
        self.decisions = decisions
        self.metrics = metrics or Metrics()
        self.max_body_bytes = max_body_bytes
        self.max_messages = max_messages
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(4)
        self._in_flight = 0
        self._per_key: dict[str, int] = {}
        self.limits: StateStore = MemoryStore()
        """Per-key request rates; a shared backend makes them hold across replicas."""
        self._draining = False
        self._routes: dict[tuple[str, str], Callable[[Call], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._chat_completions,
            ("POST", "/chat/completions"): self._chat_completions,
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("POST", "/admin/reload"): self._reload,
            ("GET", "/admin/keys"): self._list_keys,
            ("POST", "/admin/keys"): self._create_key,
        }

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

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

    def start(self) -> None:
        """Start background tasks (key refresh, log writer; when serving, reload on SIGHUP and
        on file change) in the running loop."""
        self.keys.start()
        self.decisions.start()
        loop = asyncio.get_running_loop()
        if self.serving:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(
                    signal.SIGHUP, lambda: loop.create_task(self._reload_quietly())
                )
        if self.watch_config:
            self._background.append(loop.create_task(self._watch()))

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(ConfigError):  # a refused config is logged by LiveConfig
            await self.live.reload()

    async def _watch(self) -> None:
        from watchfiles import awatch

        async for _ in awatch(self.live.path, debounce=300):
            await self._reload_quietly()

    async def aclose(self) -> None:
        """Flush the request log and close every connection."""
        self._draining = True
        for task in self._background:
            task.cancel()
        await self.keys.aclose()
        await self.decisions.aclose()
        await self.live.aclose()

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""
        return self._in_flight

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = Call(
            scope=scope,
            receive=receive,
            send=send,
            id=f"{self._id_prefix}{next(self._ids):08x}",
            started=time.perf_counter(),
            headers=dict(scope["headers"]),
        )
        method, path = scope["method"], scope["path"]
        handler = self._routes.get((method, path))
        self._in_flight += 1
        try:
            if handler is not None:
                await handler(call)
            elif path.startswith("/v1/requests/") and method == "GET":
                await self._request_record(call, path.removeprefix("/v1/requests/"))
            elif path.startswith("/admin/keys/") and method == "DELETE":
                await self._revoke_key(call, path.removeprefix("/admin/keys/"))
            else:
                raise ApiError(
                    404, f"no route for {method} {path}", "invalid_request_error", "not_found"
                )
        except ApiError as error:
            await self._send_error(
                call, error, api="anthropic" if path == "/v1/messages" else "openai"
            )
        except Exception:
            log.exception("unhandled error in request %s", call.id)
            failure = ApiError(
                500, f"internal error (request {call.id})", "server_error", "internal"
            )
            await self._send_error(call, failure, api="openai")
        finally:
            self._in_flight -= 1

    # --- plumbing ------------------------------------------------------------------------------

    async def _body(self, call: Call) -> Any:
        chunks = []
        size = 0
        declared = call.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ApiError(
                413, f"request body over {self.max_body_bytes} bytes", code="body_too_large"
            )
        while True:
            message = await call.receive()
            if message["type"] == "http.disconnect":
                raise ApiError(499, "client disconnected", code="client_closed")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ApiError(
                    413, f"request body over {self.max_body_bytes} bytes", code="body_too_large"
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not raw:
            raise bad_request("empty request body: expected JSON")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"request body is not valid JSON: {exc}") from None

    def _authenticate(self, call: Call) -> VirtualKey:
        header = call.header(b"authorization")
        secret = header[7:].strip() if header and header[:7].lower() == "bearer " else None
        secret = secret or call.header(b"x-api-key")
        call.key = self.keys.authenticate(secret)
        return call.key

    def _require_admin(self, call: Call) -> None:
        key = self._authenticate(call)
        client = call.scope.get("client") or ("", 0)
        if self.keys.open and client[0] in ("127.0.0.1", "::1"):
            return  # no keys configured at all: a local operator may administer
        if not key.admin:
            raise ApiError(403, "this route needs the admin key", "permission_error", "admin_only")

    async def _send(
        self, call: Call, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        out = [*(headers or _JSON), (b"x-request-id", call.id.encode())]
        await call.send({"type": "http.response.start", "status": status, "headers": out})
        await call.send({"type": "http.response.body", "body": body})

    async def _send_error(self, call: Call, error: ApiError, *, api: str) -> None:
        body = (
            anthropic_api.error_body(error) if api == "anthropic" else openai_api.error_body(error)
        )
        headers = [*_JSON, *((k.encode(), v.encode()) for k, v in error.headers.items())]
        try:
            await self._send(call, error.status, orjson.dumps(body), headers)
        except Exception:  # the client is gone; nothing more to tell it
            log.debug("could not send error for %s", call.id)

    def _target(self, yard: Yard, name: str, key: VirtualKey) -> Model:
        if not key.allows(name):
            raise ApiError(
                403,
                f"this key may not use {name!r}",
                "permission_error",
                "model_not_allowed",
                "model",
            )
        try:
            return yard.get(name)
        except NotFoundError:
            available = [n for n in yard.names() if key.allows(n)]
            raise openai_api.not_found(name, available) from None

    def _prepare(
        self, call: Call, request: ChatRequest, key: VirtualKey, yard: Yard
    ) -> ChatRequest:
        deadline = None
        timeout = call.header(b"x-modelyard-timeout")
        if timeout is not None:
            try:
                deadline = time.monotonic() + float(timeout)
            except ValueError:
                raise bad_request("x-modelyard-timeout: expected seconds as a number") from None
        tags = call.header(b"x-modelyard-tags")
        request = replace(
            request,
            key_id=key.id,
            deadline=deadline,
            tags=tuple(t.strip() for t in tags.split(",") if t.strip()) if tags else (),
        )
        return request.with_budget(yard.loaded.config.default_deadline)

    def _record(
        self,
        call: Call,
        *,
        target: str,
        api: str,
        stream: bool,
        version: str,
        status: int,
        response: ChatResponse | None = None,
        error: ModelError | None = None,
    ) -> None:
        latency = (time.perf_counter() - call.started) * 1000
        usage = response.usage if response is not None else None
        self.decisions.record(
            RequestRecord(
                id=call.id,
                at=time.time(),
                key_id=call.key.id if call.key else None,
                target=target,
                api=api,
                stream=stream,
                config_version=version,
                status=status,
                model=response.model if response else (error.model if error else None),
                provider_model=response.provider_model if response else None,
                latency_ms=latency,
                cost=response.cost if response else (error.cost if error else 0.0),
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                error=f"{error.kind}: {error}" if error else None,
                decision=response.decision if response else (error.decision if error else None),
            )
        )
        if response is not None:
            provider = _provider_of(response)
            self.metrics.answered(target, response, provider, latency / 1000)
        elif error is not None:
            self.metrics.failed(target, error.kind, status, latency / 1000)

    # --- chat ----------------------------------------------------------------------------------

    async def _chat_completions(self, call: Call) -> None:
        body = await self._body(call)
        key = self._authenticate(call)
        parsed = openai_api.parse_chat(body, max_messages=self.max_messages)
        await self._serve_chat(
            call,
            key,
            parsed.target,
            parsed.request,
            parsed.stream,
            api="openai",
            renderer=_OpenAIRenderer(call.id, parsed.target, parsed.include_usage),
        )

    async def _messages(self, call: Call) -> None:
        body = await self._body(call)
        key = self._authenticate(call)
        parsed = anthropic_api.parse_messages(body, max_messages=self.max_messages)
        await self._serve_chat(
            call,
            key,
            parsed.target,
            parsed.request,
            parsed.stream,
            api="anthropic",
            renderer=_AnthropicRenderer(call.id, parsed.target),
        )

    async def _serve_chat(
        self,
        call: Call,
        key: VirtualKey,
        target: str,
        request: ChatRequest,
        stream: bool,
        *,
        api: str,
        renderer: _Renderer,
    ) -> None:
        yard = self.live.current
        model = self._target(yard, target, key)
        request = self._prepare(call, request, key, yard)
        if key.rpm is not None:
            wait = await self.limits.window_acquire(
                f"key-rpm:{key.id}", 1, limit=key.rpm, window=60
            )
            if wait > 0:
                raise ApiError(
                    429,
                    f"this key's limit of {key.rpm} requests per minute is reached",
                    "rate_limit_error",
                    "key_rate_limited",
                    headers={"retry-after": str(max(1, round(wait)))},
                )
        limit = key.max_concurrency
        if limit is not None:
            if self._per_key.get(key.id, 0) >= limit:
                raise ApiError(
                    429,
                    f"more than {limit} concurrent requests for this key",
                    "rate_limit_error",
                    "concurrency_limit",
                )
            self._per_key[key.id] = self._per_key.get(key.id, 0) + 1
        try:
            if stream:
                await self._stream(call, model, request, target, api, renderer, yard.version)
            else:
                await self._complete(call, model, request, target, api, renderer, yard.version)
        finally:
            if limit is not None:
                self._per_key[key.id] -= 1

    async def _complete(
        self,
        call: Call,
        model: Model,
        request: ChatRequest,
        target: str,
        api: str,
        renderer: _Renderer,
        version: str,
    ) -> None:
        try:
            response = await model.complete(request)
        except ModelError as exc:
            error = from_model_error(exc)
            self._record(
                call,
                target=target,
                api=api,
                stream=False,
                version=version,
                status=error.status,
                error=exc,
            )
            raise error from None
        headers = [*_JSON, *_answer_headers(response, version)]
        await self._send(call, 200, renderer.response(response), headers)
        self._record(
            call,
            target=target,
            api=api,
            stream=False,
            version=version,
            status=200,
            response=response,
        )

    async def _stream(
        self,
        call: Call,
        model: Model,
        request: ChatRequest,
        target: str,
        api: str,
        renderer: _Renderer,
        version: str,
    ) -> None:
        chunks = model.stream(request)
        try:
            # Wait for the first chunk before sending headers: until then a failure is a
            # proper HTTP error (and fallbacks below may still have failed over).
            try:
                first = await anext(chunks)
            except ModelError as exc:
                error = from_model_error(exc)
                self._record(
                    call,
                    target=target,
                    api=api,
                    stream=True,
                    version=version,
                    status=error.status,
                    error=exc,
                )
                raise error from None
            except StopAsyncIteration:
                raise ApiError(
                    502,
                    "the model's stream ended before it began",
                    "upstream_error",
                    "empty_stream",
                ) from None
            send = call.send
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *_SSE,
                        (b"x-request-id", call.id.encode()),
                        (b"x-modelyard-config-version", version.encode()),
                    ],
                }
            )
            disconnected = asyncio.ensure_future(call.receive())
            try:
                await self._relay(call, first, chunks, renderer, disconnected, target, api, version)
            finally:
                disconnected.cancel()
        finally:
            close = getattr(chunks, "aclose", None)  # stop the generator and its upstream call
            if close is not None:
                await close()

    async def _relay(
        self,
        call: Call,
        first: Chunk,
        chunks: AsyncIterator[Chunk],
        renderer: _Renderer,
        disconnected: asyncio.Future[Any],
        target: str,
        api: str,
        version: str,
    ) -> None:
        send = call.send
        chunk: Chunk | None = first
        try:
            while chunk is not None:
                frame = renderer.chunk(chunk)
                if frame:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                if chunk.response is not None:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    self._record(
                        call,
                        target=target,
                        api=api,
                        stream=True,
                        version=version,
                        status=200,
                        response=chunk.response,
                    )
                    return
                if disconnected.done():
                    log.info("client left request %s mid-stream; stopping the model", call.id)
                    return
                chunk = await anext(chunks, None)
            raise BadResponseError("the model's stream ended without its final response")
        except ModelError as exc:
            error = from_model_error(exc)
            await send(
                {"type": "http.response.body", "body": renderer.error(error), "more_body": False}
            )
            self._record(
                call,
                target=target,
                api=api,
                stream=True,
                version=version,
                status=error.status,
                error=exc,
            )

    # --- other endpoints -----------------------------------------------------------------------

    async def _embeddings(self, call: Call) -> None:
        body = await self._body(call)
        key = self._authenticate(call)
        parsed = openai_api.parse_embeddings(body)
        yard = self.live.current
        if not key.allows(parsed.target):
            raise ApiError(
                403,
                f"this key may not use {parsed.target!r}",
                "permission_error",
                "model_not_allowed",
                "model",
            )
        embedder = yard.embedders.get(parsed.target)
        if embedder is None:
            raise openai_api.not_found(parsed.target, sorted(yard.embedders))
        request = EmbeddingRequest(
            inputs=parsed.inputs, dimensions=parsed.dimensions, key_id=key.id
        )
        try:
            response = await embedder.embed(request)
        except ModelError as exc:
            raise from_model_error(exc) from None
        await self._send(
            call,
            200,
            openai_api.render_embeddings(response, parsed.target, packed=parsed.base64),
            [*_JSON, (b"x-modelyard-cost", f"{response.cost:.8f}".encode())],
        )

    async def _models(self, call: Call) -> None:
        key = self._authenticate(call)
        yard = self.live.current
        names = [(n, "modelyard-system") for n in sorted(yard.systems) if key.allows(n)]
        names += [
            (n, yard.models[n].info.provider or "local")
            for n in sorted(yard.models)
            if key.allows(n)
        ]
        names += [(n, "embedder") for n in sorted(yard.embedders) if key.allows(n)]
        await self._send(call, 200, openai_api.render_models(names, int(time.time())))

    async def _healthz(self, call: Call) -> None:
        await self._send(call, 200, b'{"status":"ok"}')

    async def _readyz(self, call: Call) -> None:
        yard = self.live.current
        body = {
            "status": "draining" if self._draining else "ready",
            "config_version": yard.version,
            "config": str(self.live.path),
            "systems": sorted(yard.systems),
            "disabled": yard.built.disabled,
            "in_flight": self._in_flight,
            "health": await _health(yard),
        }
        await self._send(call, 503 if self._draining else 200, orjson.dumps(body))

    async def _metrics(self, call: Call) -> None:
        await self._send(
            call, 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())]
        )

    async def _request_record(self, call: Call, request_id: str) -> None:
        key = self._authenticate(call)
        record = await self.decisions.get(request_id)
        if record is None or not (key.admin or record["key_id"] == key.id):
            raise ApiError(404, f"no request {request_id!r} for this key", code="not_found")
        await self._send(call, 200, orjson.dumps(record))

    async def _reload(self, call: Call) -> None:
        self._require_admin(call)
        try:
            diff = await self.live.reload()
        except ConfigError as exc:
            raise ApiError(
                400,
                f"config rejected, still serving the old one: {exc}",
                "invalid_config",
                "invalid_config",
            ) from None
        body = {"config_version": self.live.current.version, "changes": diff.to_dict()}
        await self._send(call, 200, orjson.dumps(body))

    async def _list_keys(self, call: Call) -> None:
        self._require_admin(call)
        keys = await asyncio.to_thread(self.keys.store.all)
        await self._send(call, 200, orjson.dumps({"keys": [k.to_dict() for k in keys]}))

    async def _create_key(self, call: Call) -> None:
        body = await self._body(call)
        self._require_admin(call)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise bad_request("name: a string naming the key's owner is required", "name")
        systems = body.get("systems", ["*"])
        if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
            raise bad_request("systems: expected an array of system names", "systems")
        for field in ("rpm", "max_concurrency"):
            if body.get(field) is not None and not (
                isinstance(body[field], int) and body[field] > 0
            ):
                raise bad_request(f"{field}: expected a positive integer", field)
        budget = body.get("budget")
        if budget is not None and not (isinstance(budget, int | float) and budget > 0):
            raise bad_request("budget: expected a positive number of USD", "budget")
        secret, key = await asyncio.to_thread(
            self.keys.store.create,
            body["name"],
            systems=systems,
            rpm=body.get("rpm"),
            budget=budget,
            max_concurrency=body.get("max_concurrency"),
        )
        await self.keys.refresh()
        await self._send(call, 201, orjson.dumps({"key": secret, **key.to_dict()}))

    async def _revoke_key(self, call: Call, key_id: str) -> None:
        self._require_admin(call)
        if not await asyncio.to_thread(self.keys.store.revoke, key_id):
            raise ApiError(404, f"no active key {key_id!r}", code="not_found")
        await self.keys.refresh()
        await self._send(call, 200, orjson.dumps({"revoked": key_id}))


def _answer_headers(response: ChatResponse, version: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-modelyard-model", response.model.encode()),
        (b"x-modelyard-provider-model", response.provider_model.encode("latin-1", "replace")),
        (b"x-modelyard-cost", f"{response.cost:.8f}".encode()),
        (b"x-modelyard-config-version", version.encode()),
    ]


def _provider_of(response: ChatResponse) -> str:
    decision = response.decision
    while decision is not None:
        provider = decision.details.get("provider") if decision.details else None
        if provider:
            return str(provider)
        decision = decision.children[-1] if decision.children else None
    return "local"


async def _health(yard: Yard) -> dict[str, Any]:
    """Every circuit breaker's state (closed, open, half-open) from the resilience layer."""
    return (await yard.health()).to_dict()


class _Renderer:
    """How one API writes answers, chunks and in-stream errors."""

    def response(self, response: ChatResponse) -> bytes:
        raise NotImplementedError

    def chunk(self, chunk: Chunk) -> bytes:
        raise NotImplementedError

    def error(self, error: ApiError) -> bytes:
        raise NotImplementedError


class _OpenAIRenderer(_Renderer):
    def __init__(self, request_id: str, target: str, include_usage: bool) -> None:
        self._target = target
        self._chunks = openai_api.ChunkRenderer(
            request_id=request_id,
            target=target,
            created=int(time.time()),
            include_usage=include_usage,
        )
        self._id = request_id

    def response(self, response: ChatResponse) -> bytes:
        return openai_api.render_response(response, request_id=self._id, target=self._target)

    def chunk(self, chunk: Chunk) -> bytes:
        return self._chunks.chunk(chunk)

    def error(self, error: ApiError) -> bytes:
        return self._chunks.error(error)


class _AnthropicRenderer(_Renderer):
    def __init__(self, request_id: str, target: str) -> None:
        self._stream = anthropic_api.EventRenderer(request_id=request_id, target=target)
        self._id = request_id
        self._target = target

    def response(self, response: ChatResponse) -> bytes:
        return anthropic_api.render_message(response, request_id=self._id, target=self._target)

    def chunk(self, chunk: Chunk) -> bytes:
        return self._stream.chunk(chunk)

    def error(self, error: ApiError) -> bytes:
        return self._stream.error(error)


def create_app(config: str | os.PathLike[str] | None = None, *, serving: bool = False) -> Gateway:
    """Build a Gateway for the config at `config` (or $MODELYARD_CONFIG): the factory uvicorn
    calls in each worker."""
    from modelyard.gateway.keys import KeyStore

    path = config or os.environ.get("MODELYARD_CONFIG")
    if not path:
        raise ConfigError("no config: pass a path or set MODELYARD_CONFIG")
    live = LiveConfig(path)
    spec = live.current.loaded.config.gateway
    base = live.current.loaded.base_dir
    admin = spec.admin_key.get_secret_value() if spec.admin_key else None
    keys = KeyRing(KeyStore(base / spec.keys_db), mode=spec.auth, admin_secret=admin)
    decisions = DecisionLog(base / spec.request_log if spec.request_log else None)
    return Gateway(
        live,
        keys=keys,
        decisions=decisions,
        max_body_bytes=spec.max_body_bytes,
        max_messages=spec.max_messages,
        serving=serving,
        watch_config=serving and spec.watch_config,
    )
