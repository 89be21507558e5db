"""The gateway's own routes: model list, health, readiness, metrics, request records, reload and
the virtual-key admin API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import orjson

from modelyard.errors import ConfigError, ModelError, UnavailableError
from modelyard.gateway import anthropic_render, openai_api, openai_render
from modelyard.gateway.auth import KeyRing, caller, require_admin
from modelyard.gateway.errors import ApiError, bad_request, from_model_error
from modelyard.gateway.exchange import Call
from modelyard.gateway.keys import VirtualKey
from modelyard.live import LiveConfig
from modelyard.observability.decision_log import DecisionLog
from modelyard.observability.metrics import CONTENT_TYPE, Metrics
from modelyard.state.base import StateStore, StoreHealth
from modelyard.yard import Yard

T = TypeVar("T")


class AdminEndpoints:
    """Everything but the model calls themselves."""

    def __init__(
        self,
        live: LiveConfig,
        *,
        keys: KeyRing,
        decisions: DecisionLog,
        metrics: Metrics,
        max_body_bytes: int,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.live = live
        self.keys = keys
        self.decisions = decisions
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._status = status

    def _listed(self, key: VirtualKey, *, embedders: bool) -> list[tuple[str, str]]:
        """(name, owner) of the systems, models and (when asked) embedders `key` may use."""
        yard = self.live.current
        names = [(n, "modelyard-system") for n in sorted(yard.systems) if key.allows(n)]
        names += [
            (n, yard.models[n].info.provider or "local")
            for n in sorted(yard.models)
            if key.allows(n) and n not in yard.built.disabled
        ]
        if embedders:
            names += [(n, "embedder") for n in sorted(yard.embedders) if key.allows(n)]
        return names

    async def models(self, call: Call) -> None:
        """GET /v1/models: the systems, models and embedders the caller's key may use; in
        Anthropic's shape for an Anthropic client, and without the embedders, which answer no
        Messages call."""
        key = await caller(self.keys, call)
        created = int(time.time())
        if call.anthropic:
            names = [name for name, _ in self._listed(key, embedders=False)]
            body = anthropic_render.render_models(names, created)
        else:
            body = openai_render.render_models(self._listed(key, embedders=True), created)
        await call.respond(200, body)

    async def model(self, call: Call, name: str) -> None:
        """GET /v1/models/{name}: one of those `models` lists; 404 listing them otherwise."""
        key = await caller(self.keys, call)
        listed = self._listed(key, embedders=not call.anthropic)
        owner = dict(listed).get(name)
        if owner is None:
            raise openai_api.not_found(name, [n for n, _ in listed])
        created = int(time.time())
        if call.anthropic:
            found = anthropic_render.model_object(name, created)
        else:
            found = openai_render.model_object(name, owner, created)
        await call.respond(200, orjson.dumps(found))

    async def healthz(self, call: Call) -> None:
        """GET /healthz: the process is alive."""
        await call.respond(200, b'{"status":"ok"}')

    async def readyz(self, call: Call) -> None:
        """GET /readyz: the config serving (and the file's refusal, while it stands), and the
        health of what it calls."""
        yard = self.live.current
        status = self._status()
        state = await _state_health(self.live.resources.state)
        body = {
            **status,
            "config_version": yard.version,
            "config": str(self.live.path),
            # Still ready (the old config serves), but the file on disk is not what serves.
            "config_refused": self.live.refused,
            "systems": sorted(yard.systems),
            "disabled": yard.built.disabled,
            "state": state,
            "health": await _health(yard),
        }
        # A replica whose shared store is down and whose policy is to refuse cannot serve.
        ready = status["status"] == "ready" and state["mode"] != "refusing"
        await call.respond(200 if ready else 503, orjson.dumps(body))

    async def prometheus(self, call: Call) -> None:
        """GET /metrics (with the state store's health as of its last use: no probe, so a
        scrape never waits on a backend that is down)."""
        store = self.live.resources.state
        if store is not None:
            health = store.health()
            self.metrics.store_health(health.backend, health.mode, health.ok)
        await call.respond(200, self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())])

    async def request_record(self, call: Call, request_id: str) -> None:
        """GET /v1/requests/{id}: the decision record, for the admin or the key that sent it."""
        key = await caller(self.keys, call)
        record = await _in_store(self.decisions.get(request_id))
        if record is None or not (key.admin or record["key_id"] == key.id):
            raise ApiError(404, f"no request {request_id!r} for this key", code="not_found")
        await call.respond(200, orjson.dumps(record))

    async def reload(self, call: Call) -> None:
        """POST /admin/reload: validate, diff and swap in the config file."""
        await require_admin(self.keys, call)
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
        await call.respond(200, orjson.dumps(body))

    async def list_keys(self, call: Call) -> None:
        """GET /admin/keys."""
        await require_admin(self.keys, call)
        keys = await _in_store(self.keys.store.all())
        await call.respond(200, orjson.dumps({"keys": [k.to_dict() for k in keys]}))

    async def create_key(self, call: Call) -> None:
        """POST /admin/keys: the secret is in this response and nowhere else."""
        body = await call.json(self.max_body_bytes)
        await require_admin(self.keys, call)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise bad_request("name: a string naming the key's owner is required", "name")
        systems = body.get("systems", ["*"])
        if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
            raise bad_request("systems: expected an array of system names", "systems")
        for field in ("rpm", "tpm", "max_concurrency"):
            value = body.get(field)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise bad_request(f"{field}: expected a positive integer", field)
        budget = body.get("budget")
        if budget is not None and not (isinstance(budget, int | float) and budget > 0):
            raise bad_request("budget: expected a positive number of USD", "budget")
        secret, key = await _in_store(
            self.keys.store.create(
                body["name"],
                systems=systems,
                rpm=body.get("rpm"),
                tpm=body.get("tpm"),
                budget=budget,
                max_concurrency=body.get("max_concurrency"),
            )
        )
        await self.keys.refresh()
        await call.respond(201, orjson.dumps({"key": secret, **key.to_dict()}))

    async def revoke_key(self, call: Call, key_id: str) -> None:
        """DELETE /admin/keys/{id}."""
        await require_admin(self.keys, call)
        if not await _in_store(self.keys.store.revoke(key_id)):
            raise ApiError(404, f"no active key {key_id!r}", code="not_found")
        await self.keys.refresh()
        await call.respond(200, orjson.dumps({"revoked": key_id}))


async def _in_store(work: Awaitable[T]) -> T:
    """`work` on a shared store (the keys, the request log); one that cannot be reached is a
    503 naming its setting."""
    try:
        return await work
    except UnavailableError as exc:
        raise from_model_error(exc) from None


async def _health(yard: Yard) -> dict[str, Any]:
    """Every circuit breaker's state (closed, open, half-open) from the resilience layer."""
    try:
        return (await yard.health()).to_dict()
    except ModelError as exc:  # circuits kept in a shared store that cannot be reached
        return {"healthy": False, "error": str(exc)}


async def _state_health(store: StateStore | None) -> dict[str, Any]:
    """Whether the state store serves from where it should. One probe per call, so /readyz
    notices an outage (or a recovery) even when no request has touched the store yet."""
    if store is None:
        return asdict(StoreHealth(backend="none"))
    with contextlib.suppress(ModelError):
        await store.counter("health-probe")
    return asdict(store.health())
