"""Who is calling: the key ring's answers to odd secrets and the admin check per auth mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import httpx2
import pytest
from tests.gateway.conftest import Running

from modelyard.gateway.auth import KeyRing, require_admin
from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import Call
from modelyard.gateway.keys import SqliteKeyStore


def ring(
    tmp_path: Path, mode: Literal["auto", "required", "off"], admin: str | None = None
) -> KeyRing:
    return KeyRing(SqliteKeyStore(tmp_path / "keys.sqlite3"), mode=mode, admin_secret=admin)


async def _unused() -> dict[str, object]:
    raise AssertionError("not called")


async def _ignore(message: dict[str, object]) -> None:
    raise AssertionError("not called")


def local_call(authorization: bytes | None = None) -> Call:
    headers = {b"authorization": authorization} if authorization is not None else {}
    return Call(
        scope={"client": ("127.0.0.1", 50000)},
        receive=_unused,
        send=_ignore,
        id="test",
        started=0.0,
        headers=headers,
    )


def test_a_non_ascii_secret_is_an_unknown_key_not_a_crash(tmp_path: Path) -> None:
    keys = ring(tmp_path, "auto", admin="admin-secret-123456")
    with pytest.raises(ApiError) as caught:
        keys.authenticate("Bearer-\u00e9\u00e9")  # a latin-1 header decoded as it arrived
    assert caught.value.status == 401
    assert keys.authenticate("admin-secret-123456").admin


def test_a_non_ascii_key_header_gets_401_from_the_gateway(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway("gateway: {admin_key: admin-secret-123456}\n")
    for header in (b"authorization", b"x-api-key"):
        value = b"Bearer caf\xc3\xa9" if header == b"authorization" else b"caf\xc3\xa9"
        reply = httpx2.get(f"{running.url}/v1/models", headers={header: value})
        assert reply.status_code == 401, reply.text


async def test_auth_off_with_an_admin_key_still_needs_it_for_admin_routes(tmp_path: Path) -> None:
    keys = ring(tmp_path, "off", admin="admin-secret-123456")
    assert keys.open  # callers need no key...
    with pytest.raises(ApiError) as caught:
        await require_admin(keys, local_call())  # ...but the admin routes keep their key
    assert caught.value.status == 403
    await require_admin(keys, local_call(b"Bearer admin-secret-123456"))


async def test_auth_off_with_virtual_keys_does_not_make_local_callers_admin(tmp_path: Path) -> None:
    keys = ring(tmp_path, "off")
    await keys.store.create("team-a")
    keys = ring(tmp_path, "off")
    with pytest.raises(ApiError) as caught:
        await require_admin(keys, local_call())
    assert caught.value.status == 403


async def test_without_an_admin_key_an_admin_route_says_how_to_get_one(tmp_path: Path) -> None:
    # Once a key existed, POST /admin/reload asked for "an API key" (401) or "the admin key"
    # (403), though none was set and no key a caller could send would pass.
    await ring(tmp_path, "auto").store.create("team-a")
    secret, _ = await ring(tmp_path, "auto").store.create("team-b")
    for authorization in (None, f"Bearer {secret}".encode()):
        with pytest.raises(ApiError) as caught:
            await require_admin(ring(tmp_path, "auto"), local_call(authorization))
        assert caught.value.status == 403
        assert "none is set: set gateway.admin_key" in caught.value.message
    with pytest.raises(ApiError) as caught:  # with one set, the usual answers
        await require_admin(ring(tmp_path, "auto", admin="admin-secret-123456"), local_call())
    assert caught.value.status == 401


async def test_with_nothing_configured_a_local_operator_may_administer(tmp_path: Path) -> None:
    for mode in ("auto", "off"):
        await require_admin(ring(tmp_path / mode, mode), local_call())
    with pytest.raises(ApiError):
        await require_admin(ring(tmp_path / "required", "required"), local_call())


class CountingStore(SqliteKeyStore):
    """A key file that counts how often the ring reads its version."""

    reads = 0

    async def version(self) -> int:
        self.reads += 1
        return await super().version()


async def test_a_flood_of_unknown_keys_reads_the_store_a_few_times_not_once_each(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "keys.sqlite3")
    await store.create("existing")
    keys = KeyRing(store, mode="auto", admin_secret=None, recheck_every=0.2)
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(keys.identify(f"sk-guess-{n}") for n in range(200)), return_exceptions=True
    )
    assert all(isinstance(o, ApiError) and o.status == 401 for o in outcomes)
    for n in range(5):  # one after another: each waits for the next read it may ask for
        with pytest.raises(ApiError):
            await keys.identify(f"sk-again-{n}")
    elapsed = time.monotonic() - started
    assert store.reads <= 2 + elapsed / 0.2, (store.reads, elapsed)
    # A key made elsewhere meanwhile (another process of this host) is let in at once.
    secret, key = await SqliteKeyStore(store.path).create("new")
    assert await keys.identify(secret) == key
    await keys.aclose()
