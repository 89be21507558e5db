"""The scripted fake model: answers, errors, streams and cuts as scripted."""

from __future__ import annotations

import time

import pytest

from modelyard.cost.prices import Price
from modelyard.errors import ModelTimeoutError, RateLimitedError, UnavailableError
from modelyard.model import ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.streaming import collect
from modelyard.types import FinishReason, user


def fake(**kwargs: object) -> ScriptedModel:
    info = ModelInfo(name="fake", kind="fake", price=Price(input=1.0, output=2.0))
    return ScriptedModel(info=info, **kwargs)  # type: ignore[arg-type]


async def test_known_prompt_gets_its_answer_and_cost_from_the_price_table() -> None:
    model = fake(answers={"2+2?": Reply(text="4")})
    response = await model.complete(user("2+2?"))
    assert response.text == "4"
    usage = response.usage
    assert response.cost == pytest.approx(
        (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6
    )
    assert response.decision is not None and response.decision.kind == "model"


async def test_script_then_default() -> None:
    model = fake(script=[Reply(error="rate_limited", retry_after=2.0)], default=Reply(text="fine"))
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert caught.value.retry_after == 2.0 and caught.value.retryable
    assert (await model.complete(user("x"))).text == "fine"
    assert len(model.calls) == 2


async def test_stream_yields_words_then_the_final_response() -> None:
    model = fake(default=Reply(text="one two three"))
    chunks = [c async for c in model.stream(user("x"))]
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[-1].response is not None
    assert chunks[-1].response.finish_reason is FinishReason.STOP


async def test_cut_stream_raises_instead_of_finishing() -> None:
    model = fake(default=Reply(text="a b c d", cut_after=2))
    with pytest.raises(UnavailableError):
        await collect(model.stream(user("x")))


async def test_a_reply_cut_off_by_the_deadline_is_recorded_with_the_time_until_then() -> None:
    model = fake(default=Reply(text="late", latency=5.0))
    with pytest.raises(ModelTimeoutError) as caught:
        await model.complete(user("x", deadline=time.monotonic() + 0.1))
    decision = caught.value.decision
    assert decision is not None and decision.node == "fake"
    assert decision.latency_ms == pytest.approx(100, abs=40)
