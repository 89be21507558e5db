"""Fallback chains: rules by error class, the error the caller sees, streaming failover."""

from __future__ import annotations

import re
import time

import pytest

from modelyard.errors import (
    ContentFilteredError,
    ContextLengthError,
    ModelTimeoutError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.providers.fake import Reply
from modelyard.resilience.fallback import FallbackModel, rule_for
from modelyard.streaming import collect
from modelyard.types import ThinkingPart, user
from tests.resilience.scripted import CostlyFailure, fails, scripted


async def test_outage_moves_on_to_the_next_member() -> None:
    primary = scripted("a", default=fails("unavailable"))
    backup = scripted("b", default="from b")
    response = await FallbackModel("f", [primary, backup]).complete(user("x"))
    assert response.text == "from b" and response.model == "b"


async def test_context_length_skips_members_whose_window_is_not_larger() -> None:
    small = scripted("small", default=fails("context_length"), context_window=8_000)
    same = scripted("same", context_window=8_000)
    big = scripted("big", default="long answer", context_window=200_000)
    response = await FallbackModel("f", [small, same, big]).complete(user("x"))
    assert response.model == "big"
    assert same.calls == []


async def test_context_length_rule_can_name_the_bigger_model() -> None:
    small = scripted("small", default=fails("context_length"))
    other = scripted("other")
    long = scripted("long", default="fits")
    model = FallbackModel("f", [small, other], rules={"context_length": (long,)})
    response = await model.complete(user("x"))
    assert response.model == "long" and other.calls == []


async def test_content_filter_is_propagated_with_its_reason() -> None:
    primary = scripted("a", default=fails("content_filter"))
    backup = scripted("b")
    with pytest.raises(ContentFilteredError) as caught:
        await FallbackModel("f", [primary, backup]).complete(user("x"))
    assert caught.value.model == "a" and backup.calls == []


async def test_content_filter_can_go_to_a_configured_alternative() -> None:
    primary = scripted("a", default=fails("content_filter"))
    backup = scripted("b")
    alternative = scripted("alt", default="answered elsewhere")
    model = FallbackModel("f", [primary, backup], rules={"content_filter": (alternative,)})
    assert (await model.complete(user("x"))).model == "alt"


async def test_the_primary_error_reaches_the_caller_not_a_later_one() -> None:
    primary = scripted("a", default=fails("overloaded"))
    backup = scripted("b", default=fails("authentication"))
    with pytest.raises(UnavailableError) as caught:
        await FallbackModel("f", [primary, backup]).complete(user("x"))
    assert caught.value.model == "a"
    decision = caught.value.decision
    assert decision is not None and [c.node for c in decision.children] == ["a", "b"]


async def test_the_error_names_the_fallback_and_the_member_it_came_from() -> None:
    primary = scripted("a", default=fails("overloaded"))
    backup = scripted("b", default=fails("authentication"))
    with pytest.raises(UnavailableError) as caught:
        await FallbackModel("f", [primary, backup]).complete(user("x"))
    assert caught.value.path == ("f", "a") and caught.value.where == "f > a"


async def test_all_rate_limited_gives_the_soonest_retry_after() -> None:
    members = [
        scripted("a", default=fails("rate_limited", retry_after=9.0)),
        scripted("b", default=fails("rate_limited", retry_after=2.0)),
        scripted("c", default=fails("rate_limited")),
    ]
    with pytest.raises(RateLimitedError) as caught:
        await FallbackModel("f", members).complete(user("x"))
    assert caught.value.retry_after == 2.0
    assert caught.value.model == "f"


def test_rules_pick_the_most_specific_kind_config_first() -> None:
    exc = ContextLengthError("too long")
    assert rule_for(exc, {}) == "larger_window"
    assert rule_for(exc, {"bad_request": "next"}) == "next"
    assert rule_for(UnavailableError("down"), {}) == "next"
    assert rule_for(ModelTimeoutError("slow"), {"timeout": "propagate"}) == "propagate"


async def test_failed_members_cost_is_included_but_not_reported_as_the_answer() -> None:
    costly = CostlyFailure("a", UnavailableError, cost=0.5)
    backup = scripted("b", default="answer")
    response = await FallbackModel("f", [costly, backup]).complete(user("x"))
    assert response.model == "b"
    assert response.cost == pytest.approx(0.5 + backup.info.price.cost(response.usage))
    assert response.usage.output_tokens > 0


async def test_no_member_is_tried_after_the_deadline() -> None:
    slow = scripted("slow", default=fails("unavailable", latency=0.05))
    backup = scripted("b")
    request = user("x", deadline=time.monotonic() + 0.03)
    with pytest.raises(ModelTimeoutError) as caught:
        await FallbackModel("f", [slow, backup], share=1.0).complete(request)
    assert backup.calls == []
    assert "deadline" in str(caught.value)


async def test_a_silent_primary_leaves_the_fallback_half_the_time() -> None:
    silent = scripted("silent", default=Reply(text="too late", latency=5.0))
    backup = scripted("b", default="in time")
    started = time.monotonic()
    response = await FallbackModel("f", [silent, backup]).complete(
        user("x", deadline=time.monotonic() + 0.2)
    )
    elapsed = time.monotonic() - started
    assert response.model == "b"
    assert response.decision is not None  # its own share passed, not the caller's deadline
    error = str(response.decision.children[0].error)
    found = re.search(r"its ([0-9.]+)s share of the request's time passed", error)
    assert found is not None, error
    # Half of what was left when the fallback began: 0.1 s, less what reaching it took.
    share = float(found.group(1))
    assert 0.05 <= share <= 0.1
    # Cut at its share (shown to the ms), and the backup answered in the rest of the 0.2 s.
    assert share - 0.001 <= elapsed < 0.19


async def test_a_stream_without_first_content_in_its_share_fails_over() -> None:
    silent = scripted("silent", default=Reply(text="too late", latency=5.0))
    backup = scripted("b", default="in time")
    request = user("x", deadline=time.monotonic() + 0.2)
    response = await collect(FallbackModel("f", [silent, backup]).stream(request))
    assert response.model == "b"
    assert response.decision is not None
    assert "share" in str(response.decision.children[0].error)


async def test_stream_failing_before_content_fails_over_transparently() -> None:
    primary = scripted("a", default=fails("unavailable"))
    backup = scripted("b", default="clean answer")
    chunks = [c async for c in FallbackModel("f", [primary, backup]).stream(user("x"))]
    assert "".join(c.text for c in chunks) == "clean answer"
    final = chunks[-1].response
    assert final is not None and final.model == "b"


async def test_stream_cut_after_content_ends_with_an_error_not_a_splice() -> None:
    primary = scripted("a", default=Reply(text="one two three", cut_after=1))
    backup = scripted("b", default="other answer", prefill=True)
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as caught:
        async for chunk in FallbackModel("f", [primary, backup]).stream(user("x")):
            received.append(chunk.text)
    assert "".join(received) == "one "
    assert backup.calls == []
    assert isinstance(caught.value.__cause__, UnavailableError)


async def test_a_stream_cut_after_content_names_where_it_broke() -> None:
    primary = scripted("a", default=Reply(text="one two three", cut_after=1))
    with pytest.raises(StreamInterruptedError) as caught:
        async for _ in FallbackModel("f", [primary, scripted("b")]).stream(user("x")):
            pass
    assert caught.value.path == ("f", "a")


async def test_stream_continues_on_a_prefill_model_when_allowed() -> None:
    primary = scripted("a", default=Reply(text="one two three", cut_after=2))
    no_prefill = scripted("b", default="unrelated")
    continuer = scripted("c", default="three", prefill=True)
    model = FallbackModel("f", [primary, no_prefill, continuer], continue_streams=True)
    response = await collect(model.stream(user("x")))
    assert response.text == "one two three"
    assert no_prefill.calls == []
    sent = continuer.calls[0].messages[-1]
    assert sent.role == "assistant" and sent.text == "one two "
    assert response.decision is not None
    assert response.decision.details["continued_from_chars"] == len("one two ")


async def test_a_stream_that_sent_reasoning_is_not_continued_by_a_prefill() -> None:
    # A prefill cannot carry the reasoning on, and Anthropic refuses one with thinking on.
    thought = (ThinkingPart(text="hmm", signature="s"),)
    primary = scripted("a", default=Reply(text="one two three", cut_after=2, thinking=thought))
    continuer = scripted("c", default="three", prefill=True)
    model = FallbackModel("f", [primary, continuer], continue_streams=True)
    with pytest.raises(StreamInterruptedError):
        await collect(model.stream(user("x")))
    assert continuer.calls == []
