"""The resilience stack over real sockets: two fake OpenAI servers, one primary and one backup,
and every fault the fakes can inject. Each test checks what the caller gets, how many
attempts the fakes saw and how far apart, and that the system is healthy afterwards."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import modelyard
from modelyard.errors import (
    BadResponseError,
    ContentFilteredError,
    ModelTimeoutError,
    StreamInterruptedError,
)
from modelyard.streaming import collect
from modelyard.types import ChatRequest, ChatResponse, user
from modelyard.yard import Yard
from tests.conftest import tight_limits
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault

KEY = "sk-resilience-TEST-0123456789"
BACKOFF = 0.05
TIGHT = "{connect: 0.5, total: 0.4, first_token: 0.25, stall: 0.25}"
"""The limits the tests about them meet (marked `tight`)."""
tight = tight_limits(TIGHT)
CONFIG = """
providers:
  first:
    type: openai
    base_url: {primary}/v1
    api_key: ${{KEY}}
    timeouts: &timeouts {timeouts}
    retry: &retry
      attempts: 2
      initial_backoff: {backoff}
      max_backoff: 0.1
      jitter: none
      max_retry_after: 0.5
    breaker: &breaker {{min_calls: 4, failure_rate: 0.5, window: 5, open_for: 0.3, probes: 2}}
  second:
    type: openai
    base_url: {backup}/v1
    api_key: ${{KEY}}
    timeouts: *timeouts
    retry: *retry
    breaker: *breaker
models:
  p-mini:
    provider: first
    id: gpt-4o-mini
    context_window: 8000
    price: {{input: 0.15, output: 0.60}}
  b-mini:
    provider: second
    id: gpt-4o-mini
    context_window: 128000
    price: {{input: 0.15, output: 0.60}}
systems:
  chat: {{type: fallback, chain: [p-mini, b-mini]}}
