"""Ensemble: the same request to every member at once, each within its own deadline, then one
answer by majority vote, confidence-weighted vote, a judge's pick or a fuser's merge.

Stated behaviour when members fail or run late: the ensemble answers with the members that
made it when at least `quorum` did (with a parsed answer, for votes), and otherwise raises
NoAnswerError listing each member's failure. A member past its deadline counts as failed.
With `wait: quorum` the members still out are cancelled as soon as they can no longer change
the outcome. With `wait: in_turn` the members are asked one at a time in config order (list the
cheapest first) and those after the point where the outcome is settled are never asked: it
spends only what the decision needs and takes the sum of the asked members' latencies. A judge
or fuser that fails (or whose pick cannot be read) falls back to the vote.

`response.confidence` is the agreement: the share of members (cancelled or not asked ones
aside) whose normalised answer is the chosen one, so a cascade stage can accept on it. Failed
members and unreadable answers count as not agreeing, and the reason says how many there were.
Cost is every member's plus the judge's or fuser's; a straggler cancelled (or cut at its
deadline) counts at its input if its request was sent, which the provider bills, and at nothing
if it was still waiting to be sent (for a rate-limit or concurrency slot, say): what its budget
guard settles either way (`cost.dispatch`).

Asking the members and what each did is `ensemble_members.py`; this module combines their
answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from modelyard.errors import ModelError, NoAnswerError
from modelyard.model import Model, ModelInfo
from modelyard.patterns.combine import (
    FUSE_PROMPT,
    JUDGE_PROMPT,
    Tally,
    candidates_block,
    parse_pick,
    settled,
    tally,
)
from modelyard.patterns.ensemble_members import (
    Members,
    Outcome,
    Wait,
    agreement_on,
    problem_of,
    turnout_for,
)
from modelyard.patterns.normalise import Normaliser
from modelyard.patterns.records import (
    answered,
    common_capabilities,
    derived,
    emit,
    failed,
    fill,
    filled_size,
    raise_with,
    restamp,
    since_ms,
)
from modelyard.resilience.streams import interrupted
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

Combine = Literal["vote", "weighted_vote", "judge", "fuse"]


class EnsembleModel(Model):
    """Asks every member concurrently and combines their answers."""

    def __init__(
        self,
        name: str,
        members: Sequence[Model],
        *,
        normalise: Normaliser,
        normalise_name: str = "exact",
        combine: Combine = "vote",
        combiner: Model | None = None,
        prompt: str | None = None,
        quorum: int = 1,
        wait: Wait = "all",
        member_deadlines: Sequence[float | None] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.members = tuple(members)
        self.normalise = normalise
        self.normalise_name = normalise_name
        self.combine = combine
        self.combiner = combiner
        self.prompt = prompt or (FUSE_PROMPT if combine == "fuse" else JUDGE_PROMPT)
        self.quorum = quorum
        self.wait = wait
        self.member_deadlines = tuple(member_deadlines or [None] * len(self.members))
        self.deadline = deadline
        self._asking = Members(
            models=self.members,
            deadlines=self.member_deadlines,
            normalise=normalise,
            wait=wait,
        )
        answerers = [*self.members, *([combiner] if combine == "fuse" and combiner else [])]
        self.info = ModelInfo(
            name=name, kind="ensemble", capabilities=common_capabilities(answerers)
        )

    @property
    def children(self) -> Sequence[Model]:
        return (*self.members, *([self.combiner] if self.combiner is not None else []))

    @property
    def contenders(self) -> Sequence[Model]:
        fuser = self.combiner if self.combine == "fuse" else None  # a judge only picks
        return (*self.members, *([fuser] if fuser is not None else []))

    def worst_case_cost(self, request: ChatRequest) -> float:
        """Each member once, and a judge or fuser reading every member's answer at its
        longest: what budgets reserve (`cost.bounds`)."""
        from modelyard.cost.bounds import cost_bound, output_bytes_bound, reading

        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        total = sum(cost_bound(member, request) for member in self.members)
        if self.combiner is None:
            return total
        # Each candidate is numbered ("Answer 12:" and blank lines: 16 bytes at most).
        answers = sum(output_bytes_bound(member, request) + 16 for member in self.members)
        question = len(request.last_user_text.encode("utf-8"))
        size = filled_size(self.prompt, {"question": question, "candidates": answers})
        return total + cost_bound(self.combiner, reading(request, size, helper=True))

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": "ensemble",
            "combine": self.combine,
            "normalise": self.normalise_name,
            "quorum": self.quorum,
            "wait": self.wait,
        }
        if self.combiner is not None:
            out["judge" if self.combine == "judge" else "fuser"] = self.combiner.name
        if any(d is not None for d in self.member_deadlines):
            out["member_deadlines"] = ", ".join(
                f"{m.name}={d:g}s"
                for m, d in zip(self.members, self.member_deadlines, strict=True)
                if d
            )
        return out

    # --- asking the members -----------------------------------------------------------------

    async def gather(self, request: ChatRequest) -> list[Outcome]:
        """Every member's outcome, in member order (stragglers cancelled under `wait: quorum`,
        members past the settling point not asked under `wait: in_turn`)."""
        return await self._asking.gather(request, self._decided)

    def _decided(self, done: dict[int, Outcome], outstanding: list[int]) -> bool:
        if self.combine in ("judge", "fuse"):
            return sum(1 for o in done.values() if o.response is not None) >= self.quorum
        ordered = [done[i] for i in sorted(done)]
        votes = [o for o in ordered if o.key is not None]
        if len(votes) < self.quorum:
            return False
        result = self._tally(ordered)
        # A member still out adds at most weight 1 (a vote, or a confidence).
        return settled(result, float(len(outstanding)), min(outstanding, default=None))

    def _tally(self, outcomes: Sequence[Outcome]) -> Tally:
        keys = [o.key for o in outcomes]
        if self.combine == "weighted_vote":
            return tally(keys, [o.weight for o in outcomes])
        return tally(keys, [1.0 if o.response is not None else 0.0 for o in outcomes])

    # --- combining ----------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        outcomes, result, spent = await self._settle(request, started)
        if self.combine != "fuse":
            return await self._chosen(request, outcomes, result, spent, started)
        final = None
        fuse_request = self._fuse_request(request, outcomes)
        async for chunk in self._fuse(fuse_request, outcomes, result, spent, started, False):
            final = chunk.response or final
        assert final is not None
        return final

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        outcomes, result, spent = await self._settle(request, started)
        if self.combine == "fuse":
            fuse_request = self._fuse_request(request, outcomes)
            async for chunk in self._fuse(fuse_request, outcomes, result, spent, started, True):
                yield chunk
            return
        response = await self._chosen(request, outcomes, result, spent, started)
        for chunk in emit(response, True):
            yield chunk

    async def _settle(
        self, request: ChatRequest, started: float
    ) -> tuple[list[Outcome], Tally, float]:
        """Ask the members; raise NoAnswerError when the quorum is not met."""
        outcomes = await self.gather(request)
        spent = sum(o.cost for o in outcomes)
        usable = [
            o
            for o in outcomes
            if o.response is not None and (self.combine in ("judge", "fuse") or o.key is not None)
        ]
        result = self._tally([o for o in outcomes if o.left_out is None])
        if len(usable) < self.quorum:
            problems = "; ".join(problem_of(o) for o in outcomes if o not in usable)
            reason = (
                f"{len(usable)} of {len(self.members)} members gave a usable answer, "
                f"quorum is {self.quorum}: {problems}"
            )
            decision = self._decision(
                outcomes, result, None, reason, spent, started, (), error=reason
            )
            error = NoAnswerError(f"ensemble {self.name}: {reason}", model=self.name)
            raise raise_with(error, cost=spent, decision=decision)
        return outcomes, result, spent

    def _decision(
        self,
        outcomes: Sequence[Outcome],
        result: Tally,
        chosen: str | None,
        reason: str,
        cost: float,
        started: float,
        extra: tuple[Decision, ...],
        error: str | None = None,
    ) -> Decision:
        return Decision(
            node=self.name,
            kind="ensemble",
            chosen=chosen,
            reason=reason,
            scores=dict(result.votes),
            threshold=float(self.quorum),
            latency_ms=since_ms(started),
            cost=cost,
            error=error,
            children=(*(o.decision() for o in outcomes), *extra),
            details={
                "combine": self.combine,
                "agreement": agreement_on(outcomes, result.winner),
                "members": [o.summary() for o in outcomes],
            },
        )

    def _vote_answer(self, outcomes: Sequence[Outcome], result: Tally) -> tuple[Outcome, str]:
        counted = [o for o in outcomes if o.left_out is None]
        if result.first is None:
            first = next(o for o in counted if o.response is not None)
            return first, f"no answer could be read as {self.normalise_name}; first answer"
        winner = counted[result.first]
        turnout = turnout_for(counted, result.winner)
        if self.combine == "weighted_vote":
            weight = result.votes[result.winner or ""]
            return winner, (
                f"{result.winner!r} won with weight {weight:g} of {result.total:g}; {turnout}"
            )
        return winner, f"{result.winner!r} won with votes {turnout}"

    async def _judge(
        self, request: ChatRequest, usable: Sequence[Outcome]
    ) -> tuple[int | None, Decision, float, str]:
        assert self.combiner is not None
        texts = [o.response.text for o in usable if o.response is not None]
        prompt = fill(
            self.prompt, {"question": request.last_user_text, "candidates": candidates_block(texts)}
        )
        try:
            response = await self.combiner.complete(derived(request, prompt))
        except ModelError as exc:
            return None, failed(self.combiner, exc), exc.cost, f"judge failed ({exc.kind})"
        pick = parse_pick(response.text, texts)
        said = response.text.strip()[:40]
        why = (
            f"judge picked answer {pick + 1}"
            if pick is not None
            else f"judge said {said!r}, no pick"
        )
        return pick, answered(self.combiner, response), response.cost, why

    def _fuse_request(self, request: ChatRequest, outcomes: Sequence[Outcome]) -> ChatRequest:
        texts = [o.response.text for o in outcomes if o.response is not None]
        prompt = fill(
            self.prompt, {"question": request.last_user_text, "candidates": candidates_block(texts)}
        )
        return derived(request, prompt, system=request.system)

    async def _chosen(
        self,
        request: ChatRequest,
        outcomes: list[Outcome],
        result: Tally,
        spent: float,
        started: float,
    ) -> ChatResponse:
        """The voted (or judged) member's answer, with the ensemble's cost and record."""
        extra: tuple[Decision, ...] = ()
        if self.combine == "judge":
            usable = [o for o in outcomes if o.response is not None]
            pick, judged, judge_cost, why = await self._judge(request, usable)
            spent += judge_cost
            extra = (judged,)
            if pick is not None:
                winner, reason = usable[pick], why
            else:
                winner, voted = self._vote_answer(outcomes, result)
                reason = f"{why}; vote instead: {voted}"
        else:
            winner, reason = self._vote_answer(outcomes, result)
        assert winner.response is not None
        agreement = agreement_on(outcomes, winner.key)
        decision = self._decision(
            outcomes, result, winner.model.name, reason, spent, started, extra
        )
        return restamp(winner.response, cost=spent, decision=decision, confidence=agreement)

    async def _fuse(
        self,
        fuse_request: ChatRequest,
        outcomes: list[Outcome],
        result: Tally,
        spent: float,
        started: float,
        stream: bool,
    ) -> AsyncIterator[Chunk]:
        assert self.combiner is not None
        fuser = self.combiner
        agreement = agreement_on(outcomes, result.winner)
        sent = 0  # characters of the fused answer the caller has seen
        try:
            if stream:
                async for chunk in fuser.stream(fuse_request):
                    if chunk.response is None:
                        sent += chunk.chars
                        yield chunk
                        continue
                    yield Chunk(
                        response=self._fused(
                            chunk.response, outcomes, result, spent, started, agreement
                        )
                    )
                return
            response = await fuser.complete(fuse_request)
        except ModelError as exc:
            spent += exc.cost
            if sent:  # the vote's answer after part of the fused one would splice two texts
                raise self._fuse_cut(exc, outcomes, result, spent, started, sent) from None
            winner, voted = self._vote_answer(outcomes, result)
            assert winner.response is not None
            decision = self._decision(
                outcomes,
                result,
                winner.model.name,
                f"fuser failed ({exc.kind}); vote instead: {voted}",
                spent,
                started,
                (failed(fuser, exc),),
            )
            answer = restamp(winner.response, cost=spent, decision=decision, confidence=agreement)
            for chunk in emit(answer, stream):
                yield chunk
            return
        fused = self._fused(response, outcomes, result, spent, started, agreement)
        for chunk in emit(fused, stream):
            yield chunk

    def _fuse_cut(
        self,
        exc: ModelError,
        outcomes: list[Outcome],
        result: Tally,
        spent: float,
        started: float,
        sent: int,
    ) -> ModelError:
        """The error for a fused stream that broke after `sent` characters reached the caller."""
        assert self.combiner is not None
        error = interrupted(exc, model=self.combiner.name, sent_chars=sent)
        reason = f"fuser's stream broke after {sent} characters were sent; not spliced"
        extra = (failed(self.combiner, exc),)
        decision = self._decision(outcomes, result, None, reason, spent, started, extra, reason)
        return raise_with(error, cost=spent, decision=decision)

    def _fused(
        self,
        response: ChatResponse,
        outcomes: list[Outcome],
        result: Tally,
        spent: float,
        started: float,
        agreement: float,
    ) -> ChatResponse:
        assert self.combiner is not None
        total = spent + response.cost
        answered_count = sum(1 for o in outcomes if o.response is not None)
        decision = self._decision(
            outcomes,
            result,
            self.combiner.name,
            f"fuser merged {answered_count} answers",
            total,
            started,
            (answered(self.combiner, response),),
        )
        return restamp(response, cost=total, decision=decision, confidence=agreement)
