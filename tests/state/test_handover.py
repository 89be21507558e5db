"""A store counting alone (`on_unavailable: local`) that is closed with its backend still down
keeps what it owes in a spool file; the next store on that folder hands it over, once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from modelyard.state.base import StateStore
from modelyard.state.handover import MOVE_MEMORY
from modelyard.state.policy import PolicyStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from tests.fakes.tcp_relay import TcpRelay
from tests.state.conftest import DOWN_TIMEOUT, POSTGRES_URL, REDIS_URL, unique_prefix

SPENT = "spent:day:total:2026-12-01"
CALLS = "circuit:cheap:calls"


@dataclass
class Backend:
    """A Redis prefix or PostgreSQL tables of this test alone, reached through `relay`."""

    kind: str
    name: str
    relay: TcpRelay
    password: str = ""
    """Sent in the URL (neither server asks for one: Redis takes any for its `default` user,
    and PostgreSQL trusts local connections)."""

    def primary(self) -> StateStore:
        secret = f":{self.password}" if self.password else ""
        if self.kind == "redis":
            url = f"redis://default{secret}@127.0.0.1:{self.relay.port}/0"
            return RedisStore(url, prefix=self.name, timeout=DOWN_TIMEOUT)
        url = f"postgresql://postgres{secret}@127.0.0.1:{self.relay.port}/test"
        return PostgresStore(url, table_prefix=self.name, timeout=DOWN_TIMEOUT)

    def store(
        self,
        folder: Path | None,
        *,
        retry_interval: float = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> PolicyStore:
        """A `local` store on the backend, spooling in `folder`."""
        return PolicyStore(
            self.primary(),
            on_unavailable="local",
            retry_interval=retry_interval,
            spool=folder,
            wall=wall,
        )

    async def counter(self, key: str) -> float:
        """`key`'s value on the backend itself, not through the relay."""
        direct: StateStore = (
            RedisStore(REDIS_URL, prefix=self.name)
            if self.kind == "redis"
            else PostgresStore(POSTGRES_URL, table_prefix=self.name)
        )
        try:
            return await direct.counter(key)
        finally:
            await direct.aclose()


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    kind = request.param
    relay = TcpRelay("127.0.0.1", 6379 if kind == "redis" else 5432)
    relay.restore()
    name = unique_prefix() if kind == "redis" else f"t{uuid.uuid4().hex[:10]}_"
    yield Backend(kind, name, relay)
    relay.close()
    if kind == "redis":
        cleaner = RedisStore(REDIS_URL, prefix=name)
        await cleaner.clear_prefix()
        await cleaner.aclose()
    else:
        tables = PostgresStore(POSTGRES_URL, table_prefix=name)
        await tables.drop_tables()
        await tables.aclose()


