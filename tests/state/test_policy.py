"""When Redis cannot be reached, the configured policy holds: refuse, or count locally."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Claim, Lease
from modelyard.state.policy import PolicyStore
from modelyard.state.redis import RedisStore
from tests.state.conftest import DOWN_TIMEOUT, unique_prefix

pytestmark = pytest.mark.redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_redis() -> Iterator[int]:
    """A throwaway redis-server of our own on a free port, so the test can kill it."""
    port = free_port()
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            f"/tmp/modelyard-test-redis-{port}.pid",
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip()
        != b"PONG"
    ):
        if time.monotonic() > deadline:  # daemonize returns before the server listens
            raise RuntimeError(f"redis on port {port} did not start")
        time.sleep(0.02)
    yield port
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def stop_redis(port: int) -> None:
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # gone only once the port refuses connections
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"redis on port {port} did not stop")


def start_redis(port: int) -> None:
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            f"/tmp/modelyard-test-redis-{port}.pid",
        ],
        check=True,
        capture_output=True,
    )


async def wait_until_up(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.02)
    raise AssertionError("redis did not start")


async def test_closed_port_with_fail_closed_refuses_with_a_clear_error() -> None:
    store = PolicyStore(
        RedisStore(
            f"redis://127.0.0.1:{free_port()}/0", prefix=unique_prefix(), timeout=DOWN_TIMEOUT
        ),
        on_unavailable="fail_closed",
    )
    with pytest.raises(UnavailableError) as caught:
        await store.reserve([Claim(key="b", amount=1, limit=10)])
    assert caught.value.code == "state_unavailable"
    assert "fail_closed" in str(caught.value) and "unreachable" in str(caught.value)
    assert store.health().mode == "refusing" and not store.health().ok
    await store.aclose()


async def test_closed_port_with_local_counts_in_process_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = PolicyStore(
        RedisStore(
            f"redis://127.0.0.1:{free_port()}/0", prefix=unique_prefix(), timeout=DOWN_TIMEOUT
        ),
        on_unavailable="local",
    )
    with caplog.at_level(logging.WARNING, logger="modelyard.state"):
        results = [await store.reserve([Claim(key="b", amount=1, limit=3)]) for _ in range(5)]
    assert [r is None for r in results] == [True, True, True, False, False]
    assert store.health().mode == "local"
    assert len([r for r in caplog.records if "ALONE" in r.getMessage()]) == 1
    await store.aclose()


async def test_redis_dying_mid_run_with_fail_closed_refuses_then_recovers(own_redis: int) -> None:
    store = PolicyStore(
        RedisStore(
            f"redis://127.0.0.1:{own_redis}/0", prefix=unique_prefix(), timeout=DOWN_TIMEOUT
        ),
        on_unavailable="fail_closed",
        retry_interval=0.05,
    )
    assert await store.reserve([Claim(key="b", amount=1, limit=10)]) is None
    await refused_then_recovered(store, own_redis)
    assert store.health().ok
    await store.aclose()


async def refused_then_recovered(store: PolicyStore, port: int) -> None:
    """Stop the store's Redis (a fail_closed store refuses), start it again, and see the store
    admit again once its retry interval has passed."""
    stop_redis(port)
    with pytest.raises(UnavailableError):
        await store.reserve([Claim(key="b", amount=1, limit=10)])
    start_redis(port)
    await wait_until_up(port)
    await asyncio.sleep(0.06)
    assert await store.reserve([Claim(key="b", amount=1, limit=10)]) is None


async def test_a_recovery_listener_is_told_until_it_stops_listening(own_redis: int) -> None:
    store = PolicyStore(
        RedisStore(
            f"redis://127.0.0.1:{own_redis}/0", prefix=unique_prefix(), timeout=DOWN_TIMEOUT
        ),
        on_unavailable="fail_closed",
        retry_interval=0.05,
    )
    told: list[str] = []
    store.on_recovery(lambda: told.append("kept"))
    stop = store.on_recovery(lambda: told.append("stopped"))
    for stopping in (False, True):
        if stopping:
            stop()
            stop()  # twice is harmless
        await refused_then_recovered(store, own_redis)
    assert told == ["kept", "stopped", "kept"]
    await store.aclose()


async def test_redis_dying_mid_run_with_local_keeps_the_cap_and_hands_spend_back(
    own_redis: int,
) -> None:
    url = f"redis://127.0.0.1:{own_redis}/0"
    prefix = unique_prefix()
    store = PolicyStore(
        RedisStore(url, prefix=prefix, timeout=DOWN_TIMEOUT),
        on_unavailable="local",
        retry_interval=0.05,
    )
    assert await store.reserve([Claim(key="b", amount=2, limit=10)]) is None
    stop_redis(own_redis)
    # The process alone now enforces the cap: it knows nothing of the 2 spent before.
    admitted = [await store.reserve([Claim(key="b", amount=1, limit=10)]) for _ in range(12)]
    assert sum(r is None for r in admitted) == 10
    assert store.health().mode == "local"
    start_redis(own_redis)
    await wait_until_up(own_redis)
    await asyncio.sleep(0.06)
    # Redis restarted empty (no persistence); the 10 counted locally are handed back to it.
    assert await store.counter("b") == 10
    assert store.health().ok
    await store.aclose()


async def test_a_lease_taken_locally_and_released_after_recovery_charges_its_actual_once(
    own_redis: int,
) -> None:
    url = f"redis://127.0.0.1:{own_redis}/0"
    store = PolicyStore(
        RedisStore(url, prefix=unique_prefix(), timeout=DOWN_TIMEOUT),
        on_unavailable="local",
        retry_interval=0.05,
    )
    stop_redis(own_redis)
    claim = Claim(key="b", amount=1, limit=10)
    assert await store.reserve_or_explain([claim], lease=Lease(id="l", seconds=600)) is None
    assert store.health().mode == "local"
    start_redis(own_redis)
    await wait_until_up(own_redis)
    await asyncio.sleep(0.06)
    # Carried to Redis with its request still in flight: counted there, for every replica.
    assert await store.counter("b") == 1
    assert store.health().ok
    assert await store.release(Lease(id="l", seconds=600), [("b", 0.25, None)]) == [0.25]
    assert await store.release(Lease(id="l", seconds=600), [("b", 0.25, None)]) == [0.25]
    await store.aclose()


async def test_a_restarted_redis_is_one_outage_not_one_per_pooled_connection(
    own_redis: int,
) -> None:
    now = [0.0]
    store = PolicyStore(
        RedisStore(
            f"redis://127.0.0.1:{own_redis}/0", prefix=unique_prefix(), timeout=DOWN_TIMEOUT
        ),
        on_unavailable="fail_closed",
        retry_interval=5,
        clock=lambda: now[0],
    )
    claim = Claim(key="b", amount=1, limit=100)
    await asyncio.gather(*(store.reserve([claim]) for _ in range(10)))  # ten pooled connections
    await asyncio.to_thread(stop_redis, own_redis)
    with pytest.raises(UnavailableError):
        await store.reserve([claim])
    await asyncio.to_thread(start_redis, own_redis)
    await wait_until_up(own_redis)
    now[0] = 5.0
    assert await store.reserve([claim]) is None
    # The connections opened before the restart lead nowhere: none may take the store down
    # again (each would refuse every request for another retry_interval).
    outcomes = await asyncio.gather(
        *(store.reserve([claim]) for _ in range(10)), return_exceptions=True
    )
    assert outcomes == [None] * 10
    assert store.health().ok
    await store.aclose()
