"""Virtual keys in PostgreSQL shared by gateway replicas on several hosts: a key made or revoked
on one is honoured by the others within about a second. Talks to the real server at
127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx2
import openai
import pytest
from tests.fakes.server import free_port
from tests.fakes.tcp_relay import TcpRelay
from tests.gateway.conftest import SYSTEMS, Running
from tests.state.conftest import POSTGRES_URL, fresh_tables
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import ConfigError
from modelyard.gateway.app import create_app
from modelyard.gateway.auth import KeyRing
from modelyard.gateway.errors import ApiError
from modelyard.gateway.keys import SqliteKeyStore, hash_key
from modelyard.gateway.keys_postgres import PostgresKeyStore

pytestmark = pytest.mark.postgres

ADMIN = {"authorization": "Bearer admin-secret-123456"}


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Tables no other test run uses, dropped afterwards."""
    async for name in fresh_tables(PostgresKeyStore):
        yield name


def replica(prefix: str, **options: object) -> PostgresKeyStore:
    """A key store as one replica holds it."""
    return PostgresKeyStore(POSTGRES_URL, table_prefix=prefix, **options)  # type: ignore[arg-type]


async def test_a_key_made_on_one_replica_is_seen_by_another_and_its_secret_is_nowhere(
    prefix: str,
) -> None:
    one, other = replica(prefix), replica(prefix)
    try:
        before = await other.version()
        secret, key = await one.create("team-a", systems=["support"], rpm=5, budget=2.5)
        assert await other.version() != before
        seen = await other.snapshot()
        assert seen.issued and seen.active[hash_key(secret)] == key
        assert await other.all() == [key]
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows = await conn.fetch(f"SELECT * FROM {prefix}keys")
        finally:
            await conn.close()
        assert secret not in repr([dict(r) for r in rows])
    finally:
        await one.aclose()
        await other.aclose()


async def test_a_key_revoked_on_one_replica_is_refused_by_anothers_ring(prefix: str) -> None:
    one = replica(prefix)
    secret, key = await one.create("leaving")
    ring = KeyRing(replica(prefix), mode="auto", admin_secret=None)  # a replica starting now
    try:
        assert ring.authenticate(secret) == key
        assert await one.revoke(key.id)
        assert not await one.revoke(key.id)  # no longer active
        assert ring.authenticate(secret) == key  # until the next refresh, from memory
        await ring.refresh()
        with pytest.raises(ApiError) as caught:
            ring.authenticate(secret)
        assert caught.value.status == 401
        assert not ring.open  # revoking the last key does not open the gateway
    finally:
        await ring.aclose()
        await one.aclose()


