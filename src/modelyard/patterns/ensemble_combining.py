"""How an ensemble turns its members' outcomes into one answer: whether they settle it, the
quorum, the vote, the judge's pick or the fuser's merge (falling back to the vote when the
combiner fails), and the ensemble's decision record.

The pure policies (tallies, when one is settled, the prompts, reading a judge's pick) are
`combine.py`; asking the members is `ensemble_members.py`; `ensemble.py` is the Model that holds
both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from modelyard.errors import ModelError, NoAnswerError
from modelyard.model import Model
from modelyard.patterns.combine import Tally, candidates_block, parse_pick, settled, tally
from modelyard.patterns.ensemble_members import (
    Outcome,
    agreement_on,
    past_share_note,
    problem_of,
    turnout_for,
)
from modelyard.patterns.records import (
    answered,
    derived,
    emit,
    failed,
    fill,
    raise_with,
    restamp,
    since_ms,
)
from modelyard.resilience.deadline import DEADLINE, REQUEST_DEADLINE, within
from modelyard.resilience.streams import closing, interrupted
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

Combine = Literal["vote", "weighted_vote", "judge", "fuse"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Combining:
    """Combines an ensemble's member outcomes into its answer, with the decision that says how."""

    name: str
    """The ensemble's name, which its decision and errors carry."""
    combine: Combine
    combiner: Model | None
    """The judge or fuser."""
    prompt: str
    """The judge's or fuser's prompt."""
    quorum: int
    member_count: int
    """How many members the ensemble has (a missed quorum's "n of N")."""
    normalise_name: str

    def decided(self, done: dict[int, Outcome], outstanding: list[int]) -> bool:
        """Whether the members done settle the outcome whatever those outstanding say: for a
        judge or fuser once `quorum` answered, for a vote once `quorum` answers were read and
        the members still out can no longer change the winner."""
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

    def settle(self, outcomes: Sequence[Outcome], started: float) -> tuple[Tally, float]:
        """The vote over `outcomes` and what they spent; NoAnswerError when fewer than the
        quorum gave a usable answer."""
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
                f"{len(usable)} of {self.member_count} members gave a usable answer, "
                f"quorum is {self.quorum}: {problems}"
            )
            decision = self._decision(
                outcomes, result, None, reason, spent, started, (), error=reason
            )
            error = NoAnswerError(reason, model=self.name)  # said as "NAME: reason"
            raise raise_with(error, cost=spent, decision=decision)
        return result, spent

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
            reason=reason + past_share_note(outcomes, self.quorum),
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
        best = result.votes[result.winner or ""]
        tied = [repr(k) for k, v in result.votes.items() if v == best and k != result.winner]
        # `tally` gives a tie to the earliest member: say so, or the record reads as a win.
        tie = f"; tied with {', '.join(tied)}, the earliest member's answer wins" if tied else ""
        if self.combine == "weighted_vote":
            return winner, (
                f"{result.winner!r} won with weight {best:g} of {result.total:g}; {turnout}{tie}"
            )
        return winner, f"{result.winner!r} won with votes {turnout}{tie}"

    @property
    def role(self) -> str:
        """What the combiner is called in records: judge or fuser."""
        return "judge" if self.combine == "judge" else "fuser"

    async def _asked(self, request: ChatRequest) -> ChatResponse:
        """The combiner's answer to `request`, abandoned at its deadline: one that ignores it
        must not hold the ensemble until an outer node's deadline fails the whole request,
        when the vote can still answer. At the deadline itself, not `GRACE` after it: the
        outer node's cut comes then, and the vote must be in before."""
        assert self.combiner is not None
        call = self.combiner.complete(request)
        return await within(call, request, self.combiner, grace=0.0, whose=REQUEST_DEADLINE)

    async def _fuser_stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The fuser's stream, abandoned at the deadline (as `_asked`) until its first text:
        after that the vote can no longer stand in for it, and an outer deadline ends it."""
        assert self.combiner is not None
        async with closing(self.combiner.stream(request)) as chunks:
            iterator = aiter(chunks)
            waiting = True
            while True:
                step = anext(iterator)
                if waiting:
                    step = within(step, request, self.combiner, grace=0.0, whose=REQUEST_DEADLINE)
                try:
                    chunk = await step
                except StopAsyncIteration:
                    return
                waiting = waiting and not chunk.chars
                yield chunk

    def _failed_why(self, exc: ModelError, request: ChatRequest) -> str:
        """Why the combiner gave no answer, for the reason: a deadline that passed (it ran
        past it and was cut, or said so itself) is named as such."""
        left = request.remaining()
        if exc.code == DEADLINE and left is not None and left <= 0:
            return f"the deadline passed before the {self.role} answered"
        return f"{self.role} failed ({exc.kind})"

    def _out_of_time(self, request: ChatRequest) -> Decision | None:
        """The record of a judge or fuser not asked because no time is left for it (the
        members, or an outer node, used it all): a call past its deadline could only fail."""
        assert self.combiner is not None
        left = request.remaining()
        if left is None or left > 0:
            return None
        return Decision(
            node=self.combiner.name,
            kind="model",
            reason=f"not asked: no time was left for the {self.role} before the deadline",
            # The ledger counts calls: a combiner never asked was not one.
            details={"not_asked": True},
        )

    async def _judge(
        self, request: ChatRequest, usable: Sequence[Outcome]
    ) -> tuple[int | None, Decision, float, str]:
        assert self.combiner is not None
        skipped = self._out_of_time(request)
        if skipped is not None:
            return None, skipped, 0.0, "no time left for the judge"
        texts = [o.response.text for o in usable if o.response is not None]
        prompt = fill(
            self.prompt, {"question": request.last_user_text, "candidates": candidates_block(texts)}
        )
        asked = derived(request, prompt)
        try:
            response = await self._asked(asked)
        except ModelError as exc:
            return None, failed(self.combiner, exc), exc.cost, self._failed_why(exc, asked)
        pick = parse_pick(response.text, texts)
        said = response.text.strip()[:40]
        why = (
            f"judge picked answer {pick + 1}"
            if pick is not None
            else f"judge said {said!r}, no pick"
        )
        return pick, answered(self.combiner, response), response.cost, why

    def fuse_request(self, request: ChatRequest, outcomes: Sequence[Outcome]) -> ChatRequest:
        """What the fuser is asked: the question and every answer, under the request's system."""
        texts = [o.response.text for o in outcomes if o.response is not None]
        prompt = fill(
            self.prompt, {"question": request.last_user_text, "candidates": candidates_block(texts)}
        )
        return derived(request, prompt, system=request.system)

    async def chosen(
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

    async def fuse(
        self,
        fuse_request: ChatRequest,
        outcomes: list[Outcome],
        result: Tally,
        spent: float,
        started: float,
        stream: bool,
    ) -> AsyncIterator[Chunk]:
        """The fuser's merged answer, streamed or whole; the vote's answer when the fuser fails
        before any of its text reached the caller."""
        assert self.combiner is not None
        fuser = self.combiner
        agreement = agreement_on(outcomes, result.winner)
        skipped = self._out_of_time(fuse_request)
        if skipped is not None:
            why = "no time left for the fuser"
            answer = self._vote_instead(outcomes, result, spent, started, why, skipped)
            for chunk in emit(answer, stream):
                yield chunk
            return
        sent = 0  # characters of the fused answer the caller has seen
        try:
            if stream:
                async for chunk in self._fuser_stream(fuse_request):
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
            response = await self._asked(fuse_request)
        except ModelError as exc:
            spent += exc.cost
            if sent:  # the vote's answer after part of the fused one would splice two texts
                raise self._fuse_cut(exc, outcomes, result, spent, started, sent) from None
            why = self._failed_why(exc, fuse_request)
            answer = self._vote_instead(outcomes, result, spent, started, why, failed(fuser, exc))
            for chunk in emit(answer, stream):
                yield chunk
            return
        fused = self._fused(response, outcomes, result, spent, started, agreement)
        for chunk in emit(fused, stream):
            yield chunk

    def _vote_instead(
        self,
        outcomes: list[Outcome],
        result: Tally,
        spent: float,
        started: float,
        why: str,
        record: Decision,
    ) -> ChatResponse:
        """The vote's answer when the fuser gave none (`why`, its `record`)."""
        winner, voted = self._vote_answer(outcomes, result)
        assert winner.response is not None
        reason = f"{why}; vote instead: {voted}"
        decision = self._decision(
            outcomes, result, winner.model.name, reason, spent, started, (record,)
        )
        agreement = agreement_on(outcomes, result.winner)
        return restamp(winner.response, cost=spent, decision=decision, confidence=agreement)

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
