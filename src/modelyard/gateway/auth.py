"""Who is calling: virtual keys held in memory, refreshed from the key store in the background,
and the admin key from the config."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Literal

from modelyard.background import error_text, run_blocking
from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import Call
from modelyard.gateway.keys import KeySnapshot, KeyStore, VirtualKey, hash_key

log = logging.getLogger("modelyard.gateway")

ANONYMOUS = VirtualKey(id="anonymous", name="anonymous")
ADMIN = VirtualKey(id="admin", name="admin", admin=True)


class KeyRing:
    """Answers "which key is this?" from memory; a background task follows the key store.
    Made with the keys read once (a store that cannot be read then is an error: better no
    gateway than one whose keys are unknown); while running, a store that cannot be read
    leaves the keys last read in service."""

    def __init__(
        self,
        store: KeyStore,
        *,
        mode: Literal["auto", "required", "off"],
        admin_secret: str | None,
        refresh_every: float = 1.0,
        recheck_every: float = 0.2,
    ) -> None:
        self.store = store
        self.mode = mode
        # Compared as bytes: compare_digest refuses str with non-ASCII characters, which any
        # caller can put in a header.
        self._admin = admin_secret.encode() if admin_secret is not None else None
        self._take(run_blocking(lambda: _first_look(store), name="modelyard-keys"))
        self._refresh_every = refresh_every
        self._recheck_every = recheck_every
        """Seconds at least between the reads an unknown key asks for (`recheck`)."""
        self._reading = asyncio.Lock()
        """One read of the store at a time."""
        self._read_at = float("-inf")
        """When the last read started (monotonic)."""
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def open(self) -> bool:
        """Whether callers without a key are let in."""
        if self.mode == "off":
            return True
        if self.mode == "required":
            return False
        # Revoking the last key must not let everyone in: open only while no key was ever made.
        return self.unguarded

    @property
    def unguarded(self) -> bool:
        """Whether no key was ever made and no admin key is set: nothing to prove who calls."""
        return not self._issued and self._admin is None

    def start(self) -> None:
        """Follow the key store from inside the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_every)
            await self.refresh()

    def active(self) -> list[VirtualKey]:
        """The keys that may call, as last read."""
        return list(self._keys.values())

    def _take(self, snapshot: KeySnapshot) -> None:
        self._keys, self._issued, self._version = snapshot.active, snapshot.issued, snapshot.version

    async def refresh(self) -> None:
        """Reload the keys if the store changed."""
        async with self._reading:
            self._read_at = time.monotonic()
            await self._refresh()

    async def recheck(self) -> None:
        """Read the store again, as a key this ring does not know asks before it is refused:
        it may have been made on another replica since the last poll. The read starts after
        this call, and reads are `recheck_every` seconds apart at least however many callers
        ask, so a flood of unknown keys adds a few reads a second to the store, no more: the
        callers waiting meanwhile share the next one."""
        asked = time.monotonic()
        async with self._reading:
            if self._read_at > asked:  # a read started since, and has ended
                return
            await asyncio.sleep(self._read_at + self._recheck_every - time.monotonic())
            self._read_at = time.monotonic()
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            if await self.store.version() != self._version:
                self._take(await self.store.snapshot())
        except Exception as exc:  # a key store down must not lock out every caller
            if not self._failing:  # once an outage, not every second of it
                self._failing = True
                log.warning(
                    "cannot refresh virtual keys, serving the %d active ones last read until "
                    "the store answers again: %s",
                    len(self._keys),
                    error_text(exc),
                )
            return
        if self._failing:
            self._failing = False
            log.info("virtual keys refreshed again from %s", self.store.source)

    async def identify(self, secret: str | None) -> VirtualKey:
        """`authenticate`, reading the store once more (`recheck`) before refusing a key that is
        not known here: a key made on another replica a moment ago is let in, not refused
        until the next poll."""
        try:
            return self.authenticate(secret)
        except ApiError as error:
            if error.code != "invalid_api_key":
                raise
        await self.recheck()
        return self.authenticate(secret)

    @property
    def has_admin_key(self) -> bool:
        """Whether the config sets `gateway.admin_key`."""
        return self._admin is not None

    def authenticate(self, secret: str | None) -> VirtualKey:
        """The key behind `secret`; ApiError 401 when it is missing, unknown or revoked."""
        if secret:
            if self._admin is not None and hmac.compare_digest(secret.encode(), self._admin):
                return ADMIN
            key = self._keys.get(hash_key(secret))
            if key is not None:
                return key
            if self.open:
                return ANONYMOUS
            raise ApiError(
                401, "invalid or revoked API key", "authentication_error", "invalid_api_key"
            )
        if self.open:
            return ANONYMOUS
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            "authentication_error",
            "missing_api_key",
        )

    async def aclose(self) -> None:
        """Stop following the store, and close it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.aclose()


async def _first_look(store: KeyStore) -> KeySnapshot:
    """The store's keys, read in a loop of their own: what it opened there is closed here."""
    try:
        return await store.snapshot()
    finally:
        await store.aclose()


async def caller(ring: KeyRing, call: Call) -> VirtualKey:
    """The key a request presents (`Authorization: Bearer` or `x-api-key`), remembered on it."""
    header = call.header(b"authorization")
    secret = header[7:].strip() if header and header[:7].lower() == "bearer " else None
    call.key = await ring.identify(secret or call.header(b"x-api-key"))
    return call.key


NO_ADMIN_KEY = (
    "this route needs the admin key, and none is set: set gateway.admin_key in the config and "
    "restart the gateway (it is read at start); a SIGHUP reloads the config without it"
)
"""The refusal of an admin route while no admin key is configured and keys exist: no key a
caller could send would pass, so it says what would (the missing-key 401 asked for one)."""


async def require_admin(ring: KeyRing, call: Call) -> None:
    """403 unless the caller holds the admin key (or no key was ever made and the call is local)."""
    try:
        key = await caller(ring, call)
    except ApiError:
        if ring.has_admin_key:
            raise
        raise ApiError(403, NO_ADMIN_KEY, "permission_error", "admin_only") from None
    if ring.open and ring.unguarded and call.from_loopback:
        # No key configured at all: a local operator may administer. With `auth: off` the
        # gateway is open to callers, but an admin key or a virtual key still guards admin.
        return
    if not key.admin:
        message = "this route needs the admin key" if ring.has_admin_key else NO_ADMIN_KEY
        raise ApiError(403, message, "permission_error", "admin_only")
