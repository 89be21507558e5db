"""The library entry points: evaluate a system of a loaded yard, and find the models it uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelyard.evaluation.dataset import Item
from modelyard.evaluation.report import EvalReport, summarize
from modelyard.evaluation.runner import ItemResult, run_items
from modelyard.evaluation.scorers import Scorer
from modelyard.model import Model
from modelyard.yard import Yard


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Per-item results and their summary."""

    results: list[ItemResult]
    report: EvalReport


def pinned_ids(yard: Yard) -> dict[str, str]:
    """Configured model name -> the id it is pinned to (hosted models only)."""
    return {
        name: model.info.model_id
        for name, model in yard.models.items()
        if model.info.provider and model.info.model_id
    }


async def evaluate(
    yard: Yard,
    target: str,
    items: Sequence[Item],
    scorer: Scorer,
    *,
    concurrency: int = 8,
    on_result: Callable[[ItemResult], None] | None = None,
) -> Evaluation:
    """Run system or model `target` over `items` and summarise."""
    results = await run_items(
        yard.get(target),
        items,
        scorer,
        concurrency=concurrency,
        deadline=yard.loaded.config.default_deadline,
        pinned=pinned_ids(yard),
        on_result=on_result,
    )
    return Evaluation(results, summarize(target, results))


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
