"""CPU cost of the resilience stack a hosted model gets by default (retry, circuit breaker,
rate-limit learner, over the in-memory state store), per call, against the bare model.

    .venv/bin/python bench/resilience_overhead.py [--seconds 2]

The model underneath is a scripted one that answers at once, so the difference is what the
wrappers add to every successful call; prints microseconds per call for plain and streamed
answers, bare and wrapped, and the stack through a two-member fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from modelyard.config.resilience import BreakerSpec, RetryBudgetSpec, RetrySpec
from modelyard.model import Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.breaker import BreakerModel, BreakerPolicy, CircuitBreaker
from modelyard.resilience.fallback import FallbackModel
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.resilience.retry import RetryBudget, RetryModel, RetryPolicy
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from modelyard.types import user

REQUEST = user("How do I reset my password?", max_tokens=64)


def bare(name: str) -> ScriptedModel:
    info = ModelInfo(name=name, kind="fake", provider="p")
    return ScriptedModel(info=info, default=Reply(text="Open Settings, then Security."))


def stacked(name: str, store: MemoryStore) -> Model:
    """The default hosted stack, as `resilience/stack.py` builds it."""
    learner = Limiter(f"model:{name}", RateLimits(), store)
    model: Model = RateLimitModel(bare(name), [learner], learner=learner)
    breaker = CircuitBreaker(f"model:{name}", BreakerPolicy.from_spec(BreakerSpec()), store)
    model = BreakerModel(model, [breaker])
    budget = RetryBudget("provider:p", RetryBudgetSpec(), store)
    return RetryModel(model, RetryPolicy.from_spec(RetrySpec()), budget=budget)


async def per_call(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    """Microseconds per call, over about `seconds`."""
    for _ in range(200):
        await call()
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            await call()
        count += 200
    return (time.perf_counter() - started) / count * 1e6


async def main(seconds: float) -> None:
    store = MemoryStore()
    plain, wrapped = bare("m"), stacked("m", store)
    chain = FallbackModel("f", [stacked("a", store), stacked("b", store)])
    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "complete, bare": lambda: plain.complete(REQUEST),
        "complete, default stack": lambda: wrapped.complete(REQUEST),
        "complete, fallback of two stacks": lambda: chain.complete(REQUEST),
        "stream, bare": lambda: collect(plain.stream(REQUEST)),
        "stream, default stack": lambda: collect(wrapped.stream(REQUEST)),
        "stream, fallback of two stacks": lambda: collect(chain.stream(REQUEST)),
    }
    results = {name: await per_call(call, seconds) for name, call in cases.items()}
    for name, micros in results.items():
        print(f"{name:<36} {micros:8.1f} us/call")
    print(
        f"{'stack overhead, complete':<36} "
        f"{results['complete, default stack'] - results['complete, bare']:8.1f} us/call"
    )
    print(
        f"{'stack overhead, stream':<36} "
        f"{results['stream, default stack'] - results['stream, bare']:8.1f} us/call"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    asyncio.run(main(parser.parse_args().seconds))
