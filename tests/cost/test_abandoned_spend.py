"""Spend that a cancelled branch had already made is billed, whole and streamed: a fallback
giving up on a streaming member that showed nothing within its share of the time, and an
ensemble with `wait: quorum` cancelling a member that is itself a pattern. The response's cost,
its record, the ledger and the budgets all say what every call that finished was billed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.budgets import BudgetGuard
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.model import Model, Wrapper
from modelyard.streaming import collect
from modelyard.types import ChatResponse, user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, dollars

DRAFT = "a cheap draft answer, not sure at all"
VERDICT = "no"
BACKUP = "the backup model's answer"
VOTE = "A"

MODELS = f"""
models:
  small: {{local: {{type: fake, default: "{DRAFT}"}}, {PRICE}}}
  checker: {{local: {{type: fake, default: "{VERDICT}"}}, {PRICE}}}
  big: {{local: {{type: fake, default: {{text: "the careful answer", latency: 5}}}}, {PRICE}}}
  backup: {{local: {{type: fake, default: "{BACKUP}"}}, {PRICE}}}
  m1: {{local: {{type: fake, default: {{text: "{VOTE}", latency: 0.1}}}}, {PRICE}}}
  m2: {{local: {{type: fake, default: {{text: "{VOTE}", latency: 0.1}}}}, {PRICE}}}
budgets:
  - {{name: all, scope: total, limit: 1000000}}
systems:
  careful:
    type: cascade
    stages:
      - {{model: small, threshold: 0.9, estimator: {{type: verifier, model: checker}}}}
      - model: big
  drafting:
    type: pipeline
    stages:
      - {{name: draft, model: small}}
      - {{name: polish, model: big, input: "Polish: {{previous}}"}}
  top: {{type: fallback, chain: [careful, backup]}}
  panel:
    type: ensemble
    members: [m1, m2, careful]
    wait: quorum
    quorum: 2
  panel_of_pipelines:
    type: ensemble
    members: [m1, m2, drafting]
    wait: quorum
    quorum: 2
"""
"""Every call priced $1 an output token, input free: a call cut before it answered costs
nothing, so what a request spent is the answers of the calls that finished."""

DEADLINE = 1.0


async def ask(yard: Yard, system: str, streamed: bool) -> ChatResponse:
    request = user("which letter?", deadline=time.monotonic() + DEADLINE)
    if streamed:
        return await collect(yard.get(system).stream(request))
    return await yard.get(system).complete(request)


def guard_of(model: Model) -> BudgetGuard:
    while not isinstance(model, BudgetGuard):
        assert isinstance(model, Wrapper), f"no budget guard around {model.name}"
        model = model.inner
    return model


async def budget_spent(yard: Yard, system: str) -> float:
    guard = guard_of(yard.get(system))
    status = await guard.book.status(guard.per_request[0], "all")
    assert status is not None and status.reserved == 0
    return status.spent


async def ledger_costs(path: Path) -> list[float]:
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query("SELECT cost FROM spend ORDER BY id")
    await ledger.aclose()
    return [row[0] for row in rows]


async def spend_of(
    write_config: Callable[[str], Path], system: str, streamed: bool
) -> tuple[ChatResponse, float, float]:
    """The response of one request to `system`, what the total budget settled, and the sum of
    the request's ledger rows."""
    path = write_config(MODELS)
    async with modelyard.load(path) as yard:
        response = await ask(yard, system, streamed)
        settled = await budget_spent(yard, system)
    return response, settled, sum(await ledger_costs(path))


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_fallback_bills_what_a_member_it_gave_up_on_had_spent(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    response, settled, ledger = await spend_of(write_config, "top", streamed)
    # Whole, the cascade keeps its draft within its share (big is cut at it, free). Streamed,
    # it shows nothing within its share, so the fallback gives up on it and asks `backup`:
    # the draft and the verdict it had paid for are spent all the same.
    drafted = dollars(DRAFT) + dollars(VERDICT)
    spent = drafted + dollars(BACKUP) if streamed else drafted
    assert response.model == ("backup" if streamed else "small")
    assert response.cost == pytest.approx(spent)
    assert response.decision is not None and response.decision.cost == pytest.approx(spent)
    assert settled == pytest.approx(spent)
    assert ledger == pytest.approx(spent)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("system", "finished"),
    [("panel", DRAFT + VERDICT), ("panel_of_pipelines", DRAFT)],
    ids=["cascade", "pipeline"],
)
async def test_a_quorum_bills_what_a_pattern_member_it_cancelled_had_spent(
    write_config: Callable[[str], Path], system: str, finished: str, streamed: bool
) -> None:
    response, settled, ledger = await spend_of(write_config, system, streamed)
    # m1 and m2 agree at 0.1 s, which settles the vote; the third member (a cascade past its
    # verifier, a pipeline past its draft) is cancelled while `big` is still thinking.
    finished_cost = dollars(DRAFT) + (dollars(VERDICT) if finished != DRAFT else 0.0)
    spent = 2 * dollars(VOTE) + finished_cost
    assert response.text == VOTE
    assert response.cost == pytest.approx(spent)
    assert response.decision is not None and response.decision.cost == pytest.approx(spent)
    assert settled == pytest.approx(spent)
    assert ledger == pytest.approx(spent)
