"""Pattern overhead and routing cost, with instant models (everything measured is modelyard).

    .venv/bin/python bench/patterns_overhead.py            # about 20 s
    .venv/bin/python bench/patterns_overhead.py --quick    # about 5 s

1. Overhead per request of each pattern (the balance under each strategy) and of a three-node
   graph (a rules router whose route is a cascade whose first stage answers), with a leaf Model
   that returns a prebuilt response.
   The leaf's own time is measured alone and subtracted. Target: <= 50 µs for the graph.
2. Routing-decision cost for 10, 100 and 1,000 candidates: rules (keyword-indexed, and
   regex-only for contrast), semantic (3 examples per route) and learned (logistic on 384
   dimensions). The embedder returns a fixed vector, so only the routing math is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np

from modelyard.cost.prices import Price
from modelyard.model import Embedder, Model, ModelInfo
from modelyard.patterns.balance import BalanceModel
from modelyard.patterns.balancing import STRATEGIES
from modelyard.patterns.cascade import CascadeModel, Stage
from modelyard.patterns.ensemble import EnsembleModel
from modelyard.patterns.estimators import OwnConfidenceEstimator
from modelyard.patterns.learned import Logistic
from modelyard.patterns.normalise import exact
from modelyard.patterns.pipeline import PipelineModel, PipelineStage
from modelyard.patterns.router import RouterModel
from modelyard.patterns.routing import (
    CandidateCosts,
    LearnedPolicy,
    SemanticPolicy,
    TrainedPredictor,
)
from modelyard.patterns.rules import Rule, RuleSet
from modelyard.patterns.semantic import Match, SemanticIndex
from modelyard.patterns.specialist import SpecialistModel
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    user,
)


class InstantModel(Model):
    """Returns one prebuilt response: as close to zero model time as a Model can be."""

    def __init__(self, name: str, text: str = "ok", confidence: float | None = 0.9) -> None:
        self.info = ModelInfo(name=name, kind="instant")
        self.response = ChatResponse(
            id="x",
            model=name,
            provider_model=name,
            choices=(Choice(message=Message(role="assistant", content=text)),),
            cost=0.001,
            decision=Decision(node=name, kind="model", chosen=name, reason="answered", cost=0.001),
            confidence=confidence,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return self.response


class FixedEmbedder(Embedder):
    """Returns the same vector for every text."""

    def __init__(self, vector: np.ndarray) -> None:
        self.info = ModelInfo(name="fixed", kind="fixed")
        self.response = EmbeddingResponse(
            model="fixed", provider_model="fixed", vectors=(tuple(vector.tolist()),)
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return self.response


async def per_call_us(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    """Median over 5 rounds of the mean µs per call."""
    for _ in range(200):
        await call()
    rounds = []
    for _ in range(5):
        count = 0
        started = time.perf_counter()
        deadline = started + seconds / 5
        while time.perf_counter() < deadline:
            for _ in range(100):
                await call()
            count += 100
        rounds.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(rounds)


def graphs() -> dict[str, tuple[Model, int]]:
    """Each pattern (and the three-node graph) with how many leaf calls a request makes."""
    leaf = InstantModel("leaf")
    other = InstantModel("other")
    cascade = CascadeModel(
        "cascade",
        [
            Stage(name="leaf", model=leaf, threshold=0.5, estimator=OwnConfidenceEstimator()),
            Stage(name="other", model=other),
        ],
    )
    router = RouterModel(
        "router",
        {"chat": leaf, "code": other},
        "chat",
        rules=RuleSet([Rule(route="code", keywords=("python",))]),
    )
    graph = RouterModel(
        "graph",
        {"hard": cascade, "code": other},
        "hard",
        rules=RuleSet([Rule(route="code", keywords=("python",))]),
    )
    pipeline = PipelineModel("pipeline", [PipelineStage(name="only", model=leaf)])
    specialist = SpecialistModel("specialist", InstantModel("clf", "math"), {"math": leaf}, other)
    ensemble = EnsembleModel("ensemble", [leaf, other, InstantModel("third")], normalise=exact)
    deployments = [InstantModel(f"deployment-{i}") for i in range(3)]
    balances: dict[str, tuple[Model, int]] = {
        f"balance (3 members, {strategy})": (
            BalanceModel(f"balance-{strategy}", deployments, strategy=strategy, seed=0),
            1,
        )
        for strategy in STRATEGIES
    }
    return {
        "leaf alone": (leaf, 1),
        "router (rules)": (router, 1),
        "cascade (accepts stage 1)": (cascade, 1),
        "pipeline (1 stage)": (pipeline, 1),
        "specialist": (specialist, 2),
        "ensemble (3 members, vote)": (ensemble, 3),
        **balances,
        "three-node graph: router -> cascade -> model": (graph, 1),
    }


async def overhead(seconds: float) -> None:
    request = user("What is the capital of France?")
    measured: dict[str, tuple[float, int]] = {}
    for name, (model, leaves) in graphs().items():
        measured[name] = (await per_call_us(partial(model.complete, request), seconds), leaves)
    leaf_us = measured["leaf alone"][0]
    print("pattern overhead per request (leaf time subtracted):")
    for name, (us, leaves) in measured.items():
        if name == "leaf alone":
            print(f"  {name:48s} {us:8.2f} µs")
            continue
        print(f"  {name:48s} {us - leaves * leaf_us:8.2f} µs   (total {us:.2f} µs)")


def rules_router(n: int, regex: bool) -> RouterModel:
    routes = {f"m{i}": InstantModel(f"m{i}") for i in range(n)}
    rules = [
        Rule(route=f"m{i}", regex=re.compile(rf"\btopic{i}\b"))
        if regex
        else Rule(route=f"m{i}", keywords=(f"topic{i}",))
        for i in range(n)
    ]
    return RouterModel("r", routes, "m0", rules=RuleSet(rules))


def semantic_router(n: int, dims: int = 384, match: Match = "nearest") -> RouterModel:
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(n)]
    index = SemanticIndex(names, [rng.normal(size=(3, dims)) for _ in names], match)
    policy = SemanticPolicy(FixedEmbedder(rng.normal(size=dims)), index, threshold=0.0)
    return RouterModel("r", {m: InstantModel(m) for m in names}, "m0", policy=policy)


def learned_router(n: int, dims: int = 384) -> RouterModel:
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(n)]
    predictor = Logistic(weights=rng.normal(size=(dims, n)), bias=rng.normal(size=n))
    costs = CandidateCosts(
        recorded=rng.random(n),
        missing=np.zeros(n, dtype=bool),
        prices=[Price()] * n,
        expected_output_tokens=256,
    )
    trained = TrainedPredictor(FixedEmbedder(rng.normal(size=dims)), predictor)
    policy = LearnedPolicy(trained, names, costs, 0.5, "logistic")
    return RouterModel("r", {m: InstantModel(m) for m in names}, "m0", policy=policy)


async def routing(seconds: float) -> None:
    print("routing decision per request (router.route, no model called; the request")
    print("matches the last rule, the worst case for rules checked in order):")
    makers: list[tuple[str, Callable[[int], RouterModel]]] = [
        ("rules, keyword-indexed", lambda n: rules_router(n, regex=False)),
        ("rules, regex only (checked one by one)", lambda n: rules_router(n, regex=True)),
        ("semantic, nearest of 3 examples, 384-d", semantic_router),
        ("semantic, centroids, 384-d", lambda n: semantic_router(n, match="centroid")),
        ("learned, logistic, 384-d", learned_router),
    ]
    for label, make in makers:
        cells = []
        for n in (10, 100, 1000):
            router = make(n)
            request = user(f"please explain topic{n - 1} to me in a few words")
            us = await per_call_us(partial(router.route, request), seconds)
            cells.append(f"{n:>5}: {us:8.2f} µs")
        print(f"  {label:40s} " + "  ".join(cells))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds")
    args = parser.parse_args()
    seconds = 0.25 if args.quick else 1.0
    await overhead(seconds)
    await routing(seconds)


if __name__ == "__main__":
    asyncio.run(main())
