"""The scripted fake model: answers, errors, streams and cuts as scripted."""

from __future__ import annotations

import time

import pytest

from modelyard.cost.prices import Price, estimate_input_tokens, estimate_tokens
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
    # The deadline (100 ms), not the 5 s; a loaded machine is late, never early.
    assert 60 <= decision.latency_ms < 1000


async def test_a_reply_cut_off_by_the_deadline_costs_its_input_as_a_provider_bills_it() -> None:
    # It cost nothing, so a dry run on fakes showed slow calls as free.
    model = fake(default=Reply(text="late", latency=5.0))
    request = user("how much is this?", deadline=time.monotonic() + 0.05)
    with pytest.raises(ModelTimeoutError) as caught:
        await model.complete(request)
    tokens = estimate_input_tokens(request)
    assert caught.value.usage is not None and caught.value.usage.input_tokens == tokens
    assert caught.value.cost == pytest.approx(tokens * 1.0 / 1e6)
    assert caught.value.decision is not None
    assert caught.value.decision.cost == caught.value.cost


async def test_a_stream_cut_midway_costs_its_input_and_what_it_sent() -> None:
    model = fake(default=Reply(text="one two three", cut_after=2))
    request = user("x")
    with pytest.raises(UnavailableError) as caught:
        await collect(model.stream(request))
    sent = estimate_tokens("one two ")
    assert caught.value.cost == pytest.approx(
        (estimate_input_tokens(request) * 1.0 + sent * 2.0) / 1e6
    )
    assert caught.value.decision is not None
    assert caught.value.decision.cost == caught.value.cost


async def test_a_scripted_error_costs_nothing() -> None:
    with pytest.raises(UnavailableError) as caught:
        await fake(default=Reply(error="unavailable")).complete(user("x"))
    assert caught.value.cost == 0.0 and caught.value.usage is None


async def test_a_call_whose_deadline_passed_is_not_sent() -> None:
    # It answered at once all the same, where a provider's adapter sends nothing: a dry run on
    # fakes had a judge asked after its ensemble used up the time answer, a real one time out.
    model = fake(default=Reply(text="too late"))
    with pytest.raises(ModelTimeoutError) as caught:
        await model.complete(user("x", deadline=time.monotonic() - 0.01))
    assert caught.value.code == "deadline" and caught.value.cost == 0.0
    assert model.calls == []
