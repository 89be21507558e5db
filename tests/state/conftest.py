"""Stores under test: every backend must keep the same contract."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelyard.state import postgres as postgres_state
from modelyard.state.base import StateStore
from modelyard.state.memory import MemoryStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.postgres_tables import PostgresTables
from modelyard.state.redis import RedisStore
from modelyard.state.sqlite import SqliteStore

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DOWN_TIMEOUT = 5.0
"""A store's timeout in tests whose server is stopped or cut off, which refuses at once, and is
never left silent: room for a loaded machine while it answers, and never waited for."""

BACKENDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


async def fresh_tables(kind: type[PostgresTables]) -> AsyncIterator[str]:
    """A table prefix no other test run uses; `kind`'s tables under it are dropped afterwards
    (a fixture body iterates it)."""
    name = "t" + uuid.uuid4().hex[:10] + "_"
    yield name
    tables = kind(POSTGRES_URL, table_prefix=name)
    await tables.drop_tables()
    await tables.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A PostgreSQL table prefix of this test alone; its state tables are dropped afterwards."""
    async for name in fresh_tables(PostgresStore):
        yield name


@pytest.fixture
async def sweeping(prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PostgresStore]:
    """A PostgreSQL store on `prefix` whose every call that writes sweeps (raising=False: the
    release before had no sweep to set, and its tests fail on what it keeps, not here)."""
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 0.0, raising=False)
    store = PostgresStore(POSTGRES_URL, table_prefix=prefix)
    yield store
    await store.aclose()


def unique_prefix() -> str:
    """A key prefix no other test run uses, so parallel runs never collide in a shared server."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """Each backend in turn, empty, cleaned up afterwards."""
    kind = request.param
    made: StateStore
    if kind == "memory":
        made = MemoryStore()
    elif kind == "sqlite":
        made = SqliteStore(tmp_path / "state.db")
    elif kind == "redis":
        made = RedisStore(REDIS_URL, prefix=unique_prefix())
    else:
        made = PostgresStore(POSTGRES_URL, table_prefix="t" + uuid.uuid4().hex[:10] + "_")
    yield made
    if isinstance(made, RedisStore):
        await made.clear_prefix()
    if isinstance(made, PostgresStore):
        await made.drop_tables()
    await made.aclose()


@pytest.fixture
async def twin(store: StateStore) -> AsyncIterator[StateStore]:
    """Another client of the same backend, as a second process would hold."""
    other: StateStore
    if isinstance(store, MemoryStore):
        other = store
    elif isinstance(store, SqliteStore):
        other = SqliteStore(store.path)
    elif isinstance(store, RedisStore):
        other = RedisStore(REDIS_URL, prefix=store.prefix)
    else:
        assert isinstance(store, PostgresStore)
        other = PostgresStore(POSTGRES_URL, table_prefix=store.p)
    yield other
    if other is not store:
        await other.aclose()
