"""Running a system over a labelled set: bounded concurrency, one result per item, in order.

The system receives `item.request()` only (the prompt); the label is read by the scorer after
the answer exists, so no decision can depend on it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass

from modelyard.errors import ModelError
from modelyard.evaluation.dataset import Item
from modelyard.evaluation.scorers import Score, Scorer
from modelyard.model import Model
from modelyard.providers.pinning import drift
from modelyard.types import ChatResponse, Decision

SCORED = "scored"
FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemResult:
    """What happened to one item: the answer, its score, cost, latency and decision record.

    `status` is `scored`, `unparsed` (the scorer could not read the answer), `unlabelled` (the
    scorer needed a label the item lacks) or `failed` (the system raised `error`).
    """

    id: str
    split: str | None
    label: str | None
    status: str
    score: float | None
    answer: str | None
    parsed: str | None
    cost: float
    scorer_cost: float
    latency_ms: float
    model: str | None
    provider_model: str | None
    drift: str | None
    error: str | None
    decision: Decision | None
    labelled: bool = True
    """Whether the scorer could use the item's label: a failed item without one is left out
    of accuracy, as an answered one is (its status stays `failed`)."""

    def to_dict(self, *, decisions: bool = False) -> dict[str, object]:
        """A JSON-ready dict; the decision tree only when asked (it is large)."""
        out: dict[str, object] = {
            "id": self.id,
            "split": self.split,
            "label": self.label,
            "status": self.status,
            "score": self.score,
            "answer": self.answer,
            "parsed": self.parsed,
            "cost": self.cost,
            "scorer_cost": self.scorer_cost,
            "latency_ms": round(self.latency_ms, 3),
            "model": self.model,
            "provider_model": self.provider_model,
            "drift": self.drift,
            "error": self.error,
            "route": route_summary(self.decision),
        }
        if decisions and self.decision is not None:
            out["decision"] = self.decision.to_dict()
        return out


def route_summary(decision: Decision | None) -> str | None:
    """`node->chosen` for each deciding node, in order: a one-line account of the route."""
    if decision is None:
        return None
    steps = [f"{d.node}->{d.chosen}" for d in decision.walk() if d.children and d.chosen]
    return " | ".join(steps) or decision.node


def _answered(
    item: Item, response: ChatResponse, score: Score, latency: float, pinned: Mapping[str, str]
) -> ItemResult:
    pin = pinned.get(response.model)
    return ItemResult(
        id=item.id,
        split=item.split,
        label=item.label,
        status=SCORED if score.value is not None else score.reason,
        score=score.value,
        answer=response.text,
        parsed=score.parsed,
        cost=response.cost,
        scorer_cost=score.cost,
        latency_ms=latency,
        model=response.model,
        provider_model=response.provider_model,
        drift=drift(pin, response.provider_model) if pin else None,
        error=None,
        decision=response.decision,
    )


def _failed(item: Item, exc: ModelError, latency: float, labelled: bool) -> ItemResult:
    return ItemResult(
        id=item.id,
        split=item.split,
        label=item.label,
        status=FAILED,
        score=None,
        answer=None,
        parsed=None,
        cost=exc.cost,
        scorer_cost=0.0,
        latency_ms=latency,
        model=None,
        provider_model=None,
        drift=None,
        error=f"{exc.kind}: {exc}",
        decision=exc.decision,
        labelled=labelled,
    )


AHEAD = 16
"""Items read per call in flight, at most, past the oldest unfinished one. Results come back in
item order, so finished ones wait behind a slow item, and the calls go on only while there is
room: 16 per call keeps them going through a straggler 16 times as slow as the rest, holding
128 items at the default concurrency of 8."""


async def _ask(
    system: Model,
    item: Item,
    scorer: Scorer,
    deadline: float | None,
    pinned: Mapping[str, str],
) -> ItemResult:
    started = time.perf_counter()
    try:
        response = await system.complete(item.request().with_budget(deadline))
    except ModelError as exc:
        latency = (time.perf_counter() - started) * 1000
        return _failed(item, exc, latency, scorer.labelled(item))
    latency = (time.perf_counter() - started) * 1000
    score = await scorer.score(item, response)
    return _answered(item, response, score, latency, pinned)


async def run_items(
    system: Model,
    items: Iterable[Item],
    scorer: Scorer,
    *,
    concurrency: int = 8,
    deadline: float | None = None,
    pinned: Mapping[str, str] | None = None,
) -> AsyncGenerator[ItemResult, None]:
    """Ask `system` every item (at most `concurrency` at once), score each answer and yield
    the results in item order.

    Items are read as calls finish, never more than `AHEAD` × `concurrency` past the oldest
    unfinished one, so a set of any length is never held whole (nor its results: each is the
    caller's to keep or drop). An error reading `items` stops the run there. `deadline` is
    seconds per item; `pinned` maps model names to their pinned ids, to flag drift in what the
    provider reports.
    """
    slots = asyncio.Semaphore(max(1, concurrency))
    pins = pinned or {}
    source = iter(items)
    pending: deque[asyncio.Task[ItemResult]] = deque()

    async def one(item: Item) -> ItemResult:
        async with slots:
            return await _ask(system, item, scorer, deadline, pins)

    try:
        while True:
            for item in itertools.islice(source, AHEAD * max(1, concurrency) - len(pending)):
                pending.append(asyncio.ensure_future(one(item)))
            if not pending:
                return
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
