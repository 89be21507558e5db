"""Cascade: stages from cheapest to most capable. Each stage but the last answers with a
confidence from its estimator; the answer is accepted when that reaches the stage's threshold,
else the next stage is asked. The last stage always answers.

Stages are skipped when their model is disabled (an optional provider without its key) or
when less time is left than the stage needs (its `expected_latency`, else the p95 of its
recent answers). When the stages after a below-threshold answer are all skipped or fail, that
answer is returned rather than nothing, and the decision says so.

Under a deadline, a stage before the last may use only `stage_share` (default half) of the
time left, as a fallback's members do, so a slow or hanging cheap stage cannot take the time
the last stage needs to answer. The last stage gets all that is left.

Cost is every stage that ran plus the estimators' own calls. Streaming runs the stages before
the answering one to completion and streams the last stage live.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import ModelError, ModelTimeoutError, NoAnswerError
from modelyard.model import Model, ModelInfo
from modelyard.patterns.estimators import Estimate, Estimator
from modelyard.patterns.records import (
    answered,
    common_capabilities,
    failed,
    raise_with,
    restamp,
    since_ms,
)
from modelyard.resilience.deadline import within
from modelyard.streaming import response_chunks
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

P95_MIN_SAMPLES = 20


@dataclass(slots=True)
class Stage:
    """One step of a cascade."""

    name: str
    model: Model
    threshold: float | None = None
    estimator: Estimator | None = None
    expected_latency: float | None = None
    disabled: str | None = None
    """Why the stage never runs (its provider is disabled), or None."""
    observed: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    """Seconds the stage's recent answers took."""

    def needs(self) -> float | None:
        """Seconds this stage is expected to take, if known."""
        if self.expected_latency is not None:
            return self.expected_latency
        if len(self.observed) >= P95_MIN_SAMPLES:
            ordered = sorted(self.observed)
            return ordered[int(0.95 * (len(ordered) - 1))]
        return None

    def describe(self) -> str:
        """The stage's rule in words."""
        if self.disabled is not None:
            return f"{self.name} (disabled)"
        if self.estimator is None:
            return f"{self.name} (last)"
        return f"{self.name} if {self.estimator.describe()} >= {self.threshold:g}"


@dataclass(slots=True)
class _Run:
    """What one request's pass through the stages has gathered so far."""

    started: float
    records: list[Decision] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    spent: float = 0.0
    held: tuple[Stage, Estimate] | None = None
    """The latest below-threshold answer, returned if no later stage answers."""