"""
FULL = "Echo: tell me a few things"
"""What the fakes answer to PROMPT."""
PROMPT = "tell me a few things"


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY).running() as server:
        assert isinstance(server, FakeOpenAI)
        yield server


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY).running() as server:
        assert isinstance(server, FakeOpenAI)
        yield server


@pytest.fixture
async def yard(
    primary: FakeOpenAI, backup: FakeOpenAI, write_config: Callable[[str], Path], timeouts: str
) -> AsyncIterator[Yard]:
    primary.reset()
    backup.reset()
    text = CONFIG.format(primary=primary.url, backup=backup.url, backoff=BACKOFF, timeouts=timeouts)
    async with modelyard.load(write_config(text), env={"KEY": KEY}) as loaded:
        yield loaded


def gaps(fake: FakeOpenAI) -> list[float]:
    """Seconds between the starts of consecutive requests the fake received."""
    at = [r.at for r in fake.requests]
    return [b - a for a, b in itertools.pairwise(at)]


async def ask(yard: Yard, prompt: str | ChatRequest = PROMPT) -> ChatResponse:
    return await yard.complete("chat", prompt)


async def streamed(yard: Yard, received: list[str], prompt: str = PROMPT) -> ChatResponse:
    final = None
    async for chunk in yard.stream("chat", prompt):
        received.append(chunk.text)
        final = chunk.response or final
    assert final is not None
    return final


async def healthy(yard: Yard, primary: FakeOpenAI) -> None:
    """The next plain and streamed requests are answered whole by the primary, and every
    circuit is closed."""
    primary.always(None)
    assert (await ask(yard)).model == "p-mini"
    response = await collect(yard.stream("chat", PROMPT))
    assert response.model == "p-mini" and response.text == FULL
    assert (await yard.health()).healthy


# --- rate limits -------------------------------------------------------------------------


async def test_429_with_retry_after_once_waits_it_then_the_primary_answers(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    wait = {"retry-after-ms": "150", "x-ratelimit-reset-requests": "150ms"}
    primary.push(Fault(status=429, headers=wait))
    response = await ask(yard)
    assert response.model == "p-mini" and response.text == FULL
    assert len(primary.requests) == 2 and backup.requests == []
    assert 0.15 <= gaps(primary)[0] < 0.4
    assert response.decision is not None
    await healthy(yard, primary)


async def test_429_without_retry_after_persistently_backs_off_then_falls_back(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    no_wait = {
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "",
        "x-ratelimit-reset-tokens": "",
    }
    primary.always(Fault(status=429, headers=no_wait))
    response = await ask(yard)
    assert response.model == "b-mini" and response.text == FULL
    assert len(primary.requests) == 3 and len(backup.requests) == 1
    first, second = gaps(primary)
    assert BACKOFF <= first < BACKOFF + 0.1 and 2 * BACKOFF <= second < 2 * BACKOFF + 0.1
    failed = response.decision.children[0] if response.decision else None
    assert failed is not None and failed.error is not None and "rate_limited" in failed.error
    await healthy(yard, primary)


# --- server errors -----------------------------------------------------------------------


async def test_500_once_is_retried_on_the_primary(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(status=500))
    response = await ask(yard)
    assert response.model == "p-mini"
    assert len(primary.requests) == 2 and backup.requests == []
    assert BACKOFF <= gaps(primary)[0] < BACKOFF + 0.1
    await healthy(yard, primary)


async def test_503_persistently_falls_back_after_the_retries(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.always(Fault(status=503))
    response = await ask(yard)
    assert response.model == "b-mini" and response.text == FULL
    assert len(primary.requests) == 3 and len(backup.requests) == 1
    assert all(gap >= BACKOFF for gap in gaps(primary))
    await healthy(yard, primary)


# --- connections ---------------------------------------------------------------------------


async def test_reset_before_headers_is_retried(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(reset=True), Fault(reset=True))
    assert (await ask(yard)).model == "p-mini"
    received: list[str] = []
    assert (await streamed(yard, received)).model == "p-mini"
    assert "".join(received) == FULL
    assert len(primary.requests) == 4 and backup.requests == []
    await healthy(yard, primary)


@tight
async def test_no_response_at_all_is_abandoned_well_before_the_deadline(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.always(Fault(hang=True))
    started = time.monotonic()
    response = await ask(yard, user(PROMPT, deadline=time.monotonic() + 1.2))
    elapsed = time.monotonic() - started
    assert response.model == "b-mini"
    assert elapsed < 0.9  # the primary had half the time; the backup answered in the rest
    assert len(primary.requests) == 2 and len(backup.requests) == 1
    assert response.decision is not None
    tries = response.decision.children[0].children
    assert [t.error and t.error.split(":")[0] for t in tries] == ["timeout", "timeout"]
    assert tries[1].error is not None and "deadline" in tries[1].error
    await healthy(yard, primary)


# --- streams -------------------------------------------------------------------------------


@tight
async def test_slow_first_token_is_retried_before_anything_reaches_the_caller(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(first_token_delay=1.0))
    received: list[str] = []
    response = await streamed(yard, received)
    assert response.model == "p-mini" and "".join(received) == FULL
    assert len(primary.requests) == 2 and backup.requests == []
    assert 0.25 + BACKOFF <= gaps(primary)[0] < 0.25 + BACKOFF + 0.15
    await healthy(yard, primary)


async def test_stream_cut_part_way_ends_with_an_error_and_its_cost(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(cut_after=3))
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as caught:
        await streamed(yard, received)
    text = "".join(received)
    assert text and FULL.startswith(text) and text != FULL
    assert caught.value.cost > 0
    assert caught.value.__cause__ is not None
    assert len(primary.requests) == 1 and backup.requests == []
    await healthy(yard, primary)


@tight
async def test_stream_that_stalls_with_the_connection_open_is_stopped(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(stall_after=3))
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(StreamInterruptedError) as caught:
        await streamed(yard, received)
    assert time.monotonic() - started < 0.6
    assert isinstance(caught.value.__cause__, ModelTimeoutError)
    assert FULL.startswith("".join(received)) and "".join(received) != FULL
    assert len(primary.requests) == 1 and backup.requests == []
    await healthy(yard, primary)


async def test_malformed_chunk_mid_stream_leaks_no_garbage(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(malformed_at=3))
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as caught:
        await streamed(yard, received)
    assert isinstance(caught.value.__cause__, BadResponseError)
    assert FULL.startswith("".join(received))
    assert "not json" not in "".join(received)
    assert len(primary.requests) == 1
    await healthy(yard, primary)


async def test_malformed_chunk_before_any_content_is_retried_transparently(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(malformed_at=0))
    received: list[str] = []
    response = await streamed(yard, received)
    assert response.model == "p-mini" and "".join(received) == FULL
    assert len(primary.requests) == 2 and backup.requests == []
    await healthy(yard, primary)


async def test_stream_without_its_final_event_is_finished_promptly_with_usage(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(no_final=True))
    received: list[str] = []
    started = time.monotonic()
    response = await streamed(yard, received)
    assert time.monotonic() - started < 0.8  # it did not wait for trailing events (SETTLE_S)
    assert response.text == FULL and "".join(received) == FULL
    assert response.usage.estimated and response.usage.output_tokens > 0
    assert response.cost > 0
    assert len(primary.requests) == 1
    await healthy(yard, primary)


# --- errors that are not outages -----------------------------------------------------------


async def test_context_length_goes_to_the_model_with_the_larger_window(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(status=400, error_type="context_length_exceeded"))
    response = await ask(yard)
    assert response.model == "b-mini"
    assert len(primary.requests) == 1 and len(backup.requests) == 1
    await healthy(yard, primary)


async def test_content_filter_is_propagated_with_its_reason(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.push(Fault(status=400, error_type="content_filter"))
    with pytest.raises(ContentFilteredError) as caught:
        await ask(yard)
    assert caught.value.provider_message is not None
    assert "content management policy" in caught.value.provider_message
    assert caught.value.model == "p-mini"
    assert len(primary.requests) == 1 and backup.requests == []
    await healthy(yard, primary)


# --- an outage and the recovery ------------------------------------------------------------


async def test_primary_down_for_a_while_then_recovering(
    yard: Yard, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.always(Fault(status=503))
    during = [(await ask(yard, f"q{i}")).model for i in range(8)]
    assert during == ["b-mini"] * 8
    # Three tries for the first request and one for the second opened the circuit (4 calls,
    # all failed); after that no request reached the primary while it was down.
    assert len(primary.requests) == 4
    health = await yard.health()
    assert health.degraded == ["model:p-mini"]
    primary.always(None)
    await asyncio.sleep(0.3)  # open_for: the next request is a probe
    after = [(await ask(yard, f"r{i}")).model for i in range(4)]
    assert after == ["p-mini"] * 4  # two probes closed the circuit; traffic is back
    assert len(primary.requests) == 8
    assert (await yard.health()).healthy
