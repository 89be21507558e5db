"""`modelyard drill`: prove a config survives a provider's outage before a real one does.

For each provider a system uses, and each kind of fault, the config is rebuilt with that
provider's models replaced by stand-ins that fail that way and every other provider's models
by healthy stand-ins — the real retry, breaker, limit, deadline and fallback settings stay in
place — and a short workload (plain and streamed requests) is sent through the system. No real
provider is contacted. Time runs faster by `time_scale` (timeouts, backoffs, Retry-After and
deadlines all shrink alike), and latencies are reported scaled back to real seconds.

Each fault ends as one of:
- survived: every request was answered, in full;
- degraded: the only failures are streams that broke after part of the answer was sent and
  ended with an explicit error (no config can hide those without `continue_streams` and a
  prefill-capable fallback);
- failed: some request got an error, or an answer came back cut or spliced as if whole.

Local models are not replaced: they run for real (a router's classifier must still route), so
a slow one looks slower by the time scale. A target that reaches no hosted provider is noted
and skipped. The drill runs off production's books, as evaluation does: no cache (a cached
baseline answer would hide the outage), budgets, alerts or ledger.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from modelyard.config.build import Built, build
from modelyard.config.loader import LoadedConfig, load_config
from modelyard.config.resources import Resources
from modelyard.config.schema import ProviderSpec
from modelyard.cost.dispatch import mark_sent
from modelyard.errors import (
    ModelError,
    ModelTimeoutError,
    NotFoundError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.evaluation.isolation import for_evaluation
from modelyard.model import Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.stack import Resilience
from modelyard.suggest import did_you_mean
from modelyard.types import ChatRequest, ChatResponse, Chunk, user

ANSWER = "The drill answer arrived complete and in order."
"""What every healthy stand-in answers, so a cut or spliced answer cannot pass for a whole one."""

FAULTS: Mapping[str, str] = {
    "down": "every call is refused (connection refused)",
    "slow": "no answer within the configured timeouts",
    "rate_limited": "a 429 storm: every call refused with Retry-After 2s",
    "server_error": "every call answers HTTP 500",
    "cut_streams": "streams break after two chunks; plain calls answer",
}
RETRY_AFTER = 2.0


class DrillModel(Model):
    """A provider's model during a drill: healthy, or failing the way `fault` says."""

    def __init__(
        self, info: ModelInfo, provider: ProviderSpec, fault: str | None, time_scale: float
    ) -> None:
        self.info = info
        self.fault = fault
        self.time_scale = time_scale
        self.timeouts = provider.timeouts
        self.calls = 0

    def _answer(self, request: ChatRequest, *, cut: bool = False) -> ScriptedModel:
        """A healthy stand-in for one call; a continuation (trailing assistant prefill of
        the drill answer) gets the rest of the answer."""
        text = ANSWER
        last = request.messages[-1] if request.messages else None
        if last is not None and last.role == "assistant" and ANSWER.startswith(last.text):
            text = ANSWER[len(last.text) :]
        reply = Reply(text=text, cut_after=2 if cut else None)
        return ScriptedModel(info=self.info, default=reply)

    async def _fail(self, request: ChatRequest, limit: float) -> None:
        fault = self.fault
        if fault == "down":
            raise UnavailableError("drill: connection refused", model=self.name, code="connect")
        mark_sent()  # every other fault is the provider's, once it has the request
        if fault == "server_error":
            raise UnavailableError("drill: internal server error", model=self.name, status=500)
        if fault == "rate_limited":
            raise RateLimitedError(
                "drill: rate limit reached",
                model=self.name,
                retry_after=RETRY_AFTER * self.time_scale,
            )
        if fault == "slow":
            wait = limit * self.time_scale
            left = request.remaining()
            if left is not None and left < wait:
                await asyncio.sleep(max(left, 0.0))
                raise ModelTimeoutError(
                    "drill: no answer before the request's deadline",
                    model=self.name,
                    code="deadline",
                    retryable=False,
                )
            await asyncio.sleep(wait)
            raise ModelTimeoutError(f"drill: no answer within {limit:g}s", model=self.name)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.fault != "cut_streams":
            await self._fail(request, self.timeouts.total)
        return await self._answer(request).complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.calls += 1
        cut = self.fault == "cut_streams"
        if not cut:
            await self._fail(request, self.timeouts.first_token)
        async for chunk in self._answer(request, cut=cut).stream(request):
            yield chunk


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one drill request got."""

    stream: bool
    seconds: float
    """Latency in real-world seconds (measured, divided by the time scale)."""
    model: str | None = None
    error: str | None = None
    interrupted: bool = False
    """A stream that broke after part of the answer was sent, with an explicit error."""
    corrupt: bool = False
    """An answer that came back cut or spliced yet ended as if whole."""

    @property
    def answered(self) -> bool:
        """Whether the request got a whole answer."""
        return self.error is None and not self.corrupt


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultResult:
    """One target under one provider's fault."""

    target: str
    provider: str
    fault: str
    outcomes: tuple[Outcome, ...]
    baseline: float
    """The target's median latency with every provider healthy."""

    @property
    def verdict(self) -> str:
        """survived, degraded or failed (see the module docstring)."""
        failed = [o for o in self.outcomes if not o.answered]
        if not failed:
            return "survived"
        if all(o.interrupted and not o.corrupt for o in failed):
            return "degraded"
        return "failed"

    @property
    def answered_by(self) -> Counter[str]:
        """How many requests each model answered."""
        return Counter(o.model for o in self.outcomes if o.answered and o.model)

    @property
    def added_latency(self) -> float:
        """Median latency of the answered requests above the healthy median."""
        times = [o.seconds for o in self.outcomes if o.answered]
        return (statistics.median(times) - self.baseline) if times else 0.0

    @property
    def worst_latency(self) -> float:
        """The slowest request, answered or not."""
        return max((o.seconds for o in self.outcomes), default=0.0)

    def too_slow(self, max_latency: float | None) -> bool:
        """Whether its slowest request took longer than `max_latency` seconds (None: no limit):
        answering every request is not surviving when a client gave up long before."""
        return max_latency is not None and self.worst_latency > max_latency

    @property
    def errors(self) -> Counter[str]:
        """What the failed requests got, by message."""
        return Counter(
            o.error or "answer cut or spliced but ended as if whole"
            for o in self.outcomes
            if not o.answered
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillReport:
    """Every fault's result."""

    config: str
    time_scale: float
    baselines: Mapping[str, tuple[Outcome, ...]]
    results: tuple[FaultResult, ...]
    notes: tuple[str, ...] = ()

    def ok(self, *, strict: bool = False, max_latency: float | None = None) -> bool:
        """Whether every fault was survived (or only degraded, unless `strict`), each with
        its slowest request within `max_latency` seconds (at full speed) when one is set."""
        allowed = {"survived"} if strict else {"survived", "degraded"}
        baseline_ok = all(o.answered for outs in self.baselines.values() for o in outs)
        return baseline_ok and all(
            r.verdict in allowed and not r.too_slow(max_latency) for r in self.results
        )


def load_for_drill(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """The config as if every `${VAR}` were set (no provider is contacted, so no key is needed),
    off production's cache, budgets, alerts and ledger."""
    base = dict(os.environ if env is None else env)
    loaded = load_config(path, env=base)
    if loaded.missing_env:
        for variable in loaded.missing_env.values():
            base[variable] = "drill-placeholder"
        loaded = load_config(path, env=base)
    return for_evaluation(loaded)


def _build(
    loaded: LoadedConfig,
    fault_on: str | None,
    fault: str | None,
    scale: float,
    plan: dict[str, str],
) -> Built:
    def substitute(name: str, info: ModelInfo, provider: ProviderSpec) -> Model:
        assert info.provider is not None
        plan[name] = info.provider
        return DrillModel(info, provider, fault if info.provider == fault_on else None, scale)

    resilience = Resilience(time_scale=scale, substitute=substitute)
    return build(loaded, Resources(), resilience)


def _reachable(model: Model) -> set[str]:
    seen: set[int] = set()
    names: set[str] = set()
    stack = [model]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, DrillModel):
            names.add(node.name)
        stack.extend(node.children)
    return names


async def _ask(
    model: Model, request: ChatRequest, stream: bool, scale: float, faked: set[str]
) -> Outcome:
    started = time.perf_counter()
    sent = ""
    try:
        if stream:
            response = None
            async for chunk in model.stream(request):
                sent += chunk.text
                if chunk.response is not None:
                    response = chunk.response
            assert response is not None
        else:
            response = await model.complete(request)
    except ModelError as exc:
        return Outcome(
            stream=stream,
            seconds=(time.perf_counter() - started) / scale,
            error=f"{type(exc).__name__}: {exc}",
            interrupted=isinstance(exc, StreamInterruptedError) and bool(sent),
        )
    seconds = (time.perf_counter() - started) / scale
    whole = response.text == ANSWER and (not stream or sent == ANSWER)
    corrupt = response.model in faked and not whole
    return Outcome(stream=stream, seconds=seconds, model=response.model, corrupt=corrupt)


async def _workload(
    built: Built, target: str, plan: Workload, scale: float, deadline: float | None
) -> tuple[Outcome, ...]:
    """`plan.requests` requests, every other one streamed, `plan.concurrency` at a time."""
    model = built.systems.get(target) or built.models.get(target)
    if model is None:
        known = [*built.systems, *built.models]
        raise NotFoundError(
            f"no system or model named {target!r} in the config"
            + did_you_mean(target, known, listed="available")
        )
    faked = _reachable(model)
    budget = deadline * scale if deadline else None
    outcomes: list[Outcome] = []
    for wave in range(0, plan.requests, plan.concurrency):
        numbers = range(wave, min(wave + plan.concurrency, plan.requests))
        outcomes.extend(
            await asyncio.gather(
                *(
                    _ask(
                        model,
                        user(f"drill request {i}").with_budget(budget),
                        i % 2 == 1,
                        scale,
                        faked,
                    )
                    for i in numbers
                )
            )
        )
    return tuple(outcomes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """How much traffic each fault sees: waves of concurrent requests, half of them streamed."""

    requests: int = 8
    concurrency: int = 4


async def run_drill(
    path: str | os.PathLike[str],
    targets: Iterable[str] = (),
    *,
    faults: Iterable[str] = tuple(FAULTS),
    workload: Workload | None = None,
    time_scale: float = 0.01,
    env: Mapping[str, str] | None = None,
) -> DrillReport:
    """Drill `targets` (default: every system, or every model when there are none)."""
    loaded = load_for_drill(path, env)
    workload = workload or Workload()
    config = loaded.config
    names = list(targets) or list(config.systems) or list(config.models)
    deadline = config.default_deadline
    plan: dict[str, str] = {}
    healthy = _build(loaded, None, None, time_scale, plan)
    uses: dict[str, set[str]] = {}
    baselines: dict[str, tuple[Outcome, ...]] = {}
    for target in names:
        model = healthy.systems.get(target) or healthy.models.get(target)
        if model is None:
            known = [*sorted(config.systems), *sorted(config.models)]
            raise NotFoundError(
                f"no system or model named {target!r}"
                + did_you_mean(target, known, listed="available")
            )
        uses[target] = {plan[m] for m in _reachable(model)}
        if uses[target]:
            baselines[target] = await _workload(healthy, target, workload, time_scale, deadline)
    await _close(healthy)
    notes = [f"{t}: uses no hosted provider; nothing to drill" for t in names if not uses[t]]
    results = []
    for provider in sorted(set().union(*uses.values()) if uses else set()):
        for fault in faults:
            built = _build(loaded, provider, fault, time_scale, plan)
            for target in names:
                if provider not in uses[target]:
                    continue
                outcomes = await _workload(built, target, workload, time_scale, deadline)
                median = statistics.median(o.seconds for o in baselines[target])
                results.append(
                    FaultResult(
                        target=target,
                        provider=provider,
                        fault=fault,
                        outcomes=outcomes,
                        baseline=median,
                    )
                )
            await _close(built)
    return DrillReport(
        config=str(path),
        time_scale=time_scale,
        baselines=baselines,
        results=tuple(results),
        notes=tuple(notes),
    )


async def _close(built: Built) -> None:
    """Close what a drill build opened (local models may hold resources)."""
    for model in built.models.values():
        await model.aclose()
