"""What an ensemble's cancelled stragglers cost, with the straggler on a real socket (the fake
OpenAI server): its input if its request reached the provider, nothing if it was still waiting
to be sent (here for the one concurrency slot its model allows) — in the response, the ledger's
rows and the budgets alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelyard.cost.accounting import spend_rows
from modelyard.cost.bounds import partial_cost
from modelyard.cost.budget_counters import BudgetStatus
from modelyard.cost.budgets import BudgetGuard
from modelyard.types import user
from modelyard.yard import Yard
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.patterns.conftest import PRICE

KEY = "sk-stragglers-TEST-0123456789"
DEAR = "price: {input: 1000000, output: 1000000}"
"""$1 a token, in or out: a straggler billed its input shows at once."""


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY).running() as server:
        assert isinstance(server, FakeOpenAI)
        yield server


def config(upstream: FakeOpenAI) -> str:
    return f"""
providers:
  up:
    type: openai
    base_url: {upstream.url}/v1
    api_key: {KEY}
    retry: {{attempts: 0}}
    breaker: {{enabled: false}}
models:
  a:
    local: {{type: fake, default: "B"}}
    {PRICE}
  b:
    local: {{type: fake, default: "The answer is B"}}
    {PRICE}
  busy:
    provider: up
    id: gpt-4o-mini
    {DEAR}
    limits: {{max_concurrency: 1, learn: false}}
systems:
  vote: {{type: ensemble, members: [a, b, busy], normalise: choice, quorum: 2, wait: quorum}}
state: {{backend: memory}}
budgets:
  - {{name: per-model, scope: model, selector: busy, limit: 100000}}
  - {{name: everything, scope: total, limit: 100000}}
"""


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (bounded: the test fails rather than hang)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


async def settled(yard: Yard) -> tuple[BudgetStatus, BudgetStatus]:
    """busy's model budget and the total budget once no call holds a reservation on them (a
    cancelled call settles as it unwinds, after its caller has moved on)."""
    guard = yard.get("busy").inner  # type: ignore[attr-defined]  # under Accounted
    assert isinstance(guard, BudgetGuard)
    for _ in range(1000):
        model = await guard.book.status(guard.own[0], "busy")
        total = await guard.book.status(guard.per_request[0], "all")
        assert model is not None and total is not None
        if model.reserved < 1e-9 and total.reserved < 1e-9:
            return model, total
        await asyncio.sleep(0.005)
    raise AssertionError("a reservation was never settled")


async def test_a_straggler_cancelled_while_waiting_for_its_slot_costs_nothing(
    yard_of: Callable[[str], Yard], upstream: FakeOpenAI
) -> None:
    async with yard_of(config(upstream)) as yard:
        # Another call holds busy's only concurrency slot, its request hanging at the provider.
        upstream.push(Fault(hang=True))
        hog = asyncio.create_task(yard.complete("busy", "hold the slot"))
        await until(lambda: len(upstream.requests) == 1)
        response = await yard.complete("vote", "which one?")
        hog.cancel()
        await asyncio.gather(hog, return_exceptions=True)
        model_budget, total_budget = await settled(yard)
        hog_cost = partial_cost(yard.get("busy"), user("hold the slot"))
    assert len(upstream.requests) == 1  # the straggler's request never reached the provider
    assert response.decision is not None
    straggler = response.decision.children[2]
    assert straggler.reason == "cancelled: the outcome was already decided"
    assert straggler.cost == 0.0
    assert response.cost == 1.0 + 4.0  # a's and b's answers only
    rows = spend_rows("vote", user("which one?"), response, None)
    assert {r.model: r.cost for r in rows} == {"a": 1.0, "b": 4.0, "busy": 0.0}
    # busy's budget was charged the hog's input alone, and no hold of either call is left.
    assert model_budget.spent == pytest.approx(hog_cost)
    assert total_budget.spent == pytest.approx(hog_cost + response.cost)


async def test_a_straggler_whose_request_was_sent_costs_its_input(
    yard_of: Callable[[str], Yard], upstream: FakeOpenAI
) -> None:
    # Three members on the provider: the first two to arrive answer once all three requests
    # are there, the third never answers and is cancelled. Its request was sent: the provider
    # bills the input, so the response and the budgets count it.
    text = config(upstream).replace(
        "systems:\n",
        "  x: {provider: up, id: gpt-4o-mini, " + DEAR + "}\n"
        "  y: {provider: up, id: gpt-4o-mini, " + DEAR + "}\n"
        "systems:\n  trio: {type: ensemble, members: [x, y, busy], quorum: 2, wait: quorum}\n",
    )
    upstream.push(Fault(after_requests=3), Fault(after_requests=3), Fault(hang=True))
    async with yard_of(text) as yard:
        response = await yard.complete("trio", "which one?")
        _, total_budget = await settled(yard)
        expected = partial_cost(yard.get("busy"), user("which one?"))
    assert len(upstream.requests) == 3 and expected > 0
    assert response.decision is not None
    cancelled = [c for c in response.decision.children if c.reason.startswith("cancelled")]
    assert [c.cost for c in cancelled] == [pytest.approx(expected)]
    answered = sum(c.cost for c in response.decision.children if c not in cancelled)
    assert answered > 0
    assert response.cost == pytest.approx(answered + expected)
    assert total_budget.spent == pytest.approx(response.cost)


async def test_a_straggler_cut_at_its_member_deadline_costs_its_input(
    yard_of: Callable[[str], Yard],
    upstream: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A priced local function that ignores the deadline is cut by the member deadline after it
    # started: its input counts in the response, as its budget guard settles it (the response
    # had counted it at 0).
    (tmp_path / "stalls_for_tests.py").write_text(
        "import asyncio\nasync def stall(request):\n    await asyncio.sleep(5)\n    return 'B'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = config(upstream).replace(
        "systems:\n",
        "  stall:\n    local: {type: callable, function: 'stalls_for_tests:stall'}\n"
        f"    {DEAR}\n"
        "systems:\n  cut: {type: ensemble, members: [a, b, stall], normalise: choice,"
        " deadlines: {stall: 0.1}}\n",
    )
    async with yard_of(text) as yard:
        response = await yard.complete("cut", "which one?")
        expected = partial_cost(yard.get("stall"), user("which one?"))
    assert expected > 0
    assert response.decision is not None
    straggler = response.decision.children[2]
    assert "member deadline" in (straggler.error or "")
    assert straggler.cost == pytest.approx(expected)
    assert response.cost == pytest.approx(1.0 + 4.0 + expected)
