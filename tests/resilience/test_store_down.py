"""A shared state store that goes down while a call is out: the provider has answered (and
billed it), so the caller gets the answer; only the breaker's and the limiter's bookkeeping of
that call is lost (the store is real Redis, stopped mid-call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelyard.errors import UnavailableError
from modelyard.model import Model
from modelyard.providers.fake import Reply
from modelyard.resilience.breaker import BreakerModel, CircuitBreaker
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.state.policy import PolicyStore
from modelyard.state.redis import RedisStore
from modelyard.types import ChatResponse, user
from tests.resilience.scripted import fails, scripted
from tests.resilience.test_shared_state import POLICY
from tests.state.conftest import unique_prefix
from tests.state.test_policy import own_redis, stop_redis  # noqa: F401  (own_redis: a fixture)

pytestmark = pytest.mark.redis

WRAPPERS = ["breaker", "limiter"]


@pytest.fixture
async def store(own_redis: int) -> AsyncIterator[PolicyStore]:  # noqa: F811
    """A fail-closed store on a Redis of the test's own, which the test stops."""
    made = PolicyStore(
        RedisStore(f"redis://127.0.0.1:{own_redis}/0", prefix=unique_prefix(), timeout=0.3)
    )
    yield made
    await made.aclose()


def wrapped(kind: str, store: PolicyStore, reply: Reply) -> Model:
    """A slow scripted model inside the wrapper of `kind`, counting on `store`."""
    inner = scripted("a", default=reply)
    if kind == "breaker":
        return BreakerModel(inner, [CircuitBreaker("model:a", POLICY, store)])
    return RateLimitModel(inner, [Limiter("model:a", RateLimits(tpm=100_000), store)])


async def stop_during_call(port: int) -> None:
    await asyncio.sleep(0.1)  # the call has been admitted and is waiting for its answer
    await asyncio.to_thread(stop_redis, port)


@pytest.mark.parametrize("kind", WRAPPERS)
async def test_an_answer_survives_the_store_going_down_during_its_call(
    kind: str,
    store: PolicyStore,
    own_redis: int,  # noqa: F811
) -> None:
    model = wrapped(kind, store, Reply(text="paid for", latency=0.4))
    call = asyncio.create_task(model.complete(user("x")))
    await stop_during_call(own_redis)
    response = await call
    assert response.text == "paid for"


@pytest.mark.parametrize("kind", WRAPPERS)
async def test_a_stream_ends_whole_when_the_store_goes_down_during_it(
    kind: str,
    store: PolicyStore,
    own_redis: int,  # noqa: F811
) -> None:
    model = wrapped(kind, store, Reply(text="paid for", latency=0.4))

    async def read() -> ChatResponse | None:
        last = None
        async for chunk in model.stream(user("x")):
            last = chunk.response or last
        return last

    call = asyncio.create_task(read())
    await stop_during_call(own_redis)
    response = await call
    assert response is not None and response.text == "paid for"


@pytest.mark.parametrize("kind", WRAPPERS)
async def test_a_provider_error_is_not_masked_by_the_store_going_down(
    kind: str,
    store: PolicyStore,
    own_redis: int,  # noqa: F811
) -> None:
    model = wrapped(kind, store, fails("unavailable", latency=0.4))
    call = asyncio.create_task(model.complete(user("x")))
    await stop_during_call(own_redis)
    with pytest.raises(UnavailableError) as caught:
        await call
    assert caught.value.code != "state_unavailable"
