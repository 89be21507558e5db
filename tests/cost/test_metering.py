"""The spend meter (`cost.metering`): each billed call is counted once as it finishes, and
nothing is counted twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost import scope as request_scope
from modelyard.cost.dispatch import charge, watching
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.streaming import collect
from modelyard.types import Decision
from tests.cost.helpers import question


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
        assert sum(d.cost for d in calls(response.decision)) == pytest.approx(response.cost)
    assert responses[3].cost == 0  # the cache's answer
    assert sum(row[0] for row in rows) == pytest.approx(sum(r.cost for r in responses))
