"""A virtual key's own requests and tokens per minute, told on every response in the headers each
API's SDKs read (OpenAI's `x-ratelimit-*-requests` and `-tokens`, Anthropic's
`anthropic-ratelimit-requests-*` and `-tokens-*`), whole or streamed, on the 429 that refuses it
too; the official SDKs as clients, the fake providers
upstream, the key's window on each state backend."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime

import anthropic
import httpx2
import openai
import pytest
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import CLAUDE_KEY, UPSTREAM_KEY, Running
from tests.gateway.test_keys import create_key
from tests.state.conftest import POSTGRES_URL, REDIS_URL, fresh_tables, unique_prefix

from modelyard.gateway.headers import duration
from modelyard.providers.headers import parse_duration
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore

OPENAI_NAMES = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")
ANTHROPIC_NAMES = ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining")
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def postgres_tables() -> AsyncIterator[str]:
    """A table prefix for the state store no other run uses, its tables dropped afterwards."""
    async for name in fresh_tables(PostgresStore):
        yield name


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def state(request: pytest.FixtureRequest) -> Iterator[str]:
    """The `state:` section: where the keys' windows are counted."""
    if request.param == "memory":
        yield "state: {backend: memory}\n"
    elif request.param == "redis":
        prefix = unique_prefix()
        yield f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n"
        asyncio.run(_cleared(RedisStore(REDIS_URL, prefix=prefix)))
    else:
        tables = request.getfixturevalue("postgres_tables")
        yield f"state: {{backend: postgres, url: '{POSTGRES_URL}', prefix: '{tables}'}}\n"


async def _cleared(store: RedisStore) -> None:
    await store.clear_prefix()
    await store.aclose()


@pytest.fixture
def running(
    serve_gateway: Callable[..., Running],
    upstream: FakeOpenAI,
    claude_fake: FakeAnthropic,
    state: str,
) -> Running:
    """A gateway with an admin key, `gpt` on the fake OpenAI (which sends its own
    `x-ratelimit-*` headers), `claude` on the fake Anthropic and `emb`, a hosted embedder."""
    return serve_gateway(
        text=f"""
providers:
  up: {{type: openai, base_url: "{upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
  anthropic: {{type: anthropic, base_url: "{claude_fake.url}", api_key: {CLAUDE_KEY}}}
models:
  gpt: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
  claude: {{provider: anthropic, id: claude-haiku-4-5-20251001, price: {{input: 1, output: 5}}}}
embedders:
  emb: {{provider: up, id: text-embedding-3-small, price: {{input: 0.02}}}}
gateway:
  admin_key: admin-secret-123456
{state}"""
    )


def openai_client(running: Running, key: dict[str, object]) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_url, api_key=str(key["key"]), max_retries=0)


def anthropic_client(running: Running, key: dict[str, object]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key=str(key["key"]), max_retries=0)


def openai_rate(headers: object) -> tuple[str, str, float]:
    """(limit, remaining, seconds to reset) as OpenAI's headers say them."""
    get = headers.get  # type: ignore[attr-defined]
    reset = parse_duration(get("x-ratelimit-reset-requests"))
    assert reset is not None, get("x-ratelimit-reset-requests")
    return get("x-ratelimit-limit-requests"), get("x-ratelimit-remaining-requests"), reset


def anthropic_rate(headers: object) -> tuple[str, str, float]:
    """(limit, remaining, seconds to reset) as Anthropic's headers say them."""
    get = headers.get  # type: ignore[attr-defined]
    reset = get("anthropic-ratelimit-requests-reset")
    assert reset.endswith("Z"), reset
    at = datetime.fromisoformat(reset).timestamp()
    return (
        get("anthropic-ratelimit-requests-limit"),
        get("anthropic-ratelimit-requests-remaining"),
        at - time.time(),
    )


def test_openai_chat_tells_what_is_left_then_refuses_with_it(running: Running) -> None:
    key = create_key(running, name="paced", rpm=3)
    chat = openai_client(running, key).chat.completions
    seen = []
    for _ in range(2):
        raw = chat.with_raw_response.create(model="gpt", messages=HI)  # type: ignore[arg-type]
        seen.append(openai_rate(raw.headers))
    stream = chat.with_raw_response.create(model="gpt", messages=HI, stream=True)  # type: ignore[arg-type]
    seen.append(openai_rate(stream.headers))
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert [(limit, left) for limit, left, _ in seen] == [("3", "2"), ("3", "1"), ("3", "0")]
    assert all(59 <= reset <= 60 for _, _, reset in seen)  # the window empties a minute on

    with pytest.raises(openai.RateLimitError) as caught:
        chat.create(model="gpt", messages=HI)  # type: ignore[arg-type]
    refused = caught.value.response.headers
    limit, left, reset = openai_rate(refused)
    assert (limit, left) == ("3", "0")
    assert 0 < int(refused["retry-after"]) <= math.ceil(reset) <= 60
    assert 0 < int(refused["retry-after-ms"]) <= math.ceil(reset * 1000)  # the SDKs read it first


