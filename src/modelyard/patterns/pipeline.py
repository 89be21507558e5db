"""Pipeline: stages in order, each reading the request and earlier outputs through a template,
each output checked by gates before the next stage sees it. A stage whose output fails a gate
is rerun (`retries` times), then handed to its `escalate` Model, then the pipeline stops with
QualityCheckError naming the stage and the check. A checker gate whose model fails gives no
verdict: the pipeline stops at once with the checker's own error (say `unavailable`), which a
fallback can act on, rather than retrying or escalating work that no checker can judge.

A try whose model fails with an error a fallback moves on from (`fallback.moves_on`: an
outage, a 5xx, a rate limit, a timeout of the call itself, a rejected key; a context too long
only to a larger window) goes on to the stage's escalation at once, skipping the retries left
(they are for gate failures; an outage would repeat), while the stage has time left. A bad
request or a content filter stops the pipeline at once, as does any failure with no
escalation left.

Every stage gets the request's options (temperature, tools, format, deadline); only its
messages (one user message: the rendered template) and, if set, its system prompt change.

Under a deadline, a stage may use all the time left unless it has a `share` of it (its tries,
escalation and gates together), so that it cannot leave the later ones (a quality check, the
answer) without time. By default nothing is cut early: a pipeline has no other path, so a
stage cut at a share fails a request that might still have fitted. A stage cut at its share
stops the pipeline with a timeout naming the stage and the time it had, unless it has an
escalation: that is tried then, with the stage's share of the time left (the later stages keep
the rest), since a try that was too slow is a failed try like one a gate refused. A stage that
runs out of the request's time says what the stages before it took, so the one that ate it is
named.
Streaming runs all stages but the last to completion and streams the last one live, unless it
has gates (its output must be checked before anyone sees it); a live try that fails before any
of its content reached the caller goes on to the escalation as above.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace

from modelyard.errors import ModelError, QualityCheckError
from modelyard.model import Model, ModelInfo
from modelyard.patterns.gates import Gate, GateResult
from modelyard.patterns.records import answered, emit, failed, raise_with, restamp, since_ms
from modelyard.patterns.templates import Template, TemplateError
from modelyard.resilience.deadline import DEADLINE, within
from modelyard.resilience.fallback import moves_on
from modelyard.resilience.streams import GuardedStream, annotate
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision, Message


@dataclass(frozen=True, slots=True)
class PipelineStage:
    """One step: a Model, what it reads, its gates and what to do when they fail."""

    name: str
    model: Model
    template: Template | None = None
    """None: the request as it came (the first stage's default)."""
    system: str | None = None
    gates: tuple[Gate, ...] = ()
    retries: int = 0
    escalate: Model | None = None
    share: float | None = None
    """Under a deadline, the share of the time left when it starts that it may use; None: all
    of it."""

    def attempts(self) -> list[tuple[Model, str]]:
        """Who is asked, in order, until the output passes the gates."""
        tries = [(self.model, "try 1")]
        tries += [(self.model, f"retry {n}") for n in range(1, self.retries + 1)]
        if self.escalate is not None:
            tries.append((self.escalate, "escalation"))
        return tries


@dataclass(slots=True)
class _Progress:
    started: float
    original: str
    previous: str
    outputs: dict[str, str]
    records: list[Decision]
    spent: float = 0.0


class PipelineModel(Model):
    """Runs stages in order; the last stage's output is the answer."""

    def __init__(
        self, name: str, stages: Sequence[PipelineStage], *, deadline: float | None = None
    ) -> None:
        self.stages = tuple(stages)
        self.deadline = deadline
        last = self.stages[-1]
        answerers = [last.model, *([last.escalate] if last.escalate else [])]
        self.info = ModelInfo(
            name=name, kind="pipeline", capabilities=answerers[0].info.capabilities
        )

    @property
    def children(self) -> Sequence[Model]:
        out: list[Model] = []
        for stage in self.stages:
            out.append(stage.model)
            for gate in stage.gates:
                out.extend(gate.models())
            if stage.escalate is not None:
                out.append(stage.escalate)
        return out

    @property
    def contenders(self) -> Sequence[Model]:
        escalations = [stage.escalate for stage in self.stages if stage.escalate is not None]
        return (*(stage.model for stage in self.stages), *escalations)

    def describe(self) -> dict[str, object]:
        parts = []
        for stage in self.stages:
            text = stage.name
            if stage.gates:
                text += " (gates: " + ", ".join(g.name for g in stage.gates) + ")"
            if stage.retries:
                text += f" retries={stage.retries}"
            if stage.escalate is not None:
                text += f" escalate={stage.escalate.name}"
            parts.append(text)
        return {"kind": "pipeline", "stages": " -> ".join(parts)}

    def worst_case_cost(self, request: ChatRequest) -> float:
        """Every attempt of every stage (retries, escalation, checker gates reading the
        output), a later stage's input bounded by what the earlier stages can write: what
        budgets reserve, so a pipeline cannot spend past them (`cost.bounds`)."""
        from modelyard.cost.bounds import cost_bound, output_bytes_bound, reading

        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        original = len(request.last_user_text.encode("utf-8"))
        previous, outputs, total = original, dict[str, int](), 0.0
        for stage in self.stages:
            if stage.template is None:
                asked = request
            else:
                size = stage.template.size_bound(original, previous, outputs)
                asked = reading(request, size)
            if stage.system is not None:
                asked = replace(asked, system=stage.system)
            wrote = 0
            for model, _ in stage.attempts():
                total += cost_bound(model, asked)
                wrote = max(wrote, output_bytes_bound(model, asked))
            read = len(asked.prompt_text.encode("utf-8"))
            for gate in stage.gates:  # a checker reads the input and the output, each try
                checked = reading(asked, gate.input_bound(read, wrote), helper=True)
                for checker in gate.models():
                    total += len(stage.attempts()) * cost_bound(checker, checked)
            outputs[stage.name] = previous = wrote
        return total

    def _stage_request(
        self, request: ChatRequest, stage: PipelineStage, progress: _Progress
    ) -> tuple[ChatRequest, str]:
        if stage.template is None:
            if stage.system is None:
                return request, progress.original
            return replace(request, system=stage.system), progress.original
        try:
            text = stage.template.render(progress.original, progress.previous, progress.outputs)
        except TemplateError as exc:
            raise self._quality(stage, f"input template: {exc}", progress) from None
        message = Message(role="user", content=text)
        system = stage.system if stage.system is not None else request.system
        return replace(request, messages=(message,), system=system), text

    def _quality(self, stage: PipelineStage, what: str, progress: _Progress) -> ModelError:
        message = f"pipeline {self.name}: stage {stage.name!r} {what}"
        error = QualityCheckError(message, model=self.name, code="quality_check")
        decision = self._decision(
            progress, None, f"stopped at stage {stage.name!r}: {what}", error=message
        )
        return raise_with(error, cost=progress.spent, decision=decision)

    def _decision(
        self, progress: _Progress, chosen: str | None, reason: str, error: str | None = None
    ) -> Decision:
        return Decision(
            node=self.name,
            kind="pipeline",
            chosen=chosen,
            reason=reason,
            latency_ms=since_ms(progress.started),
            cost=progress.spent,
            error=error,
            children=tuple(progress.records),
        )

    async def _gates(
        self, stage: PipelineStage, response: ChatResponse, text: str, request: ChatRequest
    ) -> tuple[GateResult | None, list[Decision], float, list[str]]:
        """The first failing gate's result (None when all pass), checker records, cost, notes."""
        records: list[Decision] = []
        cost = 0.0
        notes: list[str] = []
        for gate in stage.gates:
            result = await gate.check(response, text, request)
            cost += result.cost
            if result.decision is not None:
                records.append(result.decision)
            notes.append(f"{gate.name}: {result.reason}")
            if not result.passed:
                return result, records, cost, notes
        return None, records, cost, notes

    @staticmethod
    def _budgeted(
        request: ChatRequest, stage: PipelineStage, *, escalation: bool = False
    ) -> tuple[ChatRequest, str | None]:
        """The request `stage` (or its `escalation`, after a cut) runs under: cut to its share
        of the time left when it has one (see the module docstring), with whose deadline that
        is, in words."""
        seconds = None if stage.share is None else request.share_of_remaining(stage.share)
        if seconds is None:
            return request, None
        what = "the time left for its escalation" if escalation else "the deadline"
        whose = f"stage {stage.name!r}'s share of {what} ({seconds:.3g}s)"
        return request.with_budget(seconds), whose

    @staticmethod
    def _escalates_after(
        exc: ModelError,
        stage_request: ChatRequest,
        whose: str | None,
        queue: list[tuple[Model, str]],
        request: ChatRequest,
    ) -> bool:
        """Whether a try that failed with `exc` was cut at the stage's share (`whose`) with the
        escalation still to try and time left in the `request` for it."""
        if whose is None or exc.code != DEADLINE or not queue or queue[-1][1] != "escalation":
            return False
        own, left = stage_request.remaining(), request.remaining()
        return own is not None and own <= 0 and left is not None and left > 0

    async def _run_stage(
        self, request: ChatRequest, stage: PipelineStage, progress: _Progress
    ) -> ChatResponse:
        """The stage's accepted response, after retries and escalation if needed, each try
        abandoned at the stage's deadline when it has a share of the request's; a try cut at
        it goes on to the escalation, with the stage's share of the time then left."""
        started = time.perf_counter()
        staged, whose = self._budgeted(request, stage)
        stage_request, text = self._stage_request(staged, stage, progress)
        attempts: list[Decision] = []
        notes: list[str] = []
        stage_cost = 0.0
        last_failure = ""  # the last gate failed
        after = ""  # why the earlier tries were not taken
        queue = stage.attempts()
        tries = 0
        while queue:
            model, label = queue.pop(0)
            tries += 1
            try:
                call: Awaitable[ChatResponse] = model.complete(stage_request)
                if whose is not None:  # one that ignores its share must not take the next's
                    call = within(call, stage_request, model, whose=whose)
                response = await call
            except ModelError as exc:
                stage_cost += exc.cost
                progress.spent += exc.cost
                if self._escalates_after(exc, stage_request, whose, queue, request):
                    attempts.append(failed(model, annotate(exc, f"{whose} passed", record=True)))
                    after = f"{label} was cut at {whose}"
                    staged, whose = self._budgeted(request, stage, escalation=True)
                    stage_request, _ = self._stage_request(staged, stage, progress)
                    queue = queue[-1:]  # the retries would be as slow
                    continue
                attempts.append(failed(model, exc))
                if self._fails_over(exc, model, queue, stage_request):
                    after = f"{label} failed ({exc.kind})"
                    queue = queue[-1:]  # retries are for gate failures: an outage would repeat
                    continue
                record = self._stage_record(
                    stage,
                    None,
                    f"{label} failed ({exc.kind})",
                    attempts,
                    stage_cost,
                    started,
                    notes,
                )
                reason = f"stage {stage.name!r} failed ({exc.kind})"
                reason += self._out_of_time(progress, exc, stage_request, whose)
                raise self._stopped(progress, record, reason, exc) from None
            attempts.append(answered(model, response))
            stage_cost += response.cost
            progress.spent += response.cost
            failure, checks, gate_cost, gate_notes = await self._gates(
                stage, response, text, stage_request
            )
            attempts.extend(checks)
            stage_cost += gate_cost
            progress.spent += gate_cost
            notes.extend(f"{label}: {n}" for n in gate_notes)
            if failure is not None and failure.error is not None:
                record = self._stage_record(
                    stage, None, f"{label}: {failure.reason}", attempts, stage_cost, started, notes
                )
                reason = f"stage {stage.name!r}: {failure.reason}"
                raise self._stopped(progress, record, reason, failure.error)
            if failure is None:
                reason = self._passed(stage, label, model, after)
                progress.records.append(
                    self._stage_record(
                        stage, model.name, reason, attempts, stage_cost, started, notes
                    )
                )
                return response
            last_failure = f"{stage.gates[len(gate_notes) - 1].name}: {failure.reason}"
            after = f"failing {last_failure}"
        progress.records.append(
            self._stage_record(
                stage, None, f"failed check {last_failure}", attempts, stage_cost, started, notes
            )
        )
        raise self._quality(
            stage, f"failed check {last_failure} after {tries} attempt(s)", progress
        )

    @staticmethod
    def _fails_over(
        exc: ModelError, model: Model, queue: list[tuple[Model, str]], request: ChatRequest
    ) -> bool:
        """Whether a try of `model` that failed with `exc` goes on to the escalation still in
        the `queue`: when a fallback would move on from it (an outage, a rate limit, a timeout
        of the call itself; not a bad request) and the stage's `request` has time left."""
        if not queue or queue[-1][1] != "escalation":
            return False
        left = request.remaining()
        return (left is None or left > 0) and moves_on(exc, model, queue[-1][0])

    @staticmethod
    def _passed(stage: PipelineStage, label: str, model: Model, after: str) -> str:
        """The reason of a stage whose try `label` by `model` passed, `after` what the earlier
        tries did (in the reason itself)."""
        reason = f"{label} by {model.name} passed" + (" all gates" if stage.gates else "")
        return f"{reason} (after {after})" if after else reason

    @staticmethod
    def _out_of_time(
        progress: _Progress, exc: ModelError, request: ChatRequest, whose: str | None
    ) -> str:
        """What a stage cut at a deadline adds to its reason, so that the caller learns which
        stage ate the time: its own share when that is what passed, else what the stages before
        it took of the request's."""
        left = request.remaining()
        if exc.code != DEADLINE or left is None or left > 0:
            return ""
        if whose is not None:
            annotate(exc, f"{whose} passed")
            return f": {whose} passed"
        if not progress.records:
            return ""
        took = ", ".join(f"{r.node!r} {r.latency_ms:.0f} ms" for r in progress.records)
        annotate(exc, f"the stages before it took {took}")
        return f"; the stages before it took {took}"

    def _stopped(
        self, progress: _Progress, record: Decision, reason: str, exc: ModelError
    ) -> ModelError:
        """`exc`, a stage model's or checker's failure, as the pipeline's, with its record."""
        progress.records.append(record)
        decision = self._decision(progress, None, reason, error=str(exc))
        return raise_with(exc, cost=progress.spent, decision=decision)

    def _stage_record(
        self,
        stage: PipelineStage,
        chosen: str | None,
        reason: str,
        attempts: list[Decision],
        cost: float,
        started: float,
        notes: list[str],
    ) -> Decision:
        return Decision(
            node=stage.name,
            kind="stage",
            chosen=chosen,
            reason=reason,
            latency_ms=since_ms(started),
            cost=cost,
            children=tuple(attempts),
            details={"checks": list(notes)} if notes else {},
        )

    async def _early(self, request: ChatRequest) -> tuple[ChatRequest, _Progress]:
        """Run every stage but the last; the (budgeted) request and what they produced."""
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        original = request.last_user_text
        progress = _Progress(time.perf_counter(), original, original, {}, [])
        for stage in self.stages[:-1]:
            response = await self._run_stage(request, stage, progress)
            progress.outputs[stage.name] = progress.previous = response.text
        return request, progress

    async def complete(self, request: ChatRequest) -> ChatResponse:
        request, progress = await self._early(request)
        last = self.stages[-1]
        response = await self._run_stage(request, last, progress)
        return self._finish(response, last, progress)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        request, progress = await self._early(request)
        last = self.stages[-1]
        if last.gates:  # the output must pass its gates before anyone sees it
            response = await self._run_stage(request, last, progress)
            for chunk in emit(self._finish(response, last, progress), True):
                yield chunk
            return
        async for chunk in self._stream_last(request, last, progress):
            yield chunk

    def _finish(
        self, response: ChatResponse, last: PipelineStage, progress: _Progress
    ) -> ChatResponse:
        # "stage 'a'": a stage named after its model reads as that model, which its
        # escalation may have replaced (the record names who answered as `chosen`).
        reason = f"{len(self.stages)} stage(s) passed; stage {last.name!r} answered"
        return restamp(
            response, cost=progress.spent, decision=self._decision(progress, response.model, reason)
        )

    async def _stream_last(
        self, request: ChatRequest, last: PipelineStage, progress: _Progress
    ) -> AsyncIterator[Chunk]:
        """The last stage streamed live: a try that fails before any of its content reached the
        caller goes on to the escalation as when answering whole (`_fails_over`)."""
        started = time.perf_counter()
        stage_request, _ = self._stage_request(request, last, progress)
        attempts: list[Decision] = []
        cost = 0.0
        after = ""
        queue = [(last.model, "try 1")]
        if last.escalate is not None:
            queue.append((last.escalate, "escalation"))
        while queue:
            model, label = queue.pop(0)
            attempt = GuardedStream(model.stream(stage_request))
            try:
                async for chunk in attempt.chunks():
                    yield chunk
            except ModelError as exc:
                progress.spent += exc.cost
                cost += exc.cost
                attempts.append(failed(model, exc))
                if not attempt.committed and self._fails_over(exc, model, queue, stage_request):
                    after = f"{label} failed ({exc.kind})"
                    continue
                record = self._stage_record(
                    last, None, f"{label} failed ({exc.kind})", attempts, cost, started, []
                )
                reason = f"stage {last.name!r} failed ({exc.kind})"
                reason += self._out_of_time(progress, exc, stage_request, None)
                raise self._stopped(progress, record, reason, exc) from None
            response = attempt.response
            assert response is not None  # else `chunks` raised
            progress.spent += response.cost
            attempts.append(answered(model, response))
            reason = self._passed(last, label, model, after)  # as when answering whole
            progress.records.append(
                self._stage_record(
                    last, model.name, reason, attempts, cost + response.cost, started, []
                )
            )
            yield Chunk(response=self._finish(response, last, progress))
            return
