"""A shared state store that goes down while a call is out: the provider has answered (and
billed it), so the caller gets the answer; only the breaker's and the limiter's bookkeeping of
that call is lost (the store is real Redis, stopped mid-call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelyard.errors import UnavailableError
from modelyard.model import Model, Wrapper
from modelyard.providers.fake import Reply
from modelyard.resilience.breaker import BreakerModel, CircuitBreaker
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.state.policy import PolicyStore
from modelyard.state.redis import RedisStore
from modelyard.types import ChatRequest, ChatResponse, Chunk, user
from tests.resilience.scripted import fails, scripted
from tests.resilience.test_shared_state import POLICY
from tests.state.conftest import DOWN_TIMEOUT, unique_prefix
from tests.state.test_policy import own_redis, stop_redis  # noqa: F401  (own_redis: a fixture)

pytestmark = pytest.mark.redis

WRAPPERS = ["breaker", "limiter"]


@pytest.fixture
async def store(own_redis: int) -> AsyncIterator[PolicyStore]:  # noqa: F811
    """A fail-closed store on a Redis of the test's own, which the test stops."""
    made = PolicyStore(
        RedisStore(f"redis://127.0.0.1:{own_redis}/0", prefix=unique_prefix(), timeout=DOWN_TIMEOUT)
    )
    yield made
    await made.aclose()


class Held(Wrapper):
    """Holds a call the wrapper above has admitted until `go` is set: the store stops meanwhile
    (a fixed sleep could stop it before the admission, or after the answer, on a loaded host)."""

    def __init__(self, inner: Model) -> None:
        super().__init__(inner)
        self.admitted = asyncio.Event()
        self.go = asyncio.Event()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.admitted.set()
        await self.go.wait()
        return await self.inner.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.admitted.set()
        await self.go.wait()
        async for chunk in self.inner.stream(request):
            yield chunk


def wrapped(kind: str, store: PolicyStore, reply: Reply) -> tuple[Model, Held]:
    """A held scripted model inside the wrapper of `kind`, counting on `store`."""
    held = Held(scripted("a", default=reply))
    if kind == "breaker":
        return BreakerModel(held, [CircuitBreaker("model:a", POLICY, store)]), held
    return RateLimitModel(held, [Limiter("model:a", RateLimits(tpm=100_000), store)]), held


async def stop_during_call(port: int, held: Held) -> None:
    await held.admitted.wait()
    await asyncio.to_thread(stop_redis, port)
    held.go.set()


@pytest.mark.parametrize("kind", WRAPPERS)
async def test_an_answer_survives_the_store_going_down_during_its_call(
    kind: str,
    store: PolicyStore,
    own_redis: int,  # noqa: F811
) -> None:
    model, held = wrapped(kind, store, Reply(text="paid for"))
    call = asyncio.create_task(model.complete(user("x")))
    await stop_during_call(own_redis, held)
    response = await call
    assert response.text == "paid for"


@pytest.mark.parametrize("kind", WRAPPERS)
async def test_a_stream_ends_whole_when_the_store_goes_down_during_it(
    kind: str,
    store: PolicyStore,
    own_redis: int,  # noqa: F811
) -> None:
    model, held = wrapped(kind, store, Reply(text="paid for"))

    async def read() -> ChatResponse | None:
        last = None
        async for chunk in model.stream(user("x")):
            last = chunk.response or last
        return last

    call = asyncio.create_task(read())
    await stop_during_call(own_redis, held)
    response = await call
    assert response is not None and response.text == "paid for"


@pytest.mark.parametrize("kind", WRAPPERS)
async def test_a_provider_error_is_not_masked_by_the_store_going_down(
    kind: str,
    store: PolicyStore,
    own_redis: int,  # noqa: F811
) -> None:
    model, held = wrapped(kind, store, fails("unavailable"))
    call = asyncio.create_task(model.complete(user("x")))
    await stop_during_call(own_redis, held)
    with pytest.raises(UnavailableError) as caught:
        await call
    assert caught.value.code != "state_unavailable"
