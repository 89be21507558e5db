"""A virtual key's tokens per minute on a clock of the test's: the estimate counted up front,
its correction to the usage dated when the estimate was counted. Its concurrent slots on a
shared store that is down: refused with a 503, or counted by this process alone."""

from __future__ import annotations

import pytest
from tests.fakes.server import free_port
from tests.state.conftest import DOWN_TIMEOUT

from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import Call
from modelyard.gateway.key_limits import KeyLimits
from modelyard.gateway.keys import VirtualKey
from modelyard.state.memory import MemoryStore
from modelyard.state.policy import OnUnavailable, PolicyStore
from modelyard.state.redis import RedisStore


async def _nothing(*_: object) -> None:
    raise AssertionError("no I/O here")


def a_call() -> Call:
    return Call(scope={}, receive=_nothing, send=_nothing, id="r", started=0.0, headers={})  # type: ignore[arg-type]


async def test_a_call_cut_short_gives_back_its_estimate_only_within_its_minute() -> None:
    # A stream estimated at the key's whole tpm, cut off after 55 s having used 100 tokens:
    # its refund leaves the window with the estimate, at 60 s. Dated when the call ended, it
    # stayed until 115 s, and the next minute had room for a second tpm beside what it held.
    now = [0.0]
    limits = KeyLimits(clock=lambda: now[0])
    limits.limits = MemoryStore(clock=lambda: now[0])
    key = VirtualKey(id="k", name="k", tpm=1000)
    counted = await limits.check_rate(key, a_call(), 1000)
    now[0] = 55.0
    await limits.settle_tokens(key, counted, 100)
    assert await limits.check_rate(key, a_call(), 900) is not None  # the refund, in its minute
    now[0] = 61.0  # the estimate and its refund have left; the 900 counted at 55 s have not
    with pytest.raises(ApiError) as refused:
        await limits.check_rate(key, a_call(), 200)
    assert refused.value.status == 429
    assert await limits.check_rate(key, a_call(), 100) is not None


def a_keys_store_down(on_unavailable: OnUnavailable) -> KeyLimits:
    """Key limits on a shared store whose server refuses every connection."""
    store = PolicyStore(
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=DOWN_TIMEOUT),
        on_unavailable=on_unavailable,
        retry_interval=3600,  # not tried again within the test
    )
    limits = KeyLimits()
    limits.limits = limits.spend = store
    return limits


async def test_a_keys_shared_slots_refuse_with_a_503_saying_so_when_the_store_is_down() -> None:
    limits = a_keys_store_down("fail_closed")
    key = VirtualKey(id="k", name="k", max_concurrency=1)
    with pytest.raises(ApiError) as refused:
        await limits.admit(key, a_call())
    assert refused.value.status == 503
    assert "refusing requests until it is back" in refused.value.message
    await limits.book.leases.aclose()
    await limits.spend.aclose()


async def test_a_keys_shared_slots_are_counted_by_this_process_when_told_to() -> None:
    limits = a_keys_store_down("local")
    key = VirtualKey(id="k", name="k", max_concurrency=1)
    first, second = a_call(), a_call()
    await limits.admit(key, first)
    with pytest.raises(ApiError) as refused:
        await limits.admit(key, second)
    assert refused.value.status == 429 and refused.value.code == "concurrency_limit"
    await limits.release(key, first)
    await limits.admit(key, second)  # the slot came back
    await limits.release(key, second)
    await limits.book.leases.aclose()
    await limits.spend.aclose()
