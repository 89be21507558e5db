"""What an abandoned branch had spent shows per model in its record and the ledger, not under
the abandoned node's name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.ledger import SqliteLedgerFile
from tests.cost.test_abandoned_spend import MODELS, ask


async def ledger_rows(path: Path) -> list[tuple[str, float]]:
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query("SELECT model, cost FROM spend ORDER BY id")
    await ledger.aclose()
    return [(str(row[0]), float(row[1])) for row in rows]


def by_model(rows: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for model, cost in rows:
        if cost:
            out[model] = out.get(model, 0.0) + cost
    return out


@pytest.mark.parametrize(
    ("system", "streamed", "models"),
    [
        ("panel", False, {"m1", "m2", "small", "checker"}),
        ("panel", True, {"m1", "m2", "small", "checker"}),
        ("panel_of_pipelines", False, {"m1", "m2", "small"}),
        ("top", True, {"small", "checker", "backup"}),
    ],
    ids=["quorum-cascade", "quorum-cascade-streamed", "quorum-pipeline", "fallback-share"],
)
async def test_what_an_abandoned_pattern_had_spent_is_billed_to_its_models(
    write_config: Callable[[str], Path], system: str, streamed: bool, models: set[str]
) -> None:
    # The cascade (pipeline) given up on had paid for `small` and `checker`: the ledger billed
    # that to `careful` (`drafting`), a system, under the model column.
    path = write_config(MODELS)
    async with modelyard.load(path) as yard:
        response = await ask(yard, system, streamed)
    billed = by_model(await ledger_rows(path))
    assert set(billed) == models
    assert sum(billed.values()) == pytest.approx(response.cost)
    assert response.decision is not None
    calls = [d for d in response.decision.walk() if not d.children]
    assert {d.node for d in calls if d.cost} == models
