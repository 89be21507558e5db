"""The upstream quota a request shows when it called several providers at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import openai
import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running

PREFIX = "x-modelyard-upstream-x-ratelimit-"


@pytest.fixture
def second() -> Iterator[FakeOpenAI]:
    """Another OpenAI account, on its own fake."""
    fake = FakeOpenAI(api_key=UPSTREAM_KEY)
    with fake.running():
        yield fake


def quota(*, remaining: str, reset: str) -> Fault:
    """An answer saying this is what is left of the account's requests (of 500)."""
    return Fault(
        headers={"x-ratelimit-remaining-requests": remaining, "x-ratelimit-reset-requests": reset}
    )


def ensemble_of(first: FakeOpenAI, second: FakeOpenAI) -> str:
    providers = "".join(
        f'  {name}: {{type: openai, base_url: "{fake.url}/v1", api_key: {UPSTREAM_KEY}}}\n'
        for name, fake in (("a", first), ("b", second))
    )
    return f"""providers:
{providers}models:
  ga: {{provider: a, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
  gb: {{provider: b, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
systems:
  both: {{type: ensemble, members: [ga, gb]}}
"""


@pytest.mark.parametrize("tight", ["first", "second"])
def test_an_ensemble_shows_the_tightest_quota_of_its_members_replies(
    serve_gateway: Callable[..., Running],
    upstream: FakeOpenAI,
    second: FakeOpenAI,
    tight: str,
) -> None:
    low, high = (upstream, second) if tight == "first" else (second, upstream)
    low.push(quota(remaining="7", reset="50s"))
    high.push(replace(quota(remaining="450", reset="20s"), delay=0.2))  # answers last
    running = serve_gateway(text=ensemble_of(upstream, second))
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="both", messages=[{"role": "user", "content": "hello"}]
    )
    assert len(upstream.requests) == len(second.requests) == 1
    assert raw.headers[PREFIX + "remaining-requests"] == "7"
    assert raw.headers[PREFIX + "limit-requests"] == "500"
    assert raw.headers[PREFIX + "reset-requests"] == "20s"  # the other account's: it is sooner