def spooled(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


async def stopped_with_the_backend_down(backend: Backend, folder: Path) -> None:
    """A store that reached the backend once, lost it, counted alone, and was closed."""
    store = backend.store(folder)
    assert await store.counter(SPENT) == 0.0  # reached once (PostgreSQL makes its tables)
    backend.relay.cut()
    await store.adjust(SPENT, 0.5, ttl=40 * 86400)  # a month's budget
    await store.adjust(CALLS, 2.0)
    assert store.health().mode == "local"
    await store.aclose()


async def test_what_a_store_counted_alone_and_kept_at_close_reaches_the_backend_at_next_start(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / ".modelyard" / "config.yaml"
    with caplog.at_level(logging.WARNING, logger="modelyard.state"):
        await stopped_with_the_backend_down(backend, folder)
    [name] = spooled(folder)
    left = folder / name
    assert left.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert name.startswith("state-handover-")  # and no temporary file stays behind
    assert any(str(left) in r.getMessage() for r in caplog.records)
    backend.relay.restore()
    assert await backend.counter(SPENT) == 0.0
    caplog.clear()
    successor = backend.store(folder)
    with caplog.at_level(logging.WARNING, logger="modelyard.state"):
        assert await successor.counter(SPENT) == pytest.approx(0.5)
    assert await successor.counter(CALLS) == pytest.approx(2.0)
    assert spooled(folder) == []
    [told] = [
        r.getMessage() for r in caplog.records if "handed to the state store" in r.getMessage()
    ]
    assert str(left) in told and f"{SPENT} $0.500000" in told
    await successor.aclose()


async def test_a_start_with_the_backend_still_down_keeps_the_spool_until_it_answers(
    backend: Backend, tmp_path: Path
) -> None:
    await stopped_with_the_backend_down(backend, tmp_path)
    [left] = spooled(tmp_path)
    successor = backend.store(tmp_path, retry_interval=0.05)
    assert await successor.counter(SPENT) == 0.0  # alone, and nothing of the spool yet
    assert spooled(tmp_path) == [left]
    backend.relay.restore()
    await asyncio.sleep(0.1)
    assert await successor.counter(SPENT) == pytest.approx(0.5)
    assert spooled(tmp_path) == []
    await successor.aclose()


async def test_a_spool_sent_twice_by_replicas_starting_together_or_again_is_applied_once(
    backend: Backend, tmp_path: Path
) -> None:
    await stopped_with_the_backend_down(backend, tmp_path)
    left = tmp_path / spooled(tmp_path)[0]
    copy = left.read_bytes()
    backend.relay.restore()
    one, other = backend.store(tmp_path), backend.store(tmp_path)
    # Each reads the file and sends it, or finds it gone once the other has: either way the
    # counts are in before either reads.
    both = await asyncio.gather(one.counter(CALLS), other.counter(CALLS))
    assert both == [pytest.approx(2.0)] * 2
    # A replica that crashed after sending, before deleting the file.
    left.write_bytes(copy)
    again = backend.store(tmp_path)
    assert await again.counter(SPENT) == pytest.approx(0.5)
    assert await backend.counter(CALLS) == pytest.approx(2.0)
    assert spooled(tmp_path) == []
    for store in (one, other, again):
        await store.aclose()


async def test_a_spool_older_than_the_backend_remembers_is_set_aside_not_sent(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await stopped_with_the_backend_down(backend, tmp_path)
    [left] = spooled(tmp_path)
    backend.relay.restore()
    later = backend.store(tmp_path, wall=lambda: time.time() + MOVE_MEMORY)
    with caplog.at_level(logging.ERROR, logger="modelyard.state"):
        assert await later.counter(CALLS) == 0.0
    assert spooled(tmp_path) == [f"{left}.held"]
    [told] = [r.getMessage() for r in caplog.records if "might count twice" in r.getMessage()]
    assert f"{SPENT} $0.500000" in told and "1 other counter(s)" in told
    await later.aclose()


async def test_a_counter_whose_window_ended_while_spooled_is_not_revived(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store(tmp_path)
    assert await store.counter(SPENT) == 0.0
    backend.relay.cut()
    await store.adjust("rpm:cheap:minute", 3.0, ttl=60)
    await store.adjust(SPENT, 0.5, ttl=3600)
    await store.aclose()
    backend.relay.restore()
    later = backend.store(tmp_path, wall=lambda: time.time() + 120)
    assert await later.counter(SPENT) == pytest.approx(0.5)
    assert await later.counter("rpm:cheap:minute") == 0.0
    assert spooled(tmp_path) == []
    await later.aclose()


async def test_corrupt_spool_files_are_set_aside_and_the_sound_one_handed_over(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await stopped_with_the_backend_down(backend, tmp_path)
    [sound] = spooled(tmp_path)
    move = {"id": "m", "sent": None, "changes": [[SPENT, float("nan"), None]]}
    corrupt = {
        "state-handover-1-a.json": "{not json",
        "state-handover-1-b.json": json.dumps({"version": 1, "written": 1.0}),
        "state-handover-1-c.json": json.dumps({"version": 1, "written": 1.0, "moves": [move]}),
        "state-handover-1-d.json": json.dumps({"version": 9}),
        "state-handover-1-e.json": "[]",
    }
    for name, text in corrupt.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    backend.relay.restore()
    successor = backend.store(tmp_path)
    with caplog.at_level(logging.ERROR, logger="modelyard.state"):
        assert await successor.counter(SPENT) == pytest.approx(0.5)
    assert spooled(tmp_path) == sorted(f"{name}.corrupt" for name in corrupt)
    assert sound not in spooled(tmp_path)
    told = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(told) == len(corrupt)
    await successor.aclose()


async def test_a_backend_back_at_close_takes_the_counts_and_nothing_is_spooled(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.store(tmp_path, retry_interval=3600)
    assert await store.counter(SPENT) == 0.0
    backend.relay.cut()
    await store.adjust(SPENT, 0.5, ttl=3600)
    backend.relay.restore()  # back, and not tried again for an hour: the close tries it
    await store.aclose()
    assert spooled(tmp_path) == []
    assert await backend.counter(SPENT) == pytest.approx(0.5)


async def test_a_store_without_a_spool_folder_says_what_its_close_loses(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.store(None)
    assert await store.counter(SPENT) == 0.0
    backend.relay.cut()
    await store.adjust(SPENT, 0.5, ttl=3600)
    with caplog.at_level(logging.ERROR, logger="modelyard.state"):
        await store.aclose()
    assert any(
        "is lost" in r.getMessage() and f"{SPENT} $0.500000" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("field", ["backend", "location"])
async def test_a_spool_written_for_another_store_is_kept_and_not_sent(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture, field: str
) -> None:
    # The config named another store since (another server, database or prefix, or the other
    # backend): its counts were handed to whatever store the config named then.
    await stopped_with_the_backend_down(backend, tmp_path)
    [name] = spooled(tmp_path)
    document = json.loads((tmp_path / name).read_text(encoding="utf-8"))
    other = {"backend": "postgres" if backend.kind == "redis" else "redis"}
    other["location"] = "10.0.0.9:7000/3, elsewhere:*"
    document[field] = other[field]
    (tmp_path / name).write_text(json.dumps(document), encoding="utf-8")
    backend.relay.restore()
    successor = backend.store(tmp_path)
    with caplog.at_level(logging.ERROR, logger="modelyard.state"):
        assert await successor.counter(SPENT) == 0.0
    assert await successor.counter(CALLS) == 0.0
    assert spooled(tmp_path) == [name]  # kept as it is, for a config naming that store
    [told] = [r.getMessage() for r in caplog.records if "is not sent" in r.getMessage()]
    assert name in told and other[field] in told and f"{SPENT} $0.500000" in told
    await successor.aclose()


async def test_a_spool_names_its_store_without_the_password_of_its_url(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-pass-9f2c61d0"
    with caplog.at_level(logging.DEBUG):
        await stopped_with_the_backend_down(replace(backend, password=secret), tmp_path)
    [name] = spooled(tmp_path)
    text = (tmp_path / name).read_text(encoding="utf-8")
    assert secret not in text and "s3cret" not in caplog.text
    port = backend.relay.port
    where = {"redis": f"127.0.0.1:{port}/0, {backend.name}*"}
    where["postgres"] = f"127.0.0.1:{port}/test, {backend.name}*"
    assert json.loads(text)["location"] == where[backend.kind]
    backend.relay.restore()
    # The same store with its password changed (or none): the spool is its own.
    rotated = replace(backend, password="another-one").store(tmp_path)
    assert await rotated.counter(SPENT) == pytest.approx(0.5)
    assert spooled(tmp_path) == []
    await rotated.aclose()


async def test_a_spool_written_before_spools_named_their_store_is_checked_by_backend(
    backend: Backend, tmp_path: Path
) -> None:
    # A rolling upgrade: the release before wrote no location; the backend alone is checked.
    await stopped_with_the_backend_down(backend, tmp_path)
    [name] = spooled(tmp_path)
    document = json.loads((tmp_path / name).read_text(encoding="utf-8"))
    del document["location"]
    (tmp_path / name).write_text(json.dumps(document), encoding="utf-8")
    backend.relay.restore()
    successor = backend.store(tmp_path)
    assert await successor.counter(SPENT) == pytest.approx(0.5)
    assert spooled(tmp_path) == []
    await successor.aclose()