async def test_the_keys_of_the_sqlite_file_are_imported_once_with_ids_and_revocations(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = SqliteKeyStore(tmp_path / "keys.sqlite3")
    kept_secret, kept = await local.create("kept", systems=["support"], max_concurrency=2, tpm=5000)
    _, gone = await local.create("gone")
    assert await local.revoke(gone.id)
    # Several replicas start at once, each with a copy of the file, and all find the shared
    # table without those keys: held back from writing until each has looked.
    tables = replica(prefix)
    await tables.version()  # they exist
    await tables.aclose()
    starting = [replica(prefix, local=local.path) for _ in range(3)]
    holder = await asyncpg.connect(POSTGRES_URL)
    with caplog.at_level(logging.INFO, logger="modelyard.gateway"):
        try:
            async with holder.transaction():
                await holder.execute(f"LOCK TABLE {prefix}keys IN SHARE ROW EXCLUSIVE MODE")
                looking = [asyncio.ensure_future(store.snapshot()) for store in starting]
                await waiting_on_locks(holder, prefix, len(starting))
            seen = await asyncio.gather(*looking)
        finally:
            await holder.close()
    for snapshot in seen:
        assert dict(snapshot.active) == {hash_key(kept_secret): kept}
    assert [k.id for k in await starting[0].all()] == [kept.id, gone.id]
    assert await starting[0].all() == await local.all()  # revoked then, revoked now
    imports = [r.getMessage() for r in caplog.records if "imported" in r.getMessage()]
    assert len(imports) == 1 and imports[0].startswith("imported 2 virtual keys (1 revoked)")
    assert str(local.path) in imports[0] and "gateway.keys_url" in imports[0]
    assert "postgres@" not in imports[0]
    # A revocation made in the file afterwards (a host not yet moved) is carried over too.
    assert await local.revoke(kept.id)
    caplog.clear()
    again = replica(prefix, local=local.path)
    with caplog.at_level(logging.INFO, logger="modelyard.gateway"):
        assert not (await again.snapshot()).active
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("imported 0 virtual keys (0 revoked) and 1 revocations")
    for store in (*starting, again):
        await store.aclose()


async def test_a_keys_tpm_is_a_column_older_releases_still_insert_and_select_around(
    prefix: str,
) -> None:
    """An older release sharing the tables during an upgrade writes its keys with its column
    list (or, by position, one value short): they read back with no tpm, and its SELECT of the
    columns it knows still answers."""
    _, metered = await replica(prefix).create("metered", tpm=500)
    old = "hash, id, name, systems, rpm, budget, max_concurrency, admin, created, revoked"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(
            f"INSERT INTO {prefix}keys ({old}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            "a" * 64, "key_listed", "listed", ["*"], 3, None, None, False, time.time(), None,
        )  # fmt: skip
        await conn.execute(
            f"INSERT INTO {prefix}keys VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            "key_placed", "b" * 64, "placed", ["*"], None, None, None, False, time.time(), None,
        )  # fmt: skip
        assert len(await conn.fetch(f"SELECT {old} FROM {prefix}keys")) == 3
    finally:
        await conn.close()
    store = replica(prefix)
    assert {k.name: k.tpm for k in await store.all()} == {
        "metered": 500,
        "listed": None,
        "placed": None,
    }
    assert (await store.all())[0] == metered
    await store.aclose()


async def waiting_on_locks(conn: asyncpg.Connection, prefix: str, count: int) -> None:
    """Until `count` sessions wait for a lock (the import's inserts, behind the test's)."""
    for _ in range(200):
        await conn.execute("SELECT pg_stat_clear_snapshot()")  # else read once a transaction
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE $1",
            f"INSERT INTO {prefix}keys%",
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {waiting} of {count} imports reached their insert")


async def test_a_replica_keeps_serving_the_keys_it_has_while_the_database_is_down(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    relay = TcpRelay("127.0.0.1", 5432)
    relay.restore()
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{relay.port}/test"
    writer = replica(prefix)
    secret, key = await writer.create("steady")
    store = PostgresKeyStore(url, table_prefix=prefix, timeout=1.0)
    ring = KeyRing(store, mode="required", admin_secret=None)
    try:
        await ring.refresh()  # connected from this loop
        relay.cut()
        with caplog.at_level(logging.INFO, logger="modelyard.gateway"):
            for _ in range(3):
                await ring.refresh()
                assert ring.authenticate(secret) == key
            ours = [r for r in caplog.records if r.name == "modelyard.gateway"]
            warnings = [r.getMessage() for r in ours]
            assert len(warnings) == 1, warnings
            assert "serving the 1 active ones last read" in warnings[0]
            assert "gateway.keys_url" in warnings[0] and "hunter2" not in warnings[0]
            assert "HTTP" not in warnings[0]
            relay.restore()
            assert await writer.revoke(key.id)
            await ring.refresh()
        with pytest.raises(ApiError):
            ring.authenticate(secret)
        ours = [r.getMessage() for r in caplog.records if r.name == "modelyard.gateway"]
        assert "refreshed again" in ours[-1]
    finally:
        await ring.aclose()
        await writer.aclose()
        relay.close()


def config_text(prefix: str, keys_db: str, url: str = POSTGRES_URL) -> str:
    return SYSTEMS + (
        f"gateway:\n  admin_key: admin-secret-123456\n  keys_db: {keys_db}\n"
        f"  keys_url: '{url}'\n  keys_table_prefix: {prefix}\n"
    )


def test_replicas_on_two_hosts_share_keys_through_the_gateway(
    serve_gateway: Callable[..., Running], prefix: str
) -> None:
    first = serve_gateway(text=config_text(prefix, "host-a/keys.sqlite3"))
    second = serve_gateway(text=config_text(prefix, "host-b/keys.sqlite3"))
    made = httpx2.post(f"{first.url}/admin/keys", json={"name": "roaming"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    secret, key_id = made.json()["key"], made.json()["id"]

    def ask(running: Running) -> str | None:
        client = openai.OpenAI(base_url=running.openai_url, api_key=secret, max_retries=0)
        reply = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
        return reply.choices[0].message.content

    assert ask(first) == "pong"  # the replica that made it knows it at once
    deadline = time.monotonic() + 3
    while True:
        try:
            assert ask(second) == "pong"
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the other replica never accepted the key"
            time.sleep(0.05)
    revoked = httpx2.delete(f"{second.url}/admin/keys/{key_id}", headers=ADMIN)
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    while True:
        try:
            ask(first)
        except openai.AuthenticationError:
            break
        assert time.monotonic() - started < 3, "the revoked key kept working on the other host"
        time.sleep(0.05)
    listed = httpx2.get(f"{first.url}/admin/keys", headers=ADMIN).json()["keys"]
    assert [(k["id"], k["revoked"] is not None) for k in listed] == [(key_id, True)]
    assert not (first.config.parent / "host-a").exists()  # the file is never made


def test_a_key_made_a_moment_ago_on_another_replica_is_let_in_at_once(
    serve_gateway: Callable[..., Running], prefix: str
) -> None:
    replicas = [
        serve_gateway(text=config_text(prefix, f"host-{name}/keys.sqlite3")) for name in "ab"
    ]
    for n in range(3):  # each well within the replicas' one-second poll
        made = httpx2.post(
            f"{replicas[n % 2].url}/admin/keys", json={"name": f"new-{n}"}, headers=ADMIN
        )
        assert made.status_code == 201, made.text
        other = replicas[(n + 1) % 2]
        client = openai.OpenAI(base_url=other.openai_url, api_key=made.json()["key"], max_retries=0)
        reply = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
        assert reply.choices[0].message.content == "pong"
    stranger = openai.OpenAI(base_url=replicas[0].openai_url, api_key="sk-nobody", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_the_keys_commands_use_the_shared_store(prefix: str, tmp_path: Path) -> None:
    hosts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = tmp_path / name / "config.yaml"
        config.write_text(config_text(prefix, "keys.sqlite3"))
        hosts.append(str(config))
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", hosts[0], "--name", "ops", "-s", "support"])
    assert made.exit_code == 0, made.output
    key_id = made.output.split()[1]
    listed = runner.invoke(app, ["keys", "list", hosts[1]])
    assert listed.exit_code == 0 and key_id in listed.output and "active" in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", hosts[1], key_id])
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(app, ["keys", "list", hosts[0]])
    assert key_id in listed.output and "revoked" in listed.output
    assert not (tmp_path / "a" / "keys.sqlite3").exists()


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://gw:hunter2-secret@127.0.0.1:{free_port()}/keys"
    config = tmp_path / "config.yaml"
    config.write_text(config_text("modelyard_", "keys.sqlite3", url))
    made = CliRunner().invoke(app, ["keys", "create", str(config), "--name", "x"])
    assert made.exit_code == 1
    assert "gateway.keys_url (postgresql://127.0.0.1:" in made.output
    assert "cannot use the keys tables" in made.output and "hunter2" not in made.output
    with pytest.raises(ConfigError) as caught:
        create_app(config)  # the gateway does not start without knowing its keys
    assert "gateway.keys_url (postgresql://127.0.0.1:" in str(caught.value)
    assert "hunter2" not in str(caught.value) and str(config) in str(caught.value)


def test_a_keys_url_that_is_not_one_is_refused_without_echoing_it(tmp_path: Path) -> None:
    for url, expected in (
        ("postgresql://gw:hunter2-secret@db:port/keys", "is not a valid URL"),
        ("mysql://gw:hunter2-secret@db/keys", "should match pattern '^postgres'"),
    ):
        config = tmp_path / "config.yaml"
        config.write_text(config_text("modelyard_", "keys.sqlite3", url))
        listed = CliRunner().invoke(app, ["keys", "list", str(config)])
        assert listed.exit_code == 2 and "gateway.keys_url" in listed.output
        assert expected in listed.output and "hunter2" not in listed.output


def test_while_the_database_is_down_known_keys_answer_and_key_changes_get_503(
    serve_gateway: Callable[..., Running], prefix: str
) -> None:
    relay = TcpRelay("127.0.0.1", 5432)
    relay.restore()
    try:
        url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{relay.port}/test"
        running = serve_gateway(text=config_text(prefix, "keys.sqlite3", url))
        made = httpx2.post(f"{running.url}/admin/keys", json={"name": "steady"}, headers=ADMIN)
        client = openai.OpenAI(
            base_url=running.openai_url, api_key=made.json()["key"], max_retries=0
        )
        relay.cut()
        time.sleep(1.5)  # a refresh or more has failed
        reply = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
        assert reply.choices[0].message.content == "pong"
        refused = httpx2.post(f"{running.url}/admin/keys", json={"name": "new"}, headers=ADMIN)
        assert refused.status_code == 503
        message = refused.json()["error"]["message"]
        assert "gateway.keys_url (postgresql://127.0.0.1:" in message and "hunter2" not in message
    finally:
        relay.close()
