"""What an abandoned branch had spent, where it shows: per model in the ledger (not under the
abandoned node's name), in the span of the system the request was sent to, and, for a stream
cut by a node's deadline, as the estimate of what its provider bills."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.errors import ModelTimeoutError
from modelyard.model import Wrapper
from modelyard.types import user
from tests.cost.test_abandoned_spend import MODELS, ask
from tests.cost.test_metering import Forgetful
from tests.fakes.otlp_collector import OtlpCollector, named


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


def _innermost_wrapper(model: object) -> Wrapper:
    assert isinstance(model, Wrapper)
    while isinstance(model.inner, Wrapper):
        model = model.inner
    return model


async def test_the_span_of_a_system_shows_what_the_request_was_billed(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    # The system's span was ended inside the wrapper that bills the meter's total: it showed
    # what the answer's record reports, without the spend of a branch whose record was lost.
    text = MODELS + f"tracing:\n  endpoint: {collector.url}\n"
    async with modelyard.load(write_config(text)) as yard:
        first, second = yard.get("small"), yard.get("backup")
        lost = (await first.complete(user("q"))).cost
        kept = (await second.complete(user("q"))).cost
        collector.spans.clear()
        _innermost_wrapper(yard.get("top")).inner = Forgetful(first, second)
        response = await yard.complete("top", "which letter?")
    assert response.cost == pytest.approx(lost + kept)
    span = named(collector.wait_for(3), "system top")
    assert span.attributes["modelyard.cost_usd"] == pytest.approx(lost + kept)


TALKER = """
models:
  talker:
    local: {type: fake, default: "one two three four five six"}
    price: {input: 1000000, output: 1000000}
systems:
  hurried: {type: fallback, chain: [talker], deadline: 0.2}
"""


async def test_a_stream_cut_by_a_node_deadline_costs_its_input_and_what_it_wrote(
    write_config: Callable[[str], Path],
) -> None:
    # The caller took its time between chunks and the node's deadline passed: the cut stream
    # had been sent and had written, and it cost $0 with no tokens.
    path = write_config(TALKER)
    async with modelyard.load(path) as yard:
        with pytest.raises(ModelTimeoutError) as caught:
            async for _ in yard.get("hurried").stream(user("say six words")):
                await asyncio.sleep(0.3)
    error = caught.value
    assert "node hurried's deadline (0.2s) passed while streaming" in str(error)
    assert error.usage is not None and error.usage.estimated
    assert error.usage.input_tokens > 0 and error.usage.output_tokens > 0
    tokens = error.usage.input_tokens + error.usage.output_tokens
    assert error.cost == pytest.approx(tokens)
    assert error.decision is not None and error.decision.cost == pytest.approx(error.cost)
    assert by_model(await ledger_rows(path)) == {"talker": pytest.approx(error.cost)}
