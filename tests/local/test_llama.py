"""SmolLM2 on llama.cpp: real generation, streaming, logprobs, usage, deadlines, concurrency."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from modelyard.errors import BadRequestError, ContextLengthError, ModelTimeoutError
from modelyard.local.llama import LlamaModel
from modelyard.local.llama_engine import LlamaEngine, Sampling
from modelyard.model import Capabilities, ModelInfo
from modelyard.types import FinishReason, ResponseFormat, Tool, user

pytestmark = pytest.mark.local


def smol(engine: LlamaEngine, **sampling: float) -> LlamaModel:
    info = ModelInfo(
        name="smol",
        kind="llama_cpp",
        capabilities=Capabilities(logprobs=True, max_output_tokens=64),
    )
    return LlamaModel(info, engine, sampling=Sampling(temperature=0.0, **sampling))


async def test_answers_a_simple_question_coherently(engine: LlamaEngine) -> None:
    response = await smol(engine).complete(user("What is the capital of Germany?", max_tokens=24))
    assert "berlin" in response.text.lower()
    assert response.decision is not None and response.decision.reason == "answered"


async def test_usage_counts_the_real_tokens(engine: LlamaEngine) -> None:
    response = await smol(engine).complete(
        user("Write a long poem about the sea.", max_tokens=12, logprobs=True)
    )
    assert response.finish_reason is FinishReason.LENGTH
    assert response.usage.output_tokens == 12
    assert response.choices[0].logprobs is not None
    assert len(response.choices[0].logprobs) == 12
    # The chat template adds a system prompt and role markers around the 8-word question.
    assert response.usage.input_tokens > 20
    assert not response.usage.estimated


async def test_repeated_prompt_reuses_the_cached_prefix(engine: LlamaEngine) -> None:
    model = smol(engine)
    first = await model.complete(user("Name a fruit.", max_tokens=4))
    second = await model.complete(user("Name a fruit.", max_tokens=4))
    assert second.usage.input_tokens == first.usage.input_tokens
    assert second.usage.cached_tokens == second.usage.input_tokens - 1


async def test_stream_chunks_join_to_the_complete_answer(engine: LlamaEngine) -> None:
    model = smol(engine)
    request = user("Name three colors.", max_tokens=20)
    full = await model.complete(request)
    chunks = [chunk async for chunk in model.stream(request)]
    assert len(chunks) > 3  # token by token, not one replayed block
    assert "".join(c.text for c in chunks) == full.text
    final = chunks[-1].response
    assert final is not None and final.text == full.text
    assert final.usage.output_tokens == full.usage.output_tokens
    assert [c.model for c in chunks] == ["smol"] + [None] * (len(chunks) - 1)  # who answers


async def test_logprobs_are_real_and_never_positive(engine: LlamaEngine) -> None:
    response = await smol(engine).complete(
        user("Say yes.", max_tokens=6, logprobs=True, top_logprobs=3)
    )
    logprobs = response.choices[0].logprobs
    assert logprobs
    assert all(lp.logprob <= 0 for lp in logprobs)
    assert any(lp.logprob < -1e-4 for lp in logprobs)
    # Greedy decoding picks the most likely token, so it heads its own top list.
    assert all(lp.top[0] == (lp.token, lp.logprob) for lp in logprobs if lp.token.isprintable())
    assert "".join(lp.token for lp in logprobs) == response.text


async def test_no_logprobs_unless_asked(engine: LlamaEngine) -> None:
    response = await smol(engine).complete(user("Say yes.", max_tokens=3))
    assert response.choices[0].logprobs is None


async def test_stop_sequence_cuts_the_answer_before_it(engine: LlamaEngine) -> None:
    response = await smol(engine).complete(
        user("Count from 1 to 10, one number per line.", max_tokens=40, stop=("4",))
    )
    assert response.finish_reason is FinishReason.STOP
    assert "4" not in response.text
    assert "3" in response.text


async def test_seed_makes_sampling_repeatable(engine: LlamaEngine) -> None:
    model = smol(engine)
    request = user("Invent a name for a cat.", max_tokens=10, temperature=1.0, seed=7)
    first = await model.complete(request)
    second = await model.complete(request)
    assert first.text == second.text


async def test_json_mode_returns_valid_json(engine: LlamaEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    response = await smol(engine).complete(
        user(
            "Which city is the capital of Japan? Answer in JSON.",
            max_tokens=40,
            response_format=ResponseFormat(type="json_schema", schema=schema),
        )
    )
    assert isinstance(json.loads(response.text)["city"], str)


async def test_deadline_stops_generation_with_a_timeout(engine: LlamaEngine) -> None:
    model = smol(engine)
    # Eight long answers take several seconds; the deadline allows well under one.
    request = user("Tell me a long story about a dragon.", max_tokens=200, n=8).with_budget(0.8)
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as caught:
        await model.complete(request)
    assert time.monotonic() - started < 1.6
    assert caught.value.retryable
    assert caught.value.decision is not None and caught.value.decision.reason == "failed"


async def test_a_cut_stream_raises_instead_of_finishing(engine: LlamaEngine) -> None:
    model = smol(engine)
    request = user("Tell me a long story about a dragon.", max_tokens=200, n=8).with_budget(0.8)
    received = []
    with pytest.raises(ModelTimeoutError):
        async for chunk in model.stream(request):
            received.append(chunk)
    assert all(chunk.response is None for chunk in received)


async def test_concurrent_requests_wait_their_turn_and_both_answer(engine: LlamaEngine) -> None:
    model = smol(engine)
    first, second = await asyncio.gather(
        model.complete(user("What is the capital of Japan?", max_tokens=16)),
        model.complete(user("What is the capital of Germany?", max_tokens=16)),
    )
    assert "tokyo" in first.text.lower()
    assert "berlin" in second.text.lower()


async def test_a_stream_closed_early_frees_the_model(engine: LlamaEngine) -> None:
    model = smol(engine)
    # Left to run, eight 200-token answers would hold the model for many seconds.
    stream = model.stream(user("Tell me a long story about a dragon.", max_tokens=200, n=8))
    first = await anext(stream)
    assert first.text
    await stream.aclose()
    started = time.monotonic()
    await model.complete(user("Say hi.", max_tokens=3))
    assert time.monotonic() - started < 3.0


async def test_a_request_cancelled_while_queued_behind_another_costs_nothing(
    engine: LlamaEngine,
) -> None:
    from dataclasses import replace

    from modelyard.cost.budget_book import BudgetBook
    from modelyard.cost.budget_counters import Budget
    from modelyard.cost.prices import Price
    from modelyard.state.memory import MemoryStore
    from tests.cost.helpers import guard

    model = smol(engine)
    model.info = replace(model.info, price=Price(input=1e6, output=1e6))
    budget = Budget(name="total", scope="total", limit=1e9)
    book = BudgetBook(MemoryStore())
    # A long answer holds the model; the next request waits in its queue and is cancelled there.
    busy = model.stream(user("Tell me a long story about a dragon.", max_tokens=200, n=8))
    assert (await anext(busy)).text
    queued = asyncio.create_task(guard(model, book, budget).complete(user("Say hi.")))
    for _ in range(1000):
        status = await book.status(budget, "all")
        if status is not None and status.reserved > 0:
            break
        await asyncio.sleep(0.001)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await busy.aclose()  # type: ignore[attr-defined]
    status = await book.status(budget, "all")
    assert status is not None and status.reserved == 0 and status.spent == 0


async def test_prompt_longer_than_the_context_is_a_context_length_error(
    engine: LlamaEngine,
) -> None:
    with pytest.raises(ContextLengthError, match="n_ctx"):
        await smol(engine).complete(user("word " * 2000, max_tokens=3))


async def test_tools_are_refused_loudly(engine: LlamaEngine) -> None:
    request = user("What's the weather?", tools=(Tool(name="weather"),))
    with pytest.raises(BadRequestError, match="tool calling"):
        await smol(engine).complete(request)


async def test_price_table_sets_the_cost(engine: LlamaEngine) -> None:
    from dataclasses import replace

    from modelyard.cost.prices import Price

    model = smol(engine)
    model.info = replace(model.info, price=Price(input=1.0, output=2.0))
    response = await model.complete(user("Say hi.", max_tokens=5))
    usage = response.usage
    assert response.cost == pytest.approx(
        (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6
    )


async def test_a_character_cut_by_the_token_budget_is_left_out_not_replaced(
    engine: LlamaEngine,
) -> None:
    """Emoji take several tokens each: a budget ending inside one must not end with U+FFFD."""
    model = smol(engine)
    texts = []
    for budget in range(1, 9):
        response = await model.complete(
            user("Reply only with emoji: 🎉😀🔥🚀 日本語", max_tokens=budget)
        )
        texts.append(response.text)
    assert any(texts) and not any("\ufffd" in text for text in texts), texts
