"""The spend meter (`cost.metering`): each billed call is counted once as it finishes, a cost no
record shows is billed at the top and said so, and nothing is counted twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

import modelyard
from modelyard.cost import scope as request_scope
from modelyard.cost.accounting import Accounted
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.dispatch import charge, watching
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.cost.metering import ABANDONED, Metered
from modelyard.errors import ModelError
from modelyard.model import Model, ModelInfo
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision
from tests.cost.helpers import guard, priced, question
from tests.cost.test_dispatch import TOTAL, Rows


class Forgetful(Model):
    """Asks `first`, then answers with `second`, forgetting what `first` cost: a branch whose
    record is lost, as a cancelled one's is."""

    def __init__(self, first: Model, second: Model) -> None:
        self.first = first
        self.second = second
        self.info = ModelInfo(name="forgetful", kind="forgetful")

    @property
    def children(self) -> Sequence[Model]:
        return (self.first, self.second)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await self.first.complete(request)
        return await self.second.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        await self.first.complete(request)
        async for chunk in self.second.stream(request):
            yield chunk


async def alone(model: Model) -> float:
    """What one call of `model` costs."""
    return (await model.complete(question())).cost


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_spend_no_record_shows_is_billed_at_the_top_and_said_so(streamed: bool) -> None:
    first, second = priced("a", text="the first answer"), priced("b")
    lost, kept = await alone(first), await alone(second)
    book, ledger = BudgetBook(MemoryStore()), Rows()
    model = Accounted(guard(Forgetful(Metered(first), Metered(second)), book, TOTAL), ledger=ledger)
    if streamed:
        response = await collect(model.stream(question()))
    else:
        response = await model.complete(question())
    assert response.cost == pytest.approx(lost + kept)
    assert response.decision is not None
    assert response.decision.cost == pytest.approx(lost + kept)
    assert response.decision.details[ABANDONED] == pytest.approx(lost)
    status = await book.status(TOTAL, "all")
    assert status is not None and status.spent == pytest.approx(lost + kept)
    assert sum(row.cost for row in ledger.rows) == pytest.approx(lost + kept)


async def test_a_failure_is_billed_what_its_lost_branch_had_spent() -> None:
    first, second = priced("a", text="the first answer"), priced("b", error="unavailable")
    lost = await alone(first)
    book, ledger = BudgetBook(MemoryStore()), Rows()
    model = Accounted(guard(Forgetful(Metered(first), Metered(second)), book, TOTAL), ledger=ledger)
    with pytest.raises(ModelError) as caught:
        await model.complete(question())
    assert caught.value.cost == pytest.approx(lost)
    assert caught.value.decision is not None
    assert caught.value.decision.details[ABANDONED] == pytest.approx(lost)
    status = await book.status(TOTAL, "all")
    assert status is not None and status.spent == pytest.approx(lost)
    assert [(row.error, row.cost) for row in ledger.rows] == [("unavailable", pytest.approx(lost))]


def test_a_charge_counts_on_the_request_and_every_call_it_runs_under() -> None:
    scope = request_scope.RequestScope(entry="system")
    with request_scope.entered(scope), watching() as outer:
        with watching() as beside:
            pass
        with watching() as inner:
            charge(2.0)
        charge(1.0)
    charge(4.0)  # outside any request: counted nowhere
    assert (scope.spent, outer.spent, inner.spent, beside.spent) == (3.0, 3.0, 2.0, 0.0)


SYSTEMS = """
models:
  flaky:
    local: {type: fake, script: [{text: "lost", cut_after: 0}], default: "the answer"}
    price: {input: 1000000, output: 1000000}
    retry: {attempts: 1, initial_backoff: 0.01}
  m1: {local: {type: fake, default: "A"}, price: {input: 1000000, output: 1000000}}
  m2: {local: {type: fake, default: "B"}, price: {input: 1000000, output: 1000000}}
cache: {targets: [remembered]}
systems:
  voted: {type: ensemble, members: [m1, m2, flaky]}
  remembered: {type: fallback, chain: [m1]}
  relayed: {type: pipeline, stages: [{model: m1}, {model: m2, input: "Again: {previous}"}]}
"""
"""A model whose stream breaks before its first chunk (billed its input) and is retried, an
ensemble, a cached system asked twice, a pipeline: no call in them may be counted twice."""


def calls(decision: Decision) -> list[Decision]:
    return [d for d in decision.walk() if not d.children and d.kind != "stage"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_nothing_is_counted_twice(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    path = write_config(SYSTEMS)
    responses = []
    async with modelyard.load(path) as yard:
        for target in ("flaky", "voted", "remembered", "remembered", "relayed"):
            if streamed:
                responses.append(await collect(yard.get(target).stream(question())))
            else:
                responses.append(await yard.get(target).complete(question()))
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query("SELECT cost FROM spend")
    await ledger.aclose()
    for response in responses:
        assert response.decision is not None
        assert all(ABANDONED not in d.details for d in response.decision.walk())
        assert sum(d.cost for d in calls(response.decision)) == pytest.approx(response.cost)
    assert responses[3].cost == 0  # the cache's answer
    assert sum(row[0] for row in rows) == pytest.approx(sum(r.cost for r in responses))
