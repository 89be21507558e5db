"""The fake Gemini server answers what the official `google-genai` types accept, so it cannot
drift from the real API unnoticed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from google.genai import types as gt

from tests.fakes.gemini_server import FakeGemini, GeminiAnswer
from tests.fakes.server import Fault

KEY = "AIzaSy-fake-server-key-000000000000"
BODY = {
    "contents": [{"role": "user", "parts": [{"text": "Tell me about the sea"}]}],
    "generationConfig": {"candidateCount": 2, "responseLogprobs": True, "logprobs": 2},
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini(api_key=KEY)
    with server.running():
        yield server  # type: ignore[misc]


@pytest.fixture(autouse=True)
def fresh(fake: FakeGemini) -> None:
    fake.reset()


async def post(
    fake: FakeGemini, method: str, body: Any, *, query: str = "", key: str = KEY
) -> tuple[int, bytes]:
    url = f"{fake.url}/v1beta/models/gemini-2.5-flash:{method}{query}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=orjson.dumps(body), headers={"x-goog-api-key": key}) as reply,
    ):
        return reply.status, await reply.read()


def sse_payloads(raw: bytes) -> list[bytes]:
    events = [e for e in raw.split(b"\r\n\r\n") if e.strip()]
    assert all(e.startswith(b"data: ") for e in events)
    return [e[len(b"data: ") :] for e in events]


@pytest.mark.parametrize(
    "scripted",
    [
        GeminiAnswer(),
        GeminiAnswer(text="", calls=(("f", {"a": 1}),), thought_signature="c2lnbmF0dXJl"),
        GeminiAnswer(text="cut", finish_reason="SAFETY", finish_message="blocked"),
        GeminiAnswer(block_reason="PROHIBITED_CONTENT"),
        GeminiAnswer(text="ok", cached_tokens=10, thoughts_tokens=5),
    ],
)
async def test_answers_are_valid_generate_content_responses(
    fake: FakeGemini, scripted: GeminiAnswer
) -> None:
    fake.script(scripted)
    status, raw = await post(fake, "generateContent", BODY)
    assert status == 200
    parsed = gt.GenerateContentResponse.model_validate_json(raw)
    assert parsed.usage_metadata is not None and parsed.model_version == "gemini-2.5-flash"


async def test_a_filtered_stream_ends_in_a_chunk_without_content(fake: FakeGemini) -> None:
    # As Gemini streams a safety stop: the text so far, then the finishReason with no content.
    fake.script(GeminiAnswer(text="one two", finish_reason="SAFETY"))
    status, raw = await post(fake, "streamGenerateContent", BODY, query="?alt=sse")
    chunks = [gt.GenerateContentResponse.model_validate_json(p) for p in sse_payloads(raw)]
    assert status == 200 and chunks[-1].candidates is not None
    for last in chunks[-1].candidates:
        assert last.finish_reason == "SAFETY" and last.content is None and last.safety_ratings
    first = [c.candidates[0].content for c in chunks[:-1] if c.candidates]
    assert "".join(p.text or "" for c in first if c and c.parts for p in c.parts) == "one two"


async def test_every_stream_event_is_a_valid_response_chunk(fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="one two", calls=(("f", {}),)))
    status, raw = await post(fake, "streamGenerateContent", BODY, query="?alt=sse")
    payloads = sse_payloads(raw)
    assert status == 200 and len(payloads) == 3
    chunks = [gt.GenerateContentResponse.model_validate_json(p) for p in payloads]
    assert chunks[-1].candidates is not None
    assert [c.finish_reason for c in chunks[-1].candidates] == ["STOP", "STOP"]


async def test_stream_without_alt_sse_is_one_json_array(fake: FakeGemini) -> None:
    status, raw = await post(fake, "streamGenerateContent", BODY)
    chunks = orjson.loads(raw)
    assert status == 200 and isinstance(chunks, list)
    for item in chunks:
        gt.GenerateContentResponse.model_validate_json(orjson.dumps(item))


async def test_no_final_leaves_out_the_finish_chunk(fake: FakeGemini) -> None:
    fake.push(Fault(no_final=True))
    _, raw = await post(fake, "streamGenerateContent", BODY, query="?alt=sse")
    chunks = [orjson.loads(p) for p in sse_payloads(raw)]
    assert chunks and not any("finishReason" in c for x in chunks for c in x["candidates"])


async def test_embeddings_are_a_valid_embed_content_response(fake: FakeGemini) -> None:
    body = {
        "requests": [
            {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": t}]}}
            for t in ("a", "b")
        ]
    }
    status, raw = await post(fake, "batchEmbedContents", body)
    parsed = gt.EmbedContentResponse.model_validate_json(raw)
    assert status == 200 and parsed.embeddings is not None and len(parsed.embeddings) == 2


async def test_rate_limit_body_carries_retry_info(fake: FakeGemini) -> None:
    fake.push(Fault(status=429))
    status, raw = await post(fake, "generateContent", BODY)
    error = orjson.loads(raw)["error"]
    assert (status, error["code"], error["status"]) == (429, 429, "RESOURCE_EXHAUSTED")
    retry = [d for d in error["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]


async def test_unknown_request_field_is_refused_like_the_real_api(fake: FakeGemini) -> None:
    status, raw = await post(fake, "generateContent", {**BODY, "max_tokens": 5})
    error = orjson.loads(raw)["error"]
    assert (status, error["status"]) == (400, "INVALID_ARGUMENT")
    assert 'Unknown name "max_tokens"' in error["message"]


async def test_wrong_key_is_refused_with_api_key_invalid(fake: FakeGemini) -> None:
    status, raw = await post(fake, "generateContent", BODY, key="nope")
    reasons = [d.get("reason") for d in orjson.loads(raw)["error"]["details"]]
    assert status == 400 and "API_KEY_INVALID" in reasons
