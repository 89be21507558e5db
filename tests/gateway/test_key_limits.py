"""A virtual key's tokens per minute on a clock of the test's: the estimate counted up front,
its correction to the usage dated when the estimate was counted."""

from __future__ import annotations

import pytest

from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import Call
from modelyard.gateway.key_limits import KeyLimits
from modelyard.gateway.keys import VirtualKey
from modelyard.state.memory import MemoryStore


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
