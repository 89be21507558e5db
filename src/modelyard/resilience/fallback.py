"""Fallback: try each Model of a chain in order until one answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from modelyard.errors import ModelError, NoAnswerError
from modelyard.model import Model, ModelInfo, elapsed_ms
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision


class FallbackModel(Model):
    """Answers with the first member of `chain` that succeeds; the caller sees the first
    member's error if all fail, never a later fallback's unrelated one."""

    def __init__(self, name: str, chain: Sequence[Model]) -> None:
        self.chain = tuple(chain)
        first = self.chain[0].info
        self.info = ModelInfo(
            name=name, kind="fallback", capabilities=first.capabilities, price=first.price
        )

    @property
    def children(self) -> Sequence[Model]:
        return self.chain

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        attempts: list[Decision] = []
        spent = 0.0
        first_error: ModelError | None = None
        for member in self.chain:
            try:
                response = await member.complete(request)
            except ModelError as exc:
                first_error = first_error or exc
                spent += exc.cost
                attempts.append(exc.decision or _failed(member, exc))
                continue
            attempts.append(response.decision or _answered(member, response))
            decision = Decision(
                node=self.name,
                kind="fallback",
                chosen=member.name,
                reason="first member answered"
                if len(attempts) == 1
                else f"{len(attempts) - 1} member(s) failed before {member.name} answered",
                latency_ms=elapsed_ms(started),
                cost=spent + response.cost,
                children=tuple(attempts),
            )
            from dataclasses import replace

            return replace(response, cost=spent + response.cost, decision=decision)
        assert first_error is not None
        raise _exhausted(self.name, first_error, attempts, spent, started)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        response = await self.complete(request)
        from modelyard.streaming import response_chunks

        for chunk in response_chunks(response):
            yield chunk


def _failed(member: Model, exc: ModelError) -> Decision:
    return Decision(node=member.name, kind="model", reason="failed", error=str(exc), cost=exc.cost)


def _answered(member: Model, response: ChatResponse) -> Decision:
    return Decision(node=member.name, kind="model", reason="answered", cost=response.cost)


def _exhausted(
    name: str, first: ModelError, attempts: list[Decision], spent: float, started: float
) -> ModelError:
    first.cost = spent
    decision = Decision(
        node=name,
        kind="fallback",
        reason=f"all {len(attempts)} members failed; reporting the first error",
        latency_ms=elapsed_ms(started),
        cost=spent,
        error=str(first),
        children=tuple(attempts),
    )
    if not isinstance(first, ModelError):  # pragma: no cover - defensive
        return NoAnswerError("no member answered").with_decision(decision)
    return first.with_decision(decision)
