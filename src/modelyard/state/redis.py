"""Shared state in Redis: several gateway processes count against the same budgets and limits.

Every check-and-change is one Lua script, which Redis runs atomically, so two processes can never
both pass a limit only one of them fits under. Rate windows use Redis's own clock (`TIME`), so
processes with skewed clocks still agree; so do leases (a sorted set of ids scored by expiry,
beside a hash of what each reserved, written by the reservation's own script), and the ids of
released leases (a sorted set scored by when they are forgotten). A connection
failure raises `UnavailableError` with code `state_unavailable`; `state.policy.PolicyStore`
decides what that means for requests.

All keys start with `prefix`; in a Redis Cluster, put a hash tag in it (`{modelyard}:`) so a
multi-key reservation stays in one slot. Releasing and sweeping a lease also change the counters
it names (read from the lease, not passed as keys), which the hash tag keeps in that slot too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelyard.errors import UnavailableError, redact
from modelyard.loops import PerLoop
from modelyard.state.base import (
    Change,
    Claim,
    Lease,
    Reclaimed,
    StateStore,
    WindowUse,
    server_location,
)

T = TypeVar("T")

_HUGE = "1e300"
"""What an infinite limit is sent as (Lua's tonumber does not read `inf`)."""

_RESERVE = """
-- KEYS[1], KEYS[2]: the leases (a sorted set of ids scored by expiry, a hash of what each
-- reserved); KEYS[3..]: the counters. ARGV[1], ARGV[2]: the lease's id ('' for none) and its
-- seconds; then each claim's amount, limit and ttl.
local n = #KEYS - 2
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
  if current + tonumber(ARGV[3*i]) > tonumber(ARGV[3*i+1]) + 1e-12 then
    return {i, tostring(current)}
  end
end
for i = 1, n do
  local key = KEYS[i + 2]
  redis.call('INCRBYFLOAT', key, ARGV[3*i])
  local ttl = tonumber(ARGV[3*i+2])
  if ttl > 0 and redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
end
if ARGV[1] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local held = {}
  for i = 1, n do held[i] = {KEYS[i + 2], ARGV[3*i]} end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(held))
end
return {0, '0'}
"""

_GIVE_BACK = """
-- What a lease reserved, taken off its counters; a counter that expired (its window is over)
-- has nothing to give back to.
local function give_back(held)
  for _, pair in ipairs(cjson.decode(held)) do
    if redis.call('EXISTS', pair[1]) == 1 then
      local amount = pair[2]
      if string.sub(amount, 1, 1) == '-' then amount = string.sub(amount, 2)
      else amount = '-' .. amount end
      redis.call('INCRBYFLOAT', pair[1], amount)
    end
  end
end
"""

_RELEASE = (
    _GIVE_BACK
    + """
-- KEYS[1], KEYS[2], KEYS[3]: the leases and the released ids; KEYS[4..]: counters to change.
-- ARGV[1], ARGV[2]: the lease's id and seconds; then each change's delta and ttl.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local values = {}
local seen = redis.call('ZSCORE', KEYS[3], ARGV[1])
if seen and tonumber(seen) > now then
  -- released before: a retry whose first answer was lost
  for j = 1, #KEYS - 3 do values[j] = redis.call('GET', KEYS[j + 3]) or '0' end
  return values
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  give_back(held)
end
for j = 1, #KEYS - 3 do
  local key = KEYS[j + 3]
  values[j] = redis.call('INCRBYFLOAT', key, ARGV[2*j+1])
  local ttl = tonumber(ARGV[2*j+2])
  if ttl > 0 and redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
end
return values
"""
)

_RENEW = """
-- KEYS[1], KEYS[2]: the leases' and the released ids' sorted sets.
local t = redis.call('TIME')
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
  redis.call('ZADD', KEYS[2], 'XX', expires, ARGV[i])
end
return 0
"""

_RECLAIM = (
    _GIVE_BACK
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local held = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if held then
    give_back(held)
    out[#out + 1] = id
    out[#out + 1] = held
  end
end
return out
"""
)

_ADJUST = """
local values = {}
for i, key in ipairs(KEYS) do
  values[i] = redis.call('INCRBYFLOAT', key, ARGV[2*i-1])
  local ttl = tonumber(ARGV[2*i])
  if ttl > 0 and redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
end
return values
"""

_WINDOW_LEFT = """
-- KEYS[1]: a window, a sorted set of 'token:amount' scored by time; KEYS[2]: the running sum
-- of its amounts, so a call costs O(entries expired), not O(entries in the window). The sum
-- once the entries at or before `cutoff` have left: below 0 for a moment when a correction
-- outlives the entry it corrects by a few milliseconds, and kept so (taken as 0 it would count
-- the correction again as it leaves, until the window empties).
local function window_left(cutoff)
  -- No entries (the set expired with its newest): empty, whatever a sum outliving it says.
  if redis.call('ZCARD', KEYS[1]) == 0 then return 0 end
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  if #expired > 0 then
    for i = 1, #expired do used = used - tonumber(string.match(expired[i], ':(.*)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
    if redis.call('ZCARD', KEYS[1]) == 0 then used = 0 end
  end
  return used
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

_WINDOW = (
    _WINDOW_LEFT
    + """
-- Returns the seconds to wait ('0': recorded), the amounts then in the window and the seconds
-- until it has emptied.
local amount, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used = window_left(now - window)
local ttl = math.ceil(window * 1000)
if used + amount <= limit + 1e-12 then
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[1])
  redis.call('SET', KEYS[2], tostring(used + amount), 'PX', ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'0', tostring(used + amount), tostring(window)}
end
-- Kept as long as the entries it sums, no longer.
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('SET', KEYS[2], tostring(used), 'PX', left)
else redis.call('DEL', KEYS[2]) end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local reset = '0'
if #newest > 0 then reset = tostring(math.max(0, tonumber(newest[2]) + window - now)) end
local function refused(wait) return {tostring(wait), tostring(used), reset} end
if amount > limit then return refused(window) end
local excess, freed, start = used + amount - limit, 0, 0
while true do
  local batch = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
  if #batch == 0 then return refused(window) end
  for i = 1, #batch, 2 do
    freed = freed + tonumber(string.match(batch[i], ':(.*)$'))
    if freed >= excess - 1e-12 then
      return refused(math.max(0, tonumber(batch[i + 1]) + window - now))
    end
  end
  start = start + 100
end
"""
)

_WINDOW_CORRECT = (
    _WINDOW_LEFT
    + """
-- ARGV: the amount, its age (seconds, below the window's length), the window's length, a token.
local age, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local used = window_left(now - window)
redis.call('ZADD', KEYS[1], now - age, ARGV[4] .. ':' .. ARGV[1])
-- Both kept until the newest entry leaves: this one, or one acquired since.
local ttl = math.max(math.ceil((window - age) * 1000), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[2], tostring(used + tonumber(ARGV[1])), 'PX', ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""
)


def redis_client(url: str, *, timeout: float) -> aioredis.Redis:
    """A client to `url` that gives up after `timeout` seconds and never resends a command by
    itself: a script whose answer was lost may have run, and sent twice it would count twice."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


class RedisClients:
    """A client to `url` for each event loop using it (`redis_client`): redis-py's connections,
    and the pool's lock, serve only the loop they were first used on, and a library yard may
    serve several loops (one `asyncio.run` after another, or threads' loops at once). Each is
    opened on its loop's first command, closed at that loop's end (`leave_loop`) or, on its
    own loop, at `aclose`. What they count lives in the server, so limits stay exact across
    loops; Lua scripts too live there (`script`), not in a connection."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._clients: PerLoop[aioredis.Redis] = PerLoop()
        self._registry = redis_client(url, timeout=timeout)
        """Registers scripts (their SHA, in its encoding); never connects."""

    def here(self) -> aioredis.Redis:
        """The running loop's client (made on its first use): one dict look-up."""
        client = self._clients.get(asyncio.get_running_loop())
        if client is None:
            client = redis_client(self.url, timeout=self.timeout)
            self._clients.put(asyncio.get_running_loop(), client)
        return client

    def script(self, text: str) -> AsyncScript:
        """A Lua script, called with `client=here()` (the server loads it on first use)."""
        return self._registry.register_script(text)

    async def leave_loop(self) -> None:
        """The running loop is ending: close its client."""
        await self._clients.leave(aioredis.Redis.aclose)

    async def aclose(self) -> None:
        """Close every loop's client, each on its own loop."""
        await self._clients.close_all(aioredis.Redis.aclose)


async def drop_idle_connections(client: aioredis.Redis) -> None:
    """Close the idle connections of `client`'s pool, after one of them failed to connect or
    lost its server: they lead to a server that is gone or was restarted, and each would fail
    once more when next used, taking the store (or cache) down again for a whole
    `retry_interval` after it is back. The next command opens a fresh one."""
    with contextlib.suppress(RedisError, OSError):
        await client.connection_pool.disconnect(inuse_connections=False)


def _ttl_ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


def _changes(changes: Sequence[Change]) -> list[Any]:
    args: list[Any] = []
    for _, delta, ttl in changes:
        args += [repr(delta), _ttl_ms(ttl)]
    return args


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _limit(value: float) -> str:
    return _HUGE if math.isinf(value) else repr(value)


class RedisStore(StateStore):
    """State in one Redis database, shared by every process pointed at it."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "modelyard:", timeout: float = 1.0) -> None:
        self.url = url
        self.prefix = prefix
        self.location = server_location(url, default_port=6379, database="0", names=f"{prefix}*")
        self._clients = RedisClients(url, timeout=timeout)
        self._reserve = self._clients.script(_RESERVE)
        self._adjust = self._clients.script(_ADJUST)
        self._window = self._clients.script(_WINDOW)
        self._window_correct = self._clients.script(_WINDOW_CORRECT)
        self._release = self._clients.script(_RELEASE)
        self._renew = self._clients.script(_RENEW)
        self._reclaim = self._clients.script(_RECLAIM)
        self._leases = [self._key("leases", "expiry"), self._key("leases", "held")]
        self._released = self._key("leases", "released")

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    async def _call(self, operation: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """`operation` on the running loop's client, its failures as `UnavailableError`."""
        client = self._clients.here()
        try:
            return await operation(client)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await drop_idle_connections(client)
            raise UnavailableError(
                f"state store redis at {redact(_safe_url(self.url))} is unreachable: "
                f"{type(exc).__name__}",
                code="state_unavailable",
            ) from exc
        except RedisError as exc:
            raise UnavailableError(
                f"state store redis failed: {redact(str(exc))}", code="state_unavailable"
            ) from exc

    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        refused = await self.reserve_or_explain(claims)
        return None if refused is None else refused[0]

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        if not claims:
            return None
        keys = self._leases + [self._key("c", c.key) for c in claims]
        args: list[Any] = ["", 0] if lease is None else [lease.id, repr(lease.seconds)]
        for claim in claims:
            args += [repr(claim.amount), _limit(claim.limit), _ttl_ms(claim.ttl)]
        index, current = await self._call(lambda c: self._reserve(keys, args, c))
        return None if int(index) == 0 else (claims[int(index) - 1], float(current))

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        return (await self.adjust_many([(key, delta, ttl)]))[0]

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        if not changes:
            return []
        keys = [self._key("c", key) for key, _, _ in changes]
        values = await self._call(lambda c: self._adjust(keys, _changes(changes), c))
        return [float(v) for v in values]

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        keys = [*self._leases, self._released, *(self._key("c", key) for key, _, _ in changes)]
        args = [lease.id, repr(lease.seconds), *_changes(changes)]
        values = await self._call(lambda c: self._release(keys, args, c))
        return [float(v) for v in values]

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        if lease_ids:
            args = [repr(seconds), *lease_ids]
            keys = [self._leases[0], self._released]
            await self._call(lambda c: self._renew(keys, args, c))

    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        keys = [*self._leases, self._released]
        flat = await self._call(lambda c: self._reclaim(keys, [limit], c))
        counters = len(self._key("c", ""))
        out = []
        for lease_id, held in zip(flat[::2], flat[1::2], strict=True):
            amounts = tuple((key[counters:], float(a)) for key, a in json.loads(held))
            out.append(Reclaimed(id=_text(lease_id), amounts=amounts))
        return out

    async def counter(self, key: str) -> float:
        value = await self._call(lambda c: c.get(self._key("c", key)))
        return float(value) if value is not None else 0.0

    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        token = uuid.uuid4().hex
        wait, used, reset = await self._call(
            lambda c: self._window(
                [self._key("w", key), self._key("ws", key)],
                [repr(amount), _limit(limit), repr(window), token],
                c,
            )
        )
        return WindowUse(wait=float(wait), used=float(used), reset=float(reset))

    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        if age >= window:
            return
        token = uuid.uuid4().hex
        await self._call(
            lambda c: self._window_correct(
                [self._key("w", key), self._key("ws", key)],
                [repr(amount), repr(max(age, 0.0)), repr(window), token],
                c,
            )
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda c: c.get(self._key("v", key)))
        return None if value is None else value if isinstance(value, bytes) else value.encode()

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        px = _ttl_ms(ttl) or None
        await self._call(lambda c: c.set(self._key("v", key), value, px=px))

    async def delete(self, key: str) -> None:
        names = [self._key(kind, key) for kind in ("c", "v", "w", "ws")]
        await self._call(lambda c: c.delete(*names))

    async def ping(self) -> None:
        """Raise UnavailableError unless Redis answers."""
        await self._call(lambda c: c.ping())

    async def clear_prefix(self) -> int:
        """Delete every key under this prefix (tests, `cache clear`); returns how many."""
        client, deleted = self._clients.here(), 0
        async for name in client.scan_iter(match=f"{self.prefix}*", count=500):
            deleted += int(await client.delete(name))
        return deleted

    async def leave_loop(self) -> None:
        await self._clients.leave_loop()

    async def aclose(self) -> None:
        await self._clients.aclose()


def _safe_url(url: str) -> str:
    """The URL without its credentials: the user and password before `@`, and the query, where
    redis-py also takes a `password=` (`redis://host:6379/0?password=...`)."""
    scheme, _, rest = url.partition("://")
    rest, query, _ = rest.partition("?")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}://{rest}" + ("?***" if query else "")
