"""A caller's `Cache-Control` header: `no-cache` is answered afresh (and stored), `no-store`
neither served nor stored; seen through the official OpenAI SDK."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
from tests.gateway.conftest import Running

from modelyard.gateway.headers import cache_use


@pytest.mark.parametrize(
    ("header", "use"),
    [
        ("no-cache", "refresh"),
        ("No-Cache", "refresh"),
        ("max-age=0, no-store", "bypass"),
        ("no-cache, no-store", "bypass"),
        ('no-cache="x-foo"', "refresh"),
        ("private, max-age=60", "use"),
        ("", "use"),
    ],
)
def test_cache_control_directives(header: str, use: str) -> None:
    assert cache_use(header) == use


def costs(running: Running, *controls: str | None) -> list[float]:
    """What each request cost (0 for one served from the cache), in order."""
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    found = []
    for control in controls:
        headers = {"Cache-Control": control} if control is not None else {}
        answer = client.chat.completions.with_raw_response.create(
            model="support", messages=[{"role": "user", "content": "ping"}], extra_headers=headers
        )
        found.append(float(answer.headers["x-modelyard-cost"]))
    return found


def test_no_cache_is_answered_afresh_and_stored(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway("cache: {backend: memory}\n")
    paid = [cost > 0 for cost in costs(running, None, "no-cache", None)]
    assert paid == [True, True, False]


def test_no_store_is_neither_served_nor_stored(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway("cache: {backend: memory}\n")
    paid = [cost > 0 for cost in costs(running, "no-store", None, "no-store", None)]
    assert paid == [True, True, True, False]
