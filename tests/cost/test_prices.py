"""Prices as data: a long-context tier bills a whole call above its threshold at its rates."""

from __future__ import annotations

import pytest

from modelyard.cost.bounds import partial_cost
from modelyard.cost.prices import Price, bound_input_tokens, estimate_input_tokens
from modelyard.model import ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.types import Usage, user

GEMINI_PRO = Price(input=1.25, output=10.0, cached_input=0.125).with_tier(
    tokens=200_000, input=2.5, output=15.0
)
"""Gemini 2.5 Pro's list prices: $2.50 / $15 (cached $0.25) for prompts above 200k tokens."""

SONNET = Price(
    input=3.0, output=15.0, cached_input=0.30, cache_write=3.75, cache_write_1h=6.0
).with_tier(tokens=200_000, input=6.0, output=22.5)
"""Claude Sonnet 4.5 with the 1M-context beta: $6 / $22.50 above 200k input tokens."""


def usd(input_tokens: int, rate: float) -> float:
    return input_tokens * rate / 1e6


def test_one_token_past_the_threshold_bills_the_whole_call_at_the_tier() -> None:
    below = GEMINI_PRO.cost(Usage(input_tokens=199_999, output_tokens=1_000))
    at = GEMINI_PRO.cost(Usage(input_tokens=200_000, output_tokens=1_000))
    above = GEMINI_PRO.cost(Usage(input_tokens=200_001, output_tokens=1_000))
    assert below == pytest.approx(usd(199_999, 1.25) + usd(1_000, 10.0))
    assert at == pytest.approx(usd(200_000, 1.25) + usd(1_000, 10.0))
    assert above == pytest.approx(usd(200_001, 2.5) + usd(1_000, 15.0))
    assert above > 1.9 * below


def test_cached_tokens_count_toward_the_threshold_and_bill_at_the_tiers_cached_rate() -> None:
    # 150k fresh + 60k read from the cache: a 210k prompt, as Google and Anthropic count it.
    usage = Usage(input_tokens=210_000, cached_tokens=60_000, output_tokens=500)
    assert GEMINI_PRO.cost(usage) == pytest.approx(
        usd(150_000, 2.5) + usd(60_000, 0.25) + usd(500, 15.0)
    )


def test_cache_reads_and_writes_in_a_tiered_call_keep_their_ratio_to_input() -> None:
    usage = Usage(
        input_tokens=250_000,
        cached_tokens=100_000,
        cache_write_tokens=50_000,
        cache_write_1h_tokens=10_000,
        output_tokens=2_000,
    )
    # Anthropic's long-context cache rates: read 0.1x, 5-minute write 1.25x, 1-hour write 2x $6.
    assert SONNET.cost(usage) == pytest.approx(
        usd(100_000, 6.0)
        + usd(100_000, 0.60)
        + usd(40_000, 7.50)
        + usd(10_000, 12.0)
        + usd(2_000, 22.5)
    )
    assert SONNET.cost(Usage(input_tokens=150_000, cache_write_tokens=50_000)) == pytest.approx(
        usd(100_000, 3.0) + usd(50_000, 3.75)
    )


def test_a_tier_keeps_the_cache_rates_it_sets_and_bills_unset_ones_as_its_input() -> None:
    explicit = Price(input=1.0, output=2.0, cached_input=0.1).with_tier(
        tokens=100, input=2.0, output=3.0, cached_input=0.5
    )
    assert explicit.above is not None and explicit.above.rates.cached_input == 0.5
    plain = Price(input=1.0, output=2.0).with_tier(tokens=100, input=2.0, output=3.0)
    assert plain.cost(Usage(input_tokens=101, cached_tokens=101)) == pytest.approx(usd(101, 2.0))


def test_a_threshold_of_zero_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        Price(input=1.0).with_tier(tokens=0, input=2.0, output=0.0)


def test_a_free_model_with_a_paid_tier_is_not_free() -> None:
    assert Price().is_free
    assert not Price().with_tier(tokens=10, input=1.0, output=0.0).is_free


def test_worst_case_is_at_the_tier_when_the_prompt_may_pass_its_threshold() -> None:
    short = user("x" * 100_000, max_tokens=1_000)
    long = user("x" * 300_000, max_tokens=1_000)
    short_in, long_in = bound_input_tokens(short), bound_input_tokens(long)
    assert short_in < 200_000 < long_in
    assert GEMINI_PRO.worst_case(short, 0) == pytest.approx(usd(short_in, 1.25) + usd(1_000, 10))
    assert GEMINI_PRO.worst_case(long, 0) == pytest.approx(usd(long_in, 2.5) + usd(1_000, 15))
    # Whatever the tokenizer makes of it, the bill stays within the reservation.
    for tokens in (long_in, 200_001, 200_000, 1):
        used = Usage(input_tokens=tokens, output_tokens=1_000)
        assert GEMINI_PRO.cost(used) <= GEMINI_PRO.worst_case(long, 0)


def test_worst_case_covers_a_long_prompt_written_whole_to_the_one_hour_cache() -> None:
    long = user("x" * 300_000, max_tokens=1_000)
    tokens = bound_input_tokens(long)
    written = Usage(
        input_tokens=tokens,
        cache_write_tokens=tokens,
        cache_write_1h_tokens=tokens,
        output_tokens=1_000,
    )
    assert SONNET.cost(written) == pytest.approx(SONNET.worst_case(long, 0))
    assert SONNET.cost(written) == pytest.approx(usd(tokens, 12.0) + usd(1_000, 22.5))


def test_worst_case_of_a_cheaper_tier_still_covers_a_call_below_its_threshold() -> None:
    # Not a price any provider has, but the bound must not depend on tiers only going up.
    odd = Price(input=2.0, output=4.0).with_tier(tokens=1_000, input=1.0, output=1.0)
    request = user("x" * 5_000, max_tokens=10)
    below = odd.cost(Usage(input_tokens=1_000, output_tokens=10))
    assert odd.worst_case(request, 0) >= below
    assert odd.worst_case(request, 0) == pytest.approx(
        usd(bound_input_tokens(request), 2.0) + usd(10, 4.0)
    )


def test_an_interrupted_long_call_is_estimated_at_the_tier() -> None:
    long = user("x" * 1_000_000, max_tokens=10)
    model = ScriptedModel(info=ModelInfo(name="m", kind="fake", price=GEMINI_PRO), default=Reply())
    tokens = estimate_input_tokens(long)
    assert tokens > 200_000
    assert partial_cost(model, long) == pytest.approx(usd(tokens, 2.5))


async def test_a_long_calls_reported_cost_is_at_the_tier() -> None:
    usage = Usage(input_tokens=300_000, output_tokens=100)
    model = ScriptedModel(
        info=ModelInfo(name="m", kind="fake", price=GEMINI_PRO), default=Reply(usage=usage)
    )
    response = await model.complete(user("hello"))
    assert response.cost == pytest.approx(usd(300_000, 2.5) + usd(100, 15.0))
