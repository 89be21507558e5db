"""Builds the state store a config asks for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.config.loader import config_relative
from modelyard.config.operations import StateSpec
from modelyard.state.base import StateStore
from modelyard.state.batched import BatchedStore
from modelyard.state.memory import MemoryStore
from modelyard.state.policy import PolicyStore

if TYPE_CHECKING:
    from modelyard.config.resources import Resources


def shared_store(spec: StateSpec, base_dir: Path, resources: Resources) -> StateStore:
    """The one store for `spec`, made once and kept in `resources` (so budgets, rate limits,
    breakers and the gateway's per-key limits share it, across hot reloads)."""
    key = f"state|{base_dir}|{spec.model_dump_json()}"
    store: StateStore = resources.service(key, lambda: make_store(spec, base_dir))
    resources.state = store
    return store


def live_store(spec: StateSpec, base_dir: Path, resources: Resources) -> StateStore:
    """The store for counters that need no history: rate limits, retry budgets, circuits.

    With a shared backend (Redis, PostgreSQL) that is the shared store, so replicas agree. With
    the embedded default (SQLite) it is this process's memory when one process serves:
    persisting a per-minute window would buy nothing across a restart and cost a disk round
    trip on every request. Several worker processes (`resources.workers`, `serve --workers N`)
    share the SQLite file instead, or each would let a whole limit through and keep its own
    circuits. A shared store is used through a `BatchedStore`, so a circuit's counts and state
    and a retry budget's requests cost a round trip every fraction of a second, not one each
    per request (rate windows stay exact).
    """
    if spec.backend in ("redis", "postgres") or (
        spec.backend == "sqlite" and resources.workers > 1
    ):
        shared = shared_store(spec, base_dir, resources)
        batched: StateStore = resources.service(
            f"live|batched|{base_dir}|{spec.model_dump_json()}",
            # A failed SQLite flush is a rolled-back transaction; a lost answer from a server
            # may follow a flush applied: each is sent as a release, which it applies once.
            lambda: BatchedStore(shared, applied_once=spec.backend != "sqlite"),
        )
        return batched
    store: StateStore = resources.service("live|memory", MemoryStore)
    return store


def make_store(spec: StateSpec, base_dir: Path) -> StateStore:
    """The store for `spec`; relative SQLite paths are taken from `base_dir` (the config's)."""
    if spec.backend == "memory":
        return MemoryStore()
    if spec.backend == "sqlite":
        from modelyard.state.sqlite import SqliteStore

        return SqliteStore(config_relative(spec.path, base_dir))
    return PolicyStore(
        shared_backend(spec),
        on_unavailable=spec.on_unavailable,
        retry_interval=spec.retry_interval,
        spool=spool_folder(spec, base_dir),
    )


def shared_backend(spec: StateSpec) -> StateStore:
    """The Redis or PostgreSQL store `spec` names, with no policy for when it is down."""
    assert spec.url is not None and spec.backend in ("redis", "postgres")
    if spec.backend == "redis":
        from modelyard.state.redis import RedisStore

        return RedisStore(spec.url, prefix=spec.prefix, timeout=spec.timeout)
    from modelyard.state.postgres import PostgresStore

    table_prefix = "".join(c if c.isalnum() else "_" for c in spec.prefix)
    if table_prefix[:1].isdigit():  # a table name may not start with a digit
        table_prefix = "_" + table_prefix
    return PostgresStore(spec.url, table_prefix=table_prefix, timeout=spec.timeout)


def spool_folder(spec: StateSpec, base_dir: Path) -> Path:
    """Where what a replica stopped with a shared backend down still owes it waits
    (`state.handover`): the folder of `path` (the config's state folder, which these
    backends leave otherwise unused)."""
    return config_relative(spec.path, base_dir).parent
