"""The official OpenAI SDK as a client of the gateway, over a real socket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from tests.gateway.conftest import SYSTEMS, Running

from modelyard.topology import unwrap


def client(running: Running, key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)


def test_completion_through_a_fallback_system(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    raw = client(running).chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "ping"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "pong"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "support"
    assert raw.headers["x-modelyard-model"] == "cheap"
    assert float(raw.headers["x-modelyard-cost"]) == pytest.approx(
        (completion.usage.prompt_tokens * 1.0 + completion.usage.completion_tokens * 2.0) / 1e6
    )
    assert raw.headers["x-request-id"]


def test_stream_with_usage_ends_with_done(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    stream = client(running).chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "tell me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the cheap answer"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_system_messages_and_params_reach_the_model(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    completion = client(running).chat.completions.create(
        model="strong",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "and kind"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        temperature=0.2,
        max_tokens=50,
        seed=7,
        n=2,
    )
    assert [c.message.content for c in completion.choices] == ["the strong answer"] * 2
    calls = unwrap(running.app.live.current.models["strong"]).calls  # type: ignore[attr-defined]
    assert calls[-1].system == "be brief\n\nand kind"
    assert (calls[-1].temperature, calls[-1].max_tokens, calls[-1].seed, calls[-1].n) == (
        0.2,
        50,
        7,
        2,
    )


def test_the_end_user_is_named_by_user_or_by_safety_identifier_its_newer_name(
    serve_gateway: Callable[..., Running],
) -> None:
    # The SDK marks `user` deprecated for `safety_identifier`: both reach routing rules alike.
    running = serve_gateway()
    ask: Any = [{"role": "user", "content": "hi"}]
    client(running).chat.completions.create(model="strong", messages=ask, user="u-1")
    client(running).chat.completions.create(model="strong", messages=ask, safety_identifier="u-2")
    answer = client(running).responses.create(model="strong", input="hi", safety_identifier="u-3")
    assert answer.safety_identifier == "u-3"
    calls = unwrap(running.app.live.current.models["strong"]).calls  # type: ignore[attr-defined]
    assert [dict(c.metadata) for c in calls[-3:]] == [
        {"user": "u-1"},
        {"safety_identifier": "u-2"},
        {"safety_identifier": "u-3"},
    ]


def test_unknown_model_is_404_listing_what_exists(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    with pytest.raises(openai.NotFoundError) as caught:
        client(running).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert "support" in str(caught.value) and "cheap" in str(caught.value)


def test_bad_field_is_400_naming_it(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        client(running).chat.completions.create(
            model="support", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert "temperature" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        client(running).chat.completions.create(
            model="support", messages=[{"role": "wizard", "content": "x"}]
        )  # type: ignore[list-item,misc]
    assert "messages[0].role" in str(caught.value)


def test_rate_limited_upstream_is_429_with_retry_after(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    with pytest.raises(openai.RateLimitError) as caught:
        client(running).chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "limited"}]
        )
    assert caught.value.response.headers["retry-after"] == "7"


def test_a_request_larger_than_a_models_tpm_is_a_429_the_sdk_does_not_retry(
    serve_gateway: Callable[..., Running],
) -> None:
    # No wait lets it through: the SDK, retrying every 429 unless told not to, sent it 3 times.
    capped = (
        "  capped:\n    local: {type: fake, default: ok}\n"
        "    max_output_tokens: 50\n    limits: {tpm: 100}\n"
    )
    running = serve_gateway(text=SYSTEMS.replace("models:\n", "models:\n" + capped, 1))
    sent: list[object] = []
    http = httpx2.Client(event_hooks={"request": [sent.append]})
    retrying = openai.OpenAI(
        base_url=running.openai_url, api_key="x", max_retries=2, http_client=http
    )
    with pytest.raises(openai.RateLimitError) as caught:
        retrying.chat.completions.create(
            model="capped", messages=[{"role": "user", "content": "hi"}], max_tokens=500
        )
    assert "lower max_tokens" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in caught.value.response.headers
    assert len(sent) == 1


def test_context_length_is_400_with_its_code(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        client(running).chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "too long"}]
        )
    assert caught.value.code == "context_length_exceeded"


def test_all_members_down_is_503(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    with pytest.raises(openai.InternalServerError) as caught:
        client(running).chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 503


def test_models_list_and_embeddings(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    names = {m.id for m in client(running).models.list()}
    assert {"support", "cheap", "strong", "hash"} <= names
    embedding = client(running).embeddings.create(model="hash", input=["a", "b"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 16


def test_a_model_is_retrieved_by_name(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    model = client(running).models.retrieve("support")
    assert openai.types.Model.model_validate(model.model_dump()) == model
    assert (model.id, model.owned_by) == ("support", "modelyard-system")
    assert client(running).models.retrieve("cheap").owned_by == "local"
    with pytest.raises(openai.NotFoundError) as caught:
        client(running).models.retrieve("nope")
    assert caught.value.code == "model_not_found" and "support" in caught.value.message
    with pytest.raises(openai.NotFoundError) as misspelt:
        client(running).models.retrieve("suport")
    assert "'suport' does not exist; did you mean 'support'?" in misspelt.value.message


def test_decision_record_is_retrievable_by_request_id(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    raw = client(running).chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "ping"}]
    )
    request_id = raw.headers["x-request-id"]
    record = httpx2.get(f"{running.url}/v1/requests/{request_id}").json()
    assert record["model"] == "cheap"
    assert record["decision"]["kind"] == "fallback"
    assert [c["node"] for c in record["decision"]["children"]] == ["broken", "cheap"]
    assert record["config_version"] == running.app.live.current.version


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    },
                    {"role": "user", "content": "x"},
                ]
            },
            "messages[0].content",
        ),
        ({"service_tier": "flex"}, "service_tier"),
        ({"store": True}, "store"),
    ],
)
def test_what_would_be_dropped_without_a_word_is_a_400_naming_it(
    serve_gateway: Callable[..., Running], fields: dict[str, object], named: str
) -> None:
    running = serve_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        client(running).chat.completions.create(
            model="support", messages=[{"role": "user", "content": "x"}], extra_body=fields
        )
    assert caught.value.body["param"] == named  # type: ignore[index]
    sdk = client(running)  # the tiers every request gets anyway are taken
    assert (
        sdk.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}], service_tier="default"
        )
        .choices[0]
        .message.content
        == "pong"
    )


@pytest.mark.parametrize("timeout", ["soon", "nan", "inf", "-1", "0"])
def test_a_timeout_header_that_is_not_a_positive_number_is_a_400_naming_it(
    serve_gateway: Callable[..., Running], timeout: str
) -> None:
    sdk = client(serve_gateway())
    with pytest.raises(openai.BadRequestError, match="x-modelyard-timeout") as caught:
        sdk.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": "ping"}],
            extra_headers={"x-modelyard-timeout": timeout},
        )
    assert repr(timeout) in str(caught.value)
    assert caught.value.param == "x-modelyard-timeout"  # it was None
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(
            model="support", input="ping", extra_headers={"x-modelyard-timeout": timeout}
        )
    assert caught.value.param == "x-modelyard-timeout"
    answer = sdk.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "ping"}],
        extra_headers={"x-modelyard-timeout": "2.5"},
    )
    assert answer.choices[0].message.content == "pong"