class CascadeModel(Model):
    """Asks stages in order until one is confident enough; the last always answers."""

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        *,
        deadline: float | None = None,
        stage_share: float = 0.5,
    ) -> None:
        self.stages = tuple(stages)
        self.deadline = deadline
        self.stage_share = stage_share
        self._live = tuple(s for s in self.stages if s.disabled is None)
        self._skips = tuple(
            Decision(node=s.name, kind="stage", reason=f"skipped: {s.disabled}")
            for s in self.stages
            if s.disabled is not None
        )
        self.info = ModelInfo(
            name=name,
            kind="cascade",
            capabilities=common_capabilities(
                [s.model for s in self._live] or [self.stages[-1].model]
            ),
        )

    @property
    def children(self) -> Sequence[Model]:
        out: list[Model] = []
        for stage in self.stages:
            out.append(stage.model)
            if stage.estimator is not None:
                out.extend(stage.estimator.models())
        return out

    @property
    def contenders(self) -> Sequence[Model]:
        out: list[Model] = []
        for stage in self.stages:
            out.append(stage.model)
            if stage.estimator is not None:
                out.extend(stage.estimator.contenders())
        return out

    def worst_case_cost(self, request: ChatRequest) -> float:
        """Every live stage at its most, with its estimator's own calls (k samples, a
        verifier reading the answer): what budgets reserve (`cost.bounds`)."""
        from modelyard.cost.bounds import cost_bound

        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        return sum(
            stage.estimator.worst_case_cost(stage.model, request)
            if stage.estimator is not None
            else cost_bound(stage.model, request)
            for stage in self._live
        )

    def describe(self) -> dict[str, object]:
        return {"kind": "cascade", "stages": "; ".join(s.describe() for s in self.stages)}

    def _too_slow(self, stage: Stage, request: ChatRequest) -> str | None:
        left = request.remaining()
        if left is None:
            return None
        needs = stage.needs()
        if needs is not None and needs > left:
            return f"skipped: needs about {needs:.2f}s, {max(left, 0):.2f}s left for it"
        return None

    def _stage_record(
        self, stage: Stage, estimate: Estimate, verdict: str, started: float, chosen: bool
    ) -> Decision:
        return Decision(
            node=stage.name,
            kind="stage",
            chosen=stage.model.name if chosen else None,
            reason=verdict,
            scores={"confidence": estimate.confidence} if estimate.confidence is not None else {},
            threshold=stage.threshold,
            latency_ms=since_ms(started),
            cost=estimate.cost,
            error=f"{estimate.error.kind}: {estimate.error}" if estimate.error else None,
            children=estimate.children,
        )

    def _decision(
        self,
        run: _Run,
        chosen: str | None,
        reason: str,
        threshold: float | None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Decision:
        return Decision(
            node=self.name,
            kind="cascade",
            chosen=chosen,
            reason=reason,
            scores=run.scores,
            threshold=threshold,
            latency_ms=since_ms(run.started),
            cost=run.spent,
            error=error,
            children=self._in_stage_order((*self._skips, *run.records)),
            details=details or {},
        )

    def _in_stage_order(self, records: Sequence[Decision]) -> tuple[Decision, ...]:
        """Stage records in config order, a skipped stage in its place (a stable sort: records
        of one stage keep the order they ran in)."""
        position = {stage.name: i for i, stage in enumerate(self.stages)}
        return tuple(sorted(records, key=lambda d: position.get(d.node, len(position))))

    async def _early_stages(self, request: ChatRequest, run: _Run) -> tuple[Stage, Estimate] | None:
        """Run stages before the last live one; the accepted (stage, estimate), if any."""
        for stage in self._live[:-1]:
            staged = request.with_budget(request.share_of_remaining(self.stage_share))
            slow = self._too_slow(stage, staged)
            if slow is not None:
                run.records.append(Decision(node=stage.name, kind="stage", reason=slow))
                continue
            assert stage.estimator is not None and stage.threshold is not None
            started = time.perf_counter()
            try:
                estimate = await within(
                    stage.estimator.run(stage.model, staged), staged, stage.model
                )
            except ModelTimeoutError as exc:  # it ignored its share: abandoned, escalate
                record = () if exc.decision is None else (exc.decision,)
                estimate = Estimate(None, exc, None, f"failed ({exc.kind})", exc.cost, record)
            run.spent += estimate.cost
            if estimate.response is None:
                if isinstance(estimate.error, ModelTimeoutError):
                    # Cut off at its share: at least that slow, so it is skipped next time
                    # rather than spending the share again (what `needs()` learns from).
                    stage.observed.append(time.perf_counter() - started)
                verdict = f"{estimate.reason}; escalating"  # the reason says it failed
                run.records.append(self._stage_record(stage, estimate, verdict, started, False))
                continue
            stage.observed.append(time.perf_counter() - started)
            confidence = estimate.confidence
            if confidence is not None:
                run.scores[stage.name] = confidence
            if confidence is not None and confidence >= stage.threshold:
                verdict = f"accepted: {estimate.reason} >= {stage.threshold:g}"
                run.records.append(self._stage_record(stage, estimate, verdict, started, True))
                return stage, estimate
            compare = "" if confidence is None else f" < {stage.threshold:g}"
            verdict = f"escalated: {estimate.reason}{compare}"
            run.records.append(self._stage_record(stage, estimate, verdict, started, False))
            run.held = (stage, estimate)
        return None

    def _accept(self, run: _Run, stage: Stage, estimate: Estimate, why: str) -> ChatResponse:
        assert estimate.response is not None
        decision = self._decision(run, stage.model.name, why, stage.threshold)
        return restamp(
            estimate.response, cost=run.spent, decision=decision, confidence=estimate.confidence
        )

    def _last_failed(self, run: _Run, last: Stage, exc: ModelError) -> ChatResponse:
        """The held answer when the last stage failed; re-raise when there is none."""
        if run.held is None:
            reason = f"last stage {last.name} failed ({exc.kind})"
            decision = self._decision(run, None, reason, None, error=str(exc))
            raise raise_with(exc, cost=run.spent, decision=decision)
        stage, estimate = run.held
        why = (
            f"last stage {last.name} failed ({exc.kind}); answering with {stage.name}'s "
            "answer below its threshold"
        )
        return self._accept(run, stage, estimate, why)

    async def _before_last(
        self, request: ChatRequest, run: _Run
    ) -> tuple[ChatResponse | None, Stage]:
        """Run the early stages: the decided answer if one is, and the last live stage."""
        if not self._live:
            reason = "every stage is disabled"
            error = NoAnswerError(reason, model=self.name)  # said as "NAME: reason"
            decision = self._decision(run, None, reason, None, reason)
            raise raise_with(error, cost=0.0, decision=decision)
        last = self._live[-1]
        accepted = await self._early_stages(request, run)
        if accepted is not None:
            stage, estimate = accepted
            why = f"{stage.name} {run.records[-1].reason}"
            return self._accept(run, stage, estimate, why), last
        if run.held is not None:
            slow = self._too_slow(last, request)
            if slow is not None:
                run.records.append(Decision(node=last.name, kind="stage", reason=slow))
                stage, estimate = run.held
                why = (
                    "no later stage can finish in time; "
                    f"answering with {stage.name} below threshold"
                )
                return self._accept(run, stage, estimate, why), last
        return None, last

    def _escalation(self, run: _Run, last: Stage) -> str:
        if run.records:
            return f"escalated to the last stage {last.name}"
        return f"{last.name} is the only stage that can run"

    def _last_failed_at(
        self, run: _Run, last: Stage, exc: ModelError, started: float, hold: bool
    ) -> ChatResponse:
        run.spent += exc.cost
        estimate = Estimate(None, exc, None, "", exc.cost, (failed(last.model, exc),))
        record = self._stage_record(last, estimate, f"failed ({exc.kind})", started, False)
        run.records.append(record)
        if not hold:
            run.held = None
        return self._last_failed(run, last, exc)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        run = _Run(started=time.perf_counter())
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        decided, last = await self._before_last(request, run)
        if decided is not None:
            return decided
        started = time.perf_counter()
        try:
            response = await last.model.complete(request)
        except ModelError as exc:
            return self._last_failed_at(run, last, exc, started, hold=True)
        return self._final(run, last, response, started, self._escalation(run, last))

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        run = _Run(started=time.perf_counter())
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        decided, last = await self._before_last(request, run)
        if decided is not None:
            for chunk in response_chunks(decided):
                yield chunk
            return
        started = time.perf_counter()
        reason = self._escalation(run, last)
        yielded = False
        try:
            async for chunk in last.model.stream(request):
                if chunk.response is None:
                    yielded = True
                    yield chunk
                    continue
                yield Chunk(response=self._final(run, last, chunk.response, started, reason))
        except ModelError as exc:
            # Once part of the last stage's answer reached the caller, switching answers
            # would splice two texts: the error goes up instead.
            response = self._last_failed_at(run, last, exc, started, hold=not yielded)
            for chunk in response_chunks(response):
                yield chunk

    def _final(
        self, run: _Run, last: Stage, response: ChatResponse, started: float, reason: str
    ) -> ChatResponse:
        last.observed.append(time.perf_counter() - started)
        run.spent += response.cost
        run.records.append(
            Decision(
                node=last.name,
                kind="stage",
                chosen=last.model.name,
                reason="answered (last stage)",
                latency_ms=since_ms(started),
                cost=response.cost,
                children=(answered(last.model, response),),
            )
        )
        decision = self._decision(run, last.model.name, reason, None)
        return restamp(response, cost=run.spent, decision=decision)
