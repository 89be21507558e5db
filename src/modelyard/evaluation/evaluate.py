"""The library entry points: evaluate a system of a loaded yard, and find the models it uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from modelyard.config.replay import ReplaySpec
from modelyard.evaluation.dataset import Item
from modelyard.evaluation.report import EvalReport, Tally
from modelyard.evaluation.runner import ItemResult, run_items
from modelyard.evaluation.scorers import Scorer
from modelyard.model import Model
from modelyard.yard import Yard


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What an evaluation kept of each item, and its summary."""

    tally: Tally
    report: EvalReport


def pinned_ids(yard: Yard) -> dict[str, str]:
    """Configured model name -> the id it is pinned to: a hosted model's id, and the recorded
    model a replayed one answers as (a recording whose provider reported another id, as a
    JSONL row's `provider_model` can say, measured another model than the config names)."""
    pins = {
        name: model.info.model_id
        for name, model in yard.models.items()
        if model.info.provider and model.info.model_id
    }
    for name, spec in yard.loaded.config.models.items():
        if isinstance(spec.local, ReplaySpec) and name in yard.models:
            pins.setdefault(name, spec.local.model)
    return pins


async def evaluate(
    yard: Yard,
    target: str,
    items: Iterable[Item],
    scorer: Scorer,
    *,
    concurrency: int = 8,
    on_result: Callable[[ItemResult], None] | None = None,
) -> Evaluation:
    """Run system or model `target` over `items` and summarise. Items are read as the run
    goes and each result is kept only as its tally (`on_result` sees the whole result, in
    item order, to write it out)."""
    tally = Tally()
    results = run_items(
        yard.get(target),
        items,
        scorer,
        concurrency=concurrency,
        deadline=yard.loaded.config.default_deadline,
        pinned=pinned_ids(yard),
    )
    async with aclosing(results):
        async for result in results:
            tally.add(result)
            if on_result is not None:
                on_result(result)
    return Evaluation(tally, tally.report(target))


def leaf_models(yard: Yard, target: str) -> list[str]:
    """The configured models that answer for `target` (`Model.contenders`: not a classifier,
    verifier, gate checker or judge), in the order first met (a model is a leaf even when
    wrappers sit around it)."""
    by_identity = {id(model): name for name, model in yard.models.items()}
    found: list[str] = []
    seen: set[int] = set()

    def walk(model: Model) -> None:
        if id(model) in seen:
            return
        seen.add(id(model))
        name = by_identity.get(id(model))
        if name is not None:
            if name not in found:
                found.append(name)
            return
        for child in model.contenders:
            walk(child)

    walk(yard.get(target))
    return found
