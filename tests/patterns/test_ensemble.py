"""Ensemble configs: votes, judge, fuser, quorum, deadlines, cancellation and the record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from modelyard.cost.accounting import spend_rows
from modelyard.cost.budgets import BudgetGuard
from modelyard.errors import ConfigError, NoAnswerError, StreamInterruptedError
from modelyard.streaming import collect
from modelyard.types import user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, dollars, with_hosted

MODELS = f"""
models:
  a:
    local: {{type: fake, default: {{text: "B", confidence: 0.3}}}}
    {PRICE}
  b:
    local: {{type: fake, default: {{text: "The answer is B", confidence: 0.4}}}}
    {PRICE}
  c:
    local: {{type: fake, default: {{text: "C", confidence: 0.9}}}}
    {PRICE}
  down:
    local: {{type: fake, default: {{error: unavailable}}}}
  limited:
    local: {{type: fake, default: {{error: rate_limited}}}}
  slow:
    local: {{type: fake, default: {{text: "D", latency: 2.0}}}}
  judge:
    local: {{type: fake, default: "Answer 2 is best"}}
    {PRICE}
  mumbler:
    local: {{type: fake, default: "hmm"}}
  fuser:
    local: {{type: fake, default: "B, because of friction"}}
    {PRICE}
"""


def ensemble(settings: str) -> str:
    return (
        MODELS
        + f"""
systems:
  vote:
    type: ensemble
    {settings}
