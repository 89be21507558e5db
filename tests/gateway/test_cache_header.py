"""`x-modelyard-cache`: whether an answer came from the response cache, as the official OpenAI
and Anthropic SDKs read it (`with_raw_response`), whole and streamed, on every cacheable route."""

from __future__ import annotations

import re
from collections.abc import Callable

import anthropic
import httpx2
import openai
import pytest
from tests.gateway.conftest import Running

CACHE = "cache: {backend: memory}\n"

APIS = ["chat", "responses", "messages"]


def cache_status(
    running: Running,
    api: str,
    *,
    stream: bool,
    control: str | None = None,
    model: str = "support",
    text: str = "ping",
) -> str | None:
    """The `x-modelyard-cache` header of one request through `api`'s SDK (the whole answer
    read, streamed or not), None when there is none."""
    headers = {"Cache-Control": control} if control is not None else {}
    if api == "messages":
        sdk = anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0)
        raw = sdk.messages.with_raw_response.create(
            model=model,
            max_tokens=20,
            messages=[{"role": "user", "content": text}],
            stream=stream,
            extra_headers=headers,
        )
    else:
        client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
        if api == "chat":
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                temperature=0,
                stream=stream,
                extra_headers=headers,
            )
        else:
            raw = client.responses.with_raw_response.create(
                model=model, input=text, temperature=0, stream=stream, extra_headers=headers
            )
    parsed = raw.parse()
    if stream:
        for _ in parsed:  # the whole stream, so its answer is stored
            pass
    return raw.headers.get("x-modelyard-cache")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
def test_a_cached_answer_says_hit_and_a_fresh_one_miss(
    serve_gateway: Callable[..., Running], api: str, stream: bool
) -> None:
    # A cached answer reached the client with no sign of it but its usage of zeros: only the
    # decision record told a hit from a miss.
    running = serve_gateway(CACHE)
    assert cache_status(running, api, stream=stream) == "miss"
    assert cache_status(running, api, stream=stream) == "hit"
    assert cache_status(running, api, stream=stream, control="no-cache") == "refresh"
    assert cache_status(running, api, stream=stream, control="no-store") == "bypass"
    assert cache_status(running, api, stream=stream) == "hit"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", APIS)
def test_no_cache_no_header(serve_gateway: Callable[..., Running], api: str, stream: bool) -> None:
    running = serve_gateway()
    assert cache_status(running, api, stream=stream) is None
    assert cache_status(running, api, stream=stream) is None


def test_only_the_targets_the_cache_covers_carry_it(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway("cache: {backend: memory, targets: [strong]}\n")
    assert [cache_status(running, "chat", stream=False, model="strong") for _ in range(2)] == [
        "miss",
        "hit",
    ]
    assert cache_status(running, "chat", stream=False, model="support") is None


def test_a_sampled_request_a_cache_leaves_alone_says_bypass(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway("cache: {backend: memory, sampled: false}\n")
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "ping"}], temperature=0.7
    )
    assert raw.headers["x-modelyard-cache"] == "bypass"


@pytest.mark.parametrize("stream", [False, True])
def test_a_semantic_hit_tells_its_similarity_as_the_record_does(
    serve_gateway: Callable[..., Running], stream: bool
) -> None:
    running = serve_gateway(
        "cache: {backend: memory, exact: false, "
        "semantic: {embedder: hash, systems: [support], threshold: 0.5}}\n"
    )
    first = "where can I find the blue tent"
    assert cache_status(running, "chat", stream=stream, text=first) == "miss"
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="support",
        messages=[{"role": "user", "content": "where can I find the blue tent please"}],
        temperature=0,
        stream=stream,
    )
    if stream:
        for _ in raw.parse():
            pass
    header = raw.headers["x-modelyard-cache"]
    found = re.fullmatch(r"hit; similarity=(\d\.\d{3})", header)
    assert found is not None, header
    record = httpx2.get(f"{running.url}/v1/requests/{raw.headers['x-request-id']}").json()
    similarity = record["decision"]["details"]["similarity"]
    assert float(found.group(1)) == pytest.approx(similarity, abs=0.0006)
    assert 0.5 <= similarity < 1
