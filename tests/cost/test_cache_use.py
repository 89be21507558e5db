"""What a request and the config let the exact cache do: `cache.sampled: false` leaves sampled
requests alone; a request's `response_cache` refreshes or bypasses it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import modelyard
from modelyard.cost.cache import Cached, ResponseCache
from modelyard.cost.cache_keys import identity
from modelyard.cost.cache_store import MemoryCache
from modelyard.errors import ConfigError
from modelyard.providers.fake import Reply
from modelyard.streaming import collect
from modelyard.types import ChatRequest
from tests.cost.helpers import TIERS, priced, question

GREEDY = question("Name a colour.", temperature=0.0)


def cached(**options: Any) -> tuple[Cached, ResponseCache, Any]:
    inner = priced()
    inner.script = [Reply(text=f"answer {i}") for i in range(1, 10)]
    cache = ResponseCache(MemoryCache(max_entries=100), **options)
    return Cached(inner, cache=cache, who=identity(inner, "v1")), cache, inner


async def asked_twice(wrapper: Cached, request: ChatRequest, *, stream: bool = False) -> list[str]:
    if stream:
        return [(await collect(wrapper.stream(request))).text for _ in range(2)]
    return [(await wrapper.complete(request)).text for _ in range(2)]


@pytest.mark.parametrize("temperature", [0.7, None])
async def test_sampled_requests_are_cached_by_default(temperature: float | None) -> None:
    wrapper, _, _ = cached()
    assert await asked_twice(wrapper, replace(GREEDY, temperature=temperature)) == [
        "answer 1",
        "answer 1",
    ]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("temperature", [0.7, None])
async def test_with_sampled_off_a_sampled_request_is_neither_served_nor_stored(
    temperature: float | None, stream: bool
) -> None:
    wrapper, cache, _ = cached(sampled=False)
    sampled = replace(GREEDY, temperature=temperature, top_p=0.1)
    assert await asked_twice(wrapper, sampled, stream=stream) == ["answer 1", "answer 2"]
    stats = await cache.backend.stats()
    assert (stats.entries, stats.hits, stats.misses) == (0, 0, 0)


async def test_with_sampled_off_a_greedy_request_is_still_cached() -> None:
    wrapper, _, _ = cached(sampled=False)
    assert await asked_twice(wrapper, GREEDY) == ["answer 1", "answer 1"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refresh_is_answered_afresh_and_stored_for_the_next_request(stream: bool) -> None:
    wrapper, cache, _ = cached()
    await wrapper.complete(GREEDY)
    fresh = await asked_twice(wrapper, replace(GREEDY, response_cache="refresh"), stream=stream)
    after = await wrapper.complete(GREEDY)
    assert fresh == ["answer 2", "answer 3"] and after.text == "answer 3"
    assert after.decision is not None and after.decision.kind == "cache"
    stats = await cache.backend.stats()
    assert (stats.hits, stats.misses) == (1, 1)  # a refresh looks nothing up


async def test_a_bypass_is_neither_served_nor_stored() -> None:
    wrapper, _, _ = cached()
    await wrapper.complete(GREEDY)
    bypass = await asked_twice(wrapper, replace(GREEDY, response_cache="bypass"))
    assert bypass == ["answer 2", "answer 3"]
    assert (await wrapper.complete(GREEDY)).text == "answer 1"


async def test_the_config_turns_sampled_requests_off(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(TIERS + "cache: {sampled: false}\n")
    async with modelyard.load(path) as yard:
        sampled = [(await yard.complete("budget", "hi", temperature=0.5)).cost for _ in range(2)]
        greedy = [(await yard.complete("budget", "hi", temperature=0)).cost for _ in range(2)]
    assert sampled[0] > 0 and sampled[1] > 0
    assert greedy[0] > 0 and greedy[1] == 0


def test_sampled_off_contradicts_a_semantic_cache_allowing_temperature(
    write_config: Callable[[str], Path],
) -> None:
    semantic = "{embedder: hash, systems: [budget], allow_nonzero_temperature: true}"
    path = write_config(TIERS + f"cache: {{sampled: false, semantic: {semantic}}}\n")
    with pytest.raises(ConfigError, match="allow_nonzero_temperature"):
        modelyard.load(path)
