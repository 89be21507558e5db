"""A stream's headers name the model that answers (`x-modelyard-model`), as a whole answer's do:
the gateway sends them with the first chunk, which has already fixed that model. Seen with the
official OpenAI and Anthropic SDKs, in front of the fake OpenAI server."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import openai
import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running

ASK = [{"role": "user", "content": "which one?"}]


@pytest.fixture
def running(serve_gateway: Callable[..., Running], upstream: FakeOpenAI) -> Running:
    return serve_gateway(
        text=f"""
providers:
  up:
    type: openai
    base_url: {upstream.url}/v1
    api_key: {UPSTREAM_KEY}
    retry: {{attempts: 0}}
models:
  first: {{provider: up, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}}}
  second: {{provider: up, id: gpt-4o, price: {{input: 2.5, output: 10}}}}
  a: {{local: {{type: fake, default: "B"}}}}
  b: {{local: {{type: fake, default: "The answer is B"}}}}
  c: {{local: {{type: fake, default: "C"}}}}
  fuser: {{local: {{type: fake, default: "B, merged"}}}}
systems:
  main: {{type: fallback, chain: [first, second]}}
  vote: {{type: ensemble, members: [c, a, b], normalise: choice}}
  fused: {{type: ensemble, members: [a, b], combine: fuse, fuser: fuser}}
"""
    )


def openai_client(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)


def anthropic_client(running: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0)


def test_an_openai_stream_names_the_fallback_that_answered(
    running: Running, upstream: FakeOpenAI
) -> None:
    upstream.push(Fault(status=500))  # the first model fails before its stream begins
    with openai_client(running).chat.completions.with_streaming_response.create(
        model="main", messages=ASK, stream=True
    ) as response:
        assert response.headers["x-modelyard-model"] == "second"
        assert response.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "Echo: which one?"


def test_an_anthropic_stream_names_the_fallback_that_answered(
    running: Running, upstream: FakeOpenAI
) -> None:
    upstream.push(Fault(status=500))
    with anthropic_client(running).messages.with_streaming_response.create(
        model="main", max_tokens=50, messages=ASK, stream=True
    ) as response:
        assert response.headers["x-modelyard-model"] == "second"
        events = list(response.parse())
    assert events[-1].type == "message_stop"


def test_a_stream_names_the_model_a_whole_answer_would(running: Running) -> None:
    client = openai_client(running)
    for system in ("main", "vote"):
        whole = client.chat.completions.with_raw_response.create(model=system, messages=ASK)
        with client.chat.completions.with_streaming_response.create(
            model=system, messages=ASK, stream=True
        ) as streamed:
            assert streamed.headers["x-modelyard-model"] == whole.headers["x-modelyard-model"]
    assert whole.headers["x-modelyard-model"] == "a"  # the vote's winner, first to answer B


def test_a_fused_stream_names_its_fuser(running: Running) -> None:
    raw = anthropic_client(running).messages.with_raw_response.create(
        model="fused", max_tokens=50, messages=ASK, stream=True
    )
    assert raw.headers["x-modelyard-model"] == "fuser"
    assert [e.type for e in raw.parse()][-1] == "message_stop"