"""
    )


async def test_a_tied_vote_says_it_was_a_tie_and_how_it_was_broken(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(ensemble("members: [c, a]\n    normalise: choice")) as yard:
        response = await yard.complete("vote", "which one?")
    # answers C and B, one vote each: the earliest member's answer wins, and the record says so
    assert (response.text, response.model) == ("C", "c")
    assert response.decision is not None
    assert response.decision.reason == (
        "'C' won with votes 1 of 2 members; tied with 'B', the earliest member's answer wins"
    )


async def test_an_ensemble_whose_disabled_members_leave_less_than_its_quorum_is_noted(
    yard_of: Callable[[str], Yard], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` said ok and noted only the provider; every request then failed."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with yard_of(with_hosted(ensemble("members: [hosted, a]\n    quorum: 2"))) as yard:
        notes = [n for n in yard.notes if n.startswith("ensemble vote")]
    assert notes == [
        "ensemble vote: 1 of its 2 members disabled (hosted: provider 'openai': environment "
        "variable OPENAI_API_KEY is not set) leave fewer than its quorum of 2; it cannot answer"
    ]


async def test_majority_vote_over_choice_letters(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(ensemble("members: [a, b, c]\n    normalise: choice")) as yard:
        response = await yard.complete("vote", "which one?")
    # answers B, B, C: B wins 2 of 3; the first member giving B answers
    assert (response.text, response.model) == ("B", "a")
    assert response.cost == 1.0 + 4.0 + 1.0
    assert response.confidence == pytest.approx(2 / 3)
    decision = response.decision
    assert decision is not None
    assert (decision.kind, decision.chosen) == ("ensemble", "a")
    assert decision.reason == "'B' won with votes 2 of 3 members"
    assert dict(decision.scores) == {"B": 2.0, "C": 1.0}
    assert [c.node for c in decision.children] == ["a", "b", "c"]
    members = decision.details["members"]
    assert [(m["member"], m["answer"], m["confidence"], m["cost"]) for m in members] == [
        ("a", "B", 0.3, 1.0),
        ("b", "B", 0.4, 4.0),
        ("c", "C", 0.9, 1.0),
    ]


async def test_confidence_weighted_vote(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble("members: [a, b, c]\n    normalise: choice\n    combine: weighted_vote")
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    # B: 0.3 + 0.4 = 0.7; C: 0.9
    assert response.model == "c"
    assert response.decision is not None
    assert dict(response.decision.scores) == pytest.approx({"B": 0.7, "C": 0.9})
    assert response.confidence == pytest.approx(1 / 3)


async def test_judge_picks_a_member_and_is_paid_for(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble(
        "members: [a, b, c]\n    normalise: choice\n    combine: judge\n    judge: judge"
    )
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert (response.text, response.model) == ("The answer is B", "b")
    # members 1 + 4 + 1, judge "Answer 2 is best" = 4 tokens
    assert response.cost == 6.0 + 4.0
    assert response.decision is not None
    assert response.decision.reason == "judge picked answer 2"
    assert [c.node for c in response.decision.children] == ["a", "b", "c", "judge"]


async def test_an_unreadable_judge_falls_back_to_the_vote(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble(
        "members: [a, b, c]\n    normalise: choice\n    combine: judge\n    judge: mumbler"
    )
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert response.model == "a"
    assert response.decision is not None
    assert response.decision.reason == (
        "judge said 'hmm', no pick; vote instead: 'B' won with votes 2 of 3 members"
    )


async def test_fuser_merges_and_answers(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble(
        "members: [a, b, c]\n    normalise: choice\n    combine: fuse\n    fuser: fuser"
    )
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert (response.text, response.model) == ("B, because of friction", "fuser")
    assert response.cost == 6.0 + 6.0  # "B, because of friction" = 22 chars = 6 tokens
    assert response.confidence == pytest.approx(2 / 3)
    assert response.decision is not None and response.decision.chosen == "fuser"


async def test_fuser_streams_live(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble("members: [a, b]\n    combine: fuse\n    fuser: fuser")
    async with yard_of(text) as yard:
        chunks = [c async for c in yard.get("vote").stream(user("which one?"))]
    assert len([c for c in chunks if c.text]) == 4
    assert chunks[-1].response is not None and chunks[-1].response.model == "fuser"


async def test_a_fused_stream_cut_midway_ends_with_an_error_not_the_votes_answer(
    yard_of: Callable[[str], Yard],
) -> None:
    # The fuser's stream breaks after "B, because ": falling back to the vote then sent "B"
    # after it, a spliced "B, because B" finished as if whole.
    cutter = '  cutter:\n    local: {type: fake, default: {text: "B, because of friction", '
    cutter += f"cut_after: 2}}}}\n    {PRICE}\n"
    text = ensemble("members: [a, b]\n    combine: fuse\n    fuser: cutter").replace(
        "systems:", cutter + "systems:"
    )
    texts: list[str] = []
    async with yard_of(text) as yard:
        with pytest.raises(StreamInterruptedError) as caught:
            async for chunk in yard.get("vote").stream(user("which one?")):
                texts.append(chunk.text)
    assert "".join(texts) == "B, because "
    # Both members, and what the cut fuser had sent, as a provider bills a broken stream.
    assert caught.value.cost == 1.0 + 4.0 + dollars("B, because ")
    decision = caught.value.decision
    assert decision is not None and decision.chosen is None
    assert decision.reason == "fuser's stream broke after 11 characters were sent; not spliced"
    assert [d.node for d in decision.children] == ["a", "b", "cutter"]


async def test_failed_members_are_recorded_and_quorum_still_met(
    yard_of: Callable[[str], Yard],
) -> None:
    text = ensemble("members: [down, a, b]\n    normalise: choice\n    quorum: 2")
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert response.model == "a"
    assert response.confidence == pytest.approx(2 / 3)
    assert response.decision is not None
    assert response.decision.children[0].error is not None


async def test_the_reason_counts_a_failed_member_as_the_confidence_does(
    yard_of: Callable[[str], Yard],
) -> None:
    text = ensemble("members: [down, a, b]\n    normalise: choice\n    quorum: 2")
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert response.confidence == pytest.approx(2 / 3)
    assert response.decision is not None
    assert response.decision.reason == "'B' won with votes 2 of 3 members; 1 failed"


async def test_quorum_not_met_lists_each_failure(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble("members: [down, limited, a]\n    quorum: 2")
    async with yard_of(text) as yard:
        with pytest.raises(NoAnswerError) as caught:
            await yard.complete("vote", "which one?")
    error = caught.value
    assert str(error).startswith("vote: 1 of 3 members gave a usable answer, quorum is 2")
    assert "down: unavailable" in str(error) and "limited: rate_limited" in str(error)
    assert error.cost == 1.0
    assert error.decision is not None and len(error.decision.children) == 3


async def test_a_member_past_its_deadline_counts_as_failed(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble("members: [a, slow]\n    deadlines: {slow: 0.05}")
    started = time.monotonic()
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert time.monotonic() - started < 1.0
    assert response.model == "a"
    assert response.decision is not None
    assert "timeout" in (response.decision.children[1].error or "")


async def test_a_member_cut_off_at_its_deadline_is_recorded_with_the_time_it_took(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(ensemble("members: [a, slow]\n    deadlines: {slow: 0.1}")) as yard:
        response = await yard.complete("vote", "which one?")
    assert response.decision is not None
    cut = response.decision.children[1]
    assert cut.node == "slow"
    # Its deadline (100 ms), not its 2 s; a loaded machine is late, never early.
    assert 60 <= cut.latency_ms < 1000


async def test_wait_quorum_cancels_stragglers_once_decided(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble("members: [a, b, slow]\n    normalise: choice\n    quorum: 2\n    wait: quorum")
    started = time.monotonic()
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert time.monotonic() - started < 1.0
    assert response.model == "a"
    assert response.confidence == 1.0  # the cancelled member does not count
    assert response.decision is not None
    assert response.decision.children[2].reason == "cancelled: the outcome was already decided"
    assert response.decision.details["members"][2]["cancelled"] is True


async def test_a_cancelled_straggler_costs_what_its_budget_is_charged(
    yard_of: Callable[[str], Yard],
) -> None:
    # The straggler's request was sent, so its budget guard settles its input when it is
    # cancelled; the response (and so the total budget and the ledger) had counted it at 0.
    dear = "price: {input: 1000000, output: 1000000}"  # $1 a token either way
    text = ensemble("members: [a, b, slow]\n    normalise: choice\n    quorum: 2\n    wait: quorum")
    text = text.replace("  slow:\n", f"  slow:\n    {dear}\n", 1)
    text += "state: {backend: memory}\n"
    text += "budgets: [{name: s, scope: model, selector: slow, limit: 100000}]\n"
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
        guard = yard.get("slow").inner  # type: ignore[attr-defined]  # under Accounted
        assert isinstance(guard, BudgetGuard)
        await asyncio.sleep(0.05)  # the cancelled call settles its budget as it unwinds
        status = await guard.book.status(guard.own[0], "slow")
    assert status is not None and status.spent > 0
    assert response.decision is not None
    assert response.decision.children[2].cost == status.spent
    assert response.cost == 1.0 + 4.0 + status.spent
    rows = spend_rows("vote", user("which one?"), response, None)
    assert {r.model: r.cost for r in rows} == {"a": 1.0, "b": 4.0, "slow": status.spent}


async def test_in_turn_does_not_ask_members_once_the_vote_is_settled(
    yard_of: Callable[[str], Yard],
) -> None:
    text = ensemble("members: [a, b, c]\n    normalise: choice\n    wait: in_turn")
    text += "  pair: {type: ensemble, members: [a, b], normalise: choice}\n"
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
        pair = await yard.complete("pair", "which one?")
    assert (response.text, response.model) == ("B", "a")
    assert response.cost == pair.cost  # c was not asked: it cost nothing
    assert response.confidence == 1.0  # and does not count
    assert response.decision is not None
    assert response.decision.children[2].reason == "not asked: the outcome was already decided"
    assert response.decision.details["members"][2]["not_asked"] is True
    # The ledger counts calls: c was not one.
    rows = spend_rows("vote", user("which one?"), response, None)
    assert sorted(r.model for r in rows) == ["a", "b"]


async def test_in_turn_takes_only_the_asked_members_time(yard_of: Callable[[str], Yard]) -> None:
    text = ensemble("members: [a, b, slow]\n    normalise: choice\n    wait: in_turn")
    started = time.monotonic()
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    assert time.monotonic() - started < 1.0  # the 2-second member was never asked
    assert response.text == "B"


async def test_in_turn_asks_the_next_member_while_the_vote_is_open(
    yard_of: Callable[[str], Yard],
) -> None:
    text = ensemble("members: [a, c, b]\n    normalise: choice\n    wait: in_turn")
    async with yard_of(text) as yard:
        response = await yard.complete("vote", "which one?")
    # B, C: either could still win, so b is asked and breaks the tie
    assert (response.text, response.model) == ("B", "a")
    assert response.confidence == pytest.approx(2 / 3)
    assert response.decision is not None
    assert not any("not asked" in child.reason for child in response.decision.children)
    assert [m["answer"] for m in response.decision.details["members"]] == ["B", "C", "B"]


def test_quorum_larger_than_the_ensemble_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    error = config_error(ensemble("members: [a, b]\n    quorum: 3"))
    assert "quorum 3 is larger than the ensemble's 2 members" in str(error)
    assert "systems.vote" in str(error)


def test_a_deadline_for_no_member_is_refused(config_error: Callable[[str], ConfigError]) -> None:
    error = config_error(ensemble("members: [a, b]\n    deadlines: {z: 1}"))
    assert "no member called 'z'" in str(error)


async def test_stream_replays_the_voted_answer(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(ensemble("members: [a, b, c]\n    normalise: choice")) as yard:
        response = await collect(yard.get("vote").stream(user("which one?")))
    assert (response.text, response.model, response.cost) == ("B", "a", 6.0)