def test_a_virtual_key_sees_its_own_limit_never_the_upstream_account(running: Running) -> None:
    key = create_key(running, name="paced", rpm=7)
    raw = openai_client(running, key).chat.completions.with_raw_response.create(
        model="gpt",
        messages=HI,  # type: ignore[arg-type]
    )
    assert openai_rate(raw.headers)[:2] == ("7", "6")  # the fake upstream says 500 and 499
    assert not [n for n in raw.headers if n.startswith("x-modelyard-upstream-")]
    assert not [n for n in raw.headers if "tokens" in n and "ratelimit" in n]  # this key has no tpm


def test_responses_and_embeddings_carry_them(running: Running) -> None:
    key = create_key(running, name="paced", rpm=5)
    client = openai_client(running, key)
    raw = client.responses.with_raw_response.create(model="gpt", input="hi")
    assert openai_rate(raw.headers)[:2] == ("5", "4")
    stream = client.responses.with_raw_response.create(model="gpt", input="hi", stream=True)
    assert openai_rate(stream.headers)[:2] == ("5", "3")
    assert any(event.type == "response.completed" for event in stream.parse())
    raw_emb = client.embeddings.with_raw_response.create(model="emb", input="hello")
    assert openai_rate(raw_emb.headers)[:2] == ("5", "2")


def streamed_claude(messages: anthropic.resources.Messages, max_tokens: int) -> httpx2.Headers:
    """The headers of a streamed Messages call to `claude`, read to its end."""
    with messages.with_streaming_response.create(
        model="claude",
        max_tokens=max_tokens,
        messages=HI,  # type: ignore[arg-type]
        stream=True,
    ) as streamed:
        assert "message_stop" in "".join(streamed.iter_lines())
        return streamed.headers


def test_anthropic_messages_tell_it_in_anthropics_headers(running: Running) -> None:
    key = create_key(running, name="paced", rpm=3)
    messages = anthropic_client(running, key).messages
    raw = messages.with_raw_response.create(model="claude", max_tokens=50, messages=HI)  # type: ignore[arg-type]
    limit, left, reset = anthropic_rate(raw.headers)
    assert (limit, left) == ("3", "2")  # the fake upstream says 50
    assert 58 <= reset <= 61  # an instant, rounded up to the second
    assert not [n for n in raw.headers if n.startswith(("x-ratelimit-", "x-modelyard-upstream"))]
    counted = messages.with_raw_response.count_tokens(model="claude", messages=HI)  # type: ignore[arg-type]
    assert anthropic_rate(counted.headers)[:2] == ("3", "1")  # a count takes a request too
    assert anthropic_rate(streamed_claude(messages, 50))[:2] == ("3", "0")
    with pytest.raises(anthropic.RateLimitError) as caught:
        messages.create(model="claude", max_tokens=50, messages=HI)  # type: ignore[arg-type]
    limit, left, reset = anthropic_rate(caught.value.response.headers)
    assert (limit, left) == ("3", "0")
    assert 0 < int(caught.value.response.headers["retry-after"]) <= reset + 1


def test_a_key_without_a_limit_and_the_admin_key_get_none(running: Running) -> None:
    unlimited = create_key(running, name="free")
    admin: dict[str, object] = {"key": "admin-secret-123456"}
    for key in (unlimited, admin):
        raw = openai_client(running, key).chat.completions.with_raw_response.create(
            model="gpt",
            messages=HI,  # type: ignore[arg-type]
        )
        assert not [n for n in raw.headers if n.startswith("x-ratelimit-")]
        raw_a = anthropic_client(running, key).messages.with_raw_response.create(
            model="claude",
            max_tokens=50,
            messages=HI,  # type: ignore[arg-type]
        )
        assert not [n for n in raw_a.headers if n.startswith("anthropic-ratelimit-")]
    # The admin key still sees the upstream account's quota, under the gateway's prefix.
    assert raw.headers["x-modelyard-upstream-x-ratelimit-limit-requests"] == "500"
    assert raw_a.headers["x-modelyard-upstream-anthropic-ratelimit-requests-limit"] == "50"


