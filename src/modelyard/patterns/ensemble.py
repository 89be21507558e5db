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

Under a deadline, a judge or fuser keeps `combiner_share` (default a quarter) of the time left
when the ensemble starts: once the members' share (the rest) has passed and `quorum` of them
have answered, the members still out are cut, counting as failed, so the judge has time to read
what did arrive. With fewer answers in at the share the members run on, as cutting them would
fail the request: the stragglers are cut as soon as the quorum is in, else at the deadline. When
no time is left for the judge all the same (the members or an outer node's deadline used it),
it is not asked and the vote decides; one that runs past the deadline (a Model that ignores
it) is cut at it, a fuser's stream until its first text, and the vote decides too. The record
says which, and names the members that ran past their share.

`response.confidence` is the agreement: the share of members (cancelled or not asked ones
aside) whose normalised answer is the chosen one, so a cascade stage can accept on it. Failed
members and unreadable answers count as not agreeing, and the reason says how many there were.
Cost is every member's plus the judge's or fuser's; a straggler cancelled (or cut at its
deadline) counts at its input if its request was sent, which the provider bills, and at nothing
if it was still waiting to be sent (for a rate-limit or concurrency slot, say): what its budget
guard settles either way (`cost.dispatch`). A straggler that is a pattern also counts the calls
it had finished (a cascade past its first stage, a pipeline past its draft).

Asking the members and what each did is `ensemble_members.py`, and combining their answers
(the quorum, the vote, the judge or fuser, the decision record) `ensemble_combining.py`; this
module is the Model that holds them: its shape, its worst-case cost and its two calls.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from modelyard.model import Model, ModelInfo
from modelyard.patterns.combine import FUSE_PROMPT, JUDGE_PROMPT, Tally
from modelyard.patterns.ensemble_combining import Combine, Combining
from modelyard.patterns.ensemble_members import Members, Outcome, Wait
from modelyard.patterns.normalise import Normaliser
from modelyard.patterns.records import common_capabilities, emit, filled_size
from modelyard.types import ChatRequest, ChatResponse, Chunk

DEFAULT_COMBINER_SHARE = 0.25
"""Of the time left when an ensemble starts, what its judge or fuser keeps under a deadline."""


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
        combiner_share: float = DEFAULT_COMBINER_SHARE,
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
        self.combiner_share = combiner_share if combiner is not None else 0.0
        role = "judge" if combine == "judge" else "fuser"
        self._asking = Members(
            models=self.members,
            deadlines=self.member_deadlines,
            normalise=normalise,
            wait=wait,
            share=1.0 - self.combiner_share,
            share_name=(
                f"the members' share of the deadline (the {role} keeps {combiner_share:.0%})"
            ),
        )
        self._combining = Combining(
            name=name,
            combine=combine,
            combiner=combiner,
            prompt=self.prompt,
            quorum=quorum,
            member_count=len(self.members),
            normalise_name=normalise_name,
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
            out["combiner_share"] = self.combiner_share
        if any(d is not None for d in self.member_deadlines):
            out["member_deadlines"] = ", ".join(
                f"{m.name}={d:g}s"
                for m, d in zip(self.members, self.member_deadlines, strict=True)
                if d
            )
        return out

    async def gather(self, request: ChatRequest) -> list[Outcome]:
        """Every member's outcome, in member order (stragglers cancelled under `wait: quorum`,
        members past the settling point not asked under `wait: in_turn`)."""
        return await self._asking.gather(request, self._combining.decided)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        outcomes, result, spent = await self._settle(request, started)
        if self.combine != "fuse":
            return await self._combining.chosen(request, outcomes, result, spent, started)
        final = None
        fuse_request = self._combining.fuse_request(request, outcomes)
        fused = self._combining.fuse(fuse_request, outcomes, result, spent, started, False)
        async for chunk in fused:
            final = chunk.response or final
        assert final is not None
        return final

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        outcomes, result, spent = await self._settle(request, started)
        if self.combine == "fuse":
            fuse_request = self._combining.fuse_request(request, outcomes)
            fused = self._combining.fuse(fuse_request, outcomes, result, spent, started, True)
            async for chunk in fused:
                yield chunk
            return
        response = await self._combining.chosen(request, outcomes, result, spent, started)
        for chunk in emit(response, True):
            yield chunk

    async def _settle(
        self, request: ChatRequest, started: float
    ) -> tuple[list[Outcome], Tally, float]:
        """Ask the members, within what the judge or fuser leaves them once the quorum is in;
        raise NoAnswerError when the quorum is not met."""
        outcomes = await self.gather(request)
        result, spent = self._combining.settle(outcomes, started)
        return outcomes, result, spent
