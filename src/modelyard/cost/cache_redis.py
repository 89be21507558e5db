"""The response cache in Redis, shared by several gateway processes.

Entries are plain keys with a TTL; a sorted set ranks them by last use, and the put script
evicts the least recently used beyond `max_entries` in the same atomic step (expired ones are
dropped from the set when counted). Semantic vectors live in one hash per scope. A Redis
failure never fails a request: the cache answers "miss", says so once, and leaves Redis alone for
`retry_interval` seconds, so a server that is down (or a network that drops packets, where each
try would wait out the timeout) costs requests nothing until it is tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from modelyard.cost.cache_store import CacheBackend, CacheStats
from modelyard.state.redis import RedisClients, drop_idle_connections

T = TypeVar("T")
log = logging.getLogger("modelyard.cache")

_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #old, 2 do redis.call('DEL', ARGV[6] .. old[i]) end
end
return 0
"""

_GET = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2]) end
return value
"""

_LIVE = """
local live = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. key) == 1 then live = live + 1
  else redis.call('ZREM', KEYS[1], key) end
end
return live
"""

_ADD_VECTOR = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[4]) then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if redis.call('EXISTS', ARGV[5] .. field) == 0 then redis.call('HDEL', KEYS[1], field) end
  end
end
return 0
"""


class RedisCache(CacheBackend):
    """Cache entries in Redis under `prefix`."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        max_entries: int,
        timeout: float = 1.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_entries=max_entries)
        self.prefix = prefix
        self.retry_interval = retry_interval
        self._clock = clock
        self._down_until: float | None = None
        """While Redis is taken to be down: when to try it again."""
        self._clients = RedisClients(url, timeout=timeout)
        self._put = self._clients.script(_PUT)
        self._get = self._clients.script(_GET)
        self._add_vector = self._clients.script(_ADD_VECTOR)
        self._live = self._clients.script(_LIVE)

    async def _safe(self, operation: Callable[[aioredis.Redis], Awaitable[T]], default: T) -> T:
        """`operation` on the running loop's client; `default` when Redis fails (or is taken
        to be down)."""
        down_until = self._down_until
        if down_until is not None and self._clock() < down_until:
            return default
        client = self._clients.here()
        try:
            value = await operation(client)
        except (RedisError, OSError) as exc:
            if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
                await drop_idle_connections(client)
            if down_until is None:
                log.warning(
                    "cache redis unavailable (%s); serving without the cache, trying it again "
                    "every %g s",
                    type(exc).__name__,
                    self.retry_interval,
                )
            self._down_until = self._clock() + self.retry_interval
            return default
        if down_until is not None:
            self._down_until = None
            log.warning("cache redis is back; serving from the cache again")
        return value

    async def get(self, key: str) -> bytes | None:
        value = await self._safe(
            lambda c: self._get(
                [self.prefix + "e:" + key, self.prefix + "lru"], [time.time(), key], c
            ),
            None,
        )
        return value if isinstance(value, bytes) or value is None else bytes(value)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._safe(
            lambda c: self._put(
                [self.prefix + "e:" + key, self.prefix + "lru"],
                [
                    value,
                    max(1, int(ttl * 1000)),
                    time.time(),
                    key,
                    self.max_entries,
                    self.prefix + "e:",
                ],
                c,
            ),
            None,
        )

    async def add_vector(self, scope: str, key: str, blob: bytes, ttl: float) -> None:
        await self._safe(
            lambda c: self._add_vector(
                [self.prefix + "v:" + scope],
                [key, blob, max(1, int(ttl * 1000)), self.max_entries, self.prefix + "e:"],
                c,
            ),
            None,
        )

    async def vectors(self, scope: str) -> list[tuple[str, bytes]]:
        found: dict[bytes, bytes] = await self._safe(
            lambda c: c.hgetall(self.prefix + "v:" + scope),  # type: ignore[arg-type,return-value]
            {},
        )
        return [(k.decode(), v) for k, v in found.items()]

    async def count(self, *, hit: bool, saved: float = 0.0) -> None:
        async def write(client: aioredis.Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                if hit:
                    pipe.hincrby(self.prefix + "stats", "hits", 1)
                    pipe.hincrbyfloat(self.prefix + "stats", "saved", saved)
                else:
                    pipe.hincrby(self.prefix + "stats", "misses", 1)
                await pipe.execute()

        await self._safe(write, None)

    async def stats(self) -> CacheStats:
        client = self._clients.here()
        counts = await client.hgetall(self.prefix + "stats")  # type: ignore[misc]
        # Entries expire on their own; the LRU index forgets them here (and when evicting).
        entries = await self._live([self.prefix + "lru"], [self.prefix + "e:"], client)
        return CacheStats(
            entries=int(entries),
            hits=int(counts.get(b"hits", 0)),
            misses=int(counts.get(b"misses", 0)),
            saved=float(counts.get(b"saved", 0.0)),
        )

    async def clear(self) -> int:
        client = self._clients.here()
        entries = int(await client.zcard(self.prefix + "lru"))
        async for name in client.scan_iter(match=f"{self.prefix}*", count=500):
            await client.delete(name)
        return entries

    async def leave_loop(self) -> None:
        await self._clients.leave_loop()

    async def aclose(self) -> None:
        await self._clients.aclose()