def test_errors_after_the_request_was_counted_carry_them_too(
    running: Running, upstream: FakeOpenAI
) -> None:
    key = create_key(running, name="paced", rpm=4, systems=["gpt"])
    chat = openai_client(running, key).chat.completions
    with pytest.raises(openai.PermissionDeniedError) as denied:  # refused before counting
        chat.create(model="claude", messages=HI)  # type: ignore[arg-type]
    assert "x-ratelimit-limit-requests" not in denied.value.response.headers
    upstream.push(Fault(status=401))  # the gateway's upstream credentials refused: a 502
    with pytest.raises(openai.InternalServerError) as caught:
        chat.create(model="gpt", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert openai_rate(caught.value.response.headers)[:2] == ("4", "3")


def openai_tokens(headers: object) -> tuple[int, int, float]:
    """(limit, remaining, seconds to reset) as OpenAI's `-tokens` headers say them."""
    get = headers.get  # type: ignore[attr-defined]
    reset = parse_duration(get("x-ratelimit-reset-tokens"))
    assert reset is not None, get("x-ratelimit-reset-tokens")
    return int(get("x-ratelimit-limit-tokens")), int(get("x-ratelimit-remaining-tokens")), reset


def test_a_keys_tokens_are_estimated_up_front_and_corrected_to_the_usage(
    running: Running,
) -> None:
    key = create_key(running, name="metered", tpm=1000)
    chat = openai_client(running, key).chat.completions
    first = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    limit, left, reset = openai_tokens(first.headers)
    estimate = limit - left  # the prompt, estimated, plus the 100 it may write
    assert limit == 1000 and 100 < estimate < 150 and 59 <= reset <= 60
    used = first.parse().usage
    assert used is not None and used.total_tokens < estimate
    second = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    # What the first used, not what it was estimated at, plus the second's own estimate.
    assert openai_tokens(second.headers)[1] == 1000 - used.total_tokens - estimate
    assert "x-ratelimit-limit-requests" not in second.headers  # no rpm on this key


def test_a_streamed_answer_is_corrected_to_the_usage_it_reports(running: Running) -> None:
    key = create_key(running, name="metered", tpm=1000)
    chat = openai_client(running, key).chat.completions
    stream = chat.with_raw_response.create(
        model="gpt",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    )
    estimate = 1000 - openai_tokens(stream.headers)[1]
    chunks = list(stream.parse())
    used = next(c.usage for c in chunks if c.usage is not None)
    assert used.total_tokens < estimate
    after = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    assert openai_tokens(after.headers)[1] == 1000 - used.total_tokens - estimate


def test_a_key_over_its_tokens_per_minute_is_refused_with_when_it_frees(running: Running) -> None:
    key = create_key(running, name="metered", tpm=300, rpm=20)
    chat = openai_client(running, key).chat.completions
    used = served = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(20):
            raw = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=250)  # type: ignore[arg-type]
            estimate = 300 - used - openai_tokens(raw.headers)[1]
            usage = raw.parse().usage
            assert usage is not None
            used, served = used + usage.total_tokens, served + 1
    # Refused once what was used plus this request's estimate would pass the limit.
    assert served >= 2 and used + estimate > 300 >= used - usage.total_tokens + estimate
    assert "this key's limit of 300 tokens per minute is reached" in caught.value.message
    refused = caught.value.response.headers
    limit, left, reset = openai_tokens(refused)
    assert (limit, left) == (300, 300 - used)
    assert 0 < int(refused["retry-after"]) <= math.ceil(reset) <= 60
    assert 0 < int(refused["retry-after-ms"]) <= math.ceil(reset * 1000)  # the SDKs read it first
    # The request its tokens refused was never served: it is not among the key's requests.
    assert openai_rate(refused)[:2] == ("20", str(20 - served))
    fits = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=10)  # type: ignore[arg-type]
    assert openai_rate(fits.headers)[:2] == ("20", str(20 - served - 1))


