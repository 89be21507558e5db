"""A balance system behind the gateway: two deployments of one model on two fake OpenAI
upstreams, one of them down, answering the official OpenAI SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running


@pytest.fixture
def regions() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """Two upstreams taking the same key: `east` (answering 503 to everything) and `west`."""
    east, west = FakeOpenAI(api_key=UPSTREAM_KEY), FakeOpenAI(api_key=UPSTREAM_KEY)
    east.always(Fault(status=503))
    with east.running(), west.running():
        yield east, west


def test_a_balance_system_answers_the_openai_sdk_around_a_region_that_is_down(
    serve_gateway: Callable[..., Running],
    regions: tuple[FakeOpenAI, FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    east, west = regions
    monkeypatch.setenv("FAKE_OPENAI_KEY", UPSTREAM_KEY)
    provider = (
        '{{type: openai, base_url: "{url}/v1", api_key: "${{FAKE_OPENAI_KEY}}", '
        "retry: {{attempts: 0}}, breaker: {{min_calls: 2, failure_rate: 0.5}}}}"
    )
    running = serve_gateway(
        text=f"""
providers:
  east: {provider.format(url=east.url)}
  west: {provider.format(url=west.url)}
models:
  mini-east: {{provider: east, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
  mini-west: {{provider: west, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
systems:
  mini: {{type: balance, members: [mini-east, mini-west], strategy: round_robin}}
"""
    )
    sdk = openai.OpenAI(base_url=running.openai_url, api_key="anything", max_retries=0)
    ask = [{"role": "user", "content": "say hi"}]
    for _ in range(4):
        raw = sdk.chat.completions.with_raw_response.create(model="mini", messages=ask)  # type: ignore[arg-type]
        completion = raw.parse()
        assert completion.model == "mini" and completion.choices[0].message.content
        assert raw.headers["x-modelyard-model"] == "mini-west"
    stream = sdk.chat.completions.create(model="mini", messages=ask, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    # East failed twice (the 1st and 3rd requests were its turn), which opened its circuit:
    # from then on no request reaches it.
    assert len(east.requests) == 2
    assert len(west.requests) == 5