def test_a_failed_call_gives_back_the_tokens_it_was_not_billed_for(
    running: Running, upstream: FakeOpenAI
) -> None:
    key = create_key(running, name="metered", tpm=1000)
    chat = openai_client(running, key).chat.completions
    upstream.push(Fault(status=401))  # the gateway's upstream credentials refused: a 502
    with pytest.raises(openai.InternalServerError) as caught:
        chat.create(model="gpt", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    estimate = 1000 - openai_tokens(caught.value.response.headers)[1]
    assert estimate > 100
    raw = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    assert openai_tokens(raw.headers)[1] == 1000 - estimate  # this one's alone


def test_a_request_no_minute_could_fit_is_told_so_without_a_retry_after(
    running: Running,
) -> None:
    key = create_key(running, name="metered", tpm=300)
    chat = openai_client(running, key).chat.completions
    with pytest.raises(openai.RateLimitError) as caught:
        chat.create(model="gpt", messages=HI)  # type: ignore[arg-type]  # gpt may write 16k
    assert "more than this key's limit of 300 tokens per minute" in caught.value.message
    assert "lower max_tokens" in caught.value.message
    assert "retry-after" not in caught.value.response.headers
    assert caught.value.response.headers["x-should-retry"] == "false"  # the SDKs obey it
    fits = chat.with_raw_response.create(model="gpt", messages=HI, max_tokens=100)  # type: ignore[arg-type]
    assert openai_tokens(fits.headers)[1] > 150  # the refused one took nothing


def test_responses_and_embeddings_count_tokens_too(running: Running) -> None:
    key = create_key(running, name="metered", tpm=1000)
    client = openai_client(running, key)
    raw = client.responses.with_raw_response.create(model="gpt", input="hi", max_output_tokens=100)
    left = openai_tokens(raw.headers)[1]
    usage = raw.parse().usage
    assert usage is not None and 1000 - left > usage.total_tokens
    emb = client.embeddings.with_raw_response.create(model="emb", input="hello")
    emb_left = openai_tokens(emb.headers)[1]
    assert 0 < 1000 - usage.total_tokens - emb_left < 10  # the responses call's usage, then
    used = emb.parse().usage.total_tokens  # the embedding's estimate, corrected to this
    again = client.embeddings.with_raw_response.create(model="emb", input="hello")
    assert openai_tokens(again.headers)[1] == emb_left - used


def test_anthropic_messages_tell_the_tokens_in_anthropics_headers(running: Running) -> None:
    key = create_key(running, name="metered", tpm=300)
    messages = anthropic_client(running, key).messages
    raw = messages.with_raw_response.create(model="claude", max_tokens=200, messages=HI)  # type: ignore[arg-type]
    get = raw.headers.get
    assert get("anthropic-ratelimit-tokens-limit") == "300"
    estimate = 300 - int(get("anthropic-ratelimit-tokens-remaining"))
    assert 200 < estimate < 250  # the prompt, estimated, and the 200 it may write
    at = datetime.fromisoformat(get("anthropic-ratelimit-tokens-reset")).timestamp()
    assert 58 <= at - time.time() <= 61
    assert not [n for n in raw.headers if n.startswith("x-ratelimit-")]
    assert "anthropic-ratelimit-requests-limit" not in raw.headers  # no rpm on this key
    usage = raw.parse().usage
    used = usage.input_tokens + usage.output_tokens
    counted = messages.with_raw_response.count_tokens(model="claude", messages=HI)  # type: ignore[arg-type]
    assert counted.headers["anthropic-ratelimit-tokens-limit"] == "300"
    left = int(counted.headers["anthropic-ratelimit-tokens-remaining"])
    assert left == 300 - used  # told what the answer used, and counted nothing itself
    streamed = streamed_claude(messages, 200)
    assert int(streamed["anthropic-ratelimit-tokens-remaining"]) == left - estimate
    with pytest.raises(anthropic.RateLimitError) as caught:
        for _ in range(20):  # each uses a few tokens of the 300, and may take 200 more
            messages.create(model="claude", max_tokens=200, messages=HI)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "300 tokens per minute" in caught.value.body["error"]["message"]  # type: ignore[index]
    headers = caught.value.response.headers
    assert headers["anthropic-ratelimit-tokens-limit"] == "300"
    assert int(headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (0, "0s"),
        (0.0004, "1ms"),  # rounded up: a client waiting it out never comes back early
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (60, "1m0s"),
        (86.4, "1m26.4s"),
        (3725.5, "1h2m5.5s"),
    ],
)
def test_resets_are_written_as_openai_writes_them(seconds: float, written: str) -> None:
    assert duration(seconds) == written.encode()
    assert parse_duration(written) == pytest.approx(max(seconds, 0.001) if seconds else 0.0)
