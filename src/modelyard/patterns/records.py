"""The bookkeeping every pattern shares: attempt records, re-stamped responses, score vectors.

A pattern answers with one child's response, but its cost, decision and (sometimes) confidence
are its own. These helpers build those without `dataclasses.replace`, which costs several
microseconds a call on the hot path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.errors import ModelError
from modelyard.model import Capabilities, Model
from modelyard.streaming import response_chunks
from modelyard.types import ChatRequest, ChatResponse, Choice, Chunk, Decision, Message

_KEEP: Any = object()


def answered(model: Model, response: ChatResponse) -> Decision:
    """The decision record of a child that answered (its own, or a minimal one)."""
    decision = response.decision
    if decision is not None:
        return decision
    return Decision(
        node=model.name, kind="model", reason="answered", cost=response.cost, usage=response.usage
    )


def failed(model: Model, error: ModelError, latency_ms: float = 0.0) -> Decision:
    """The decision record of a child that failed: the one it attached, or a minimal one
    taking `latency_ms` (what the caller measured, say until it cut the child off)."""
    decision = error.decision
    if decision is not None:
        return decision
    return Decision(
        node=model.name,
        kind="model",
        reason="failed",
        latency_ms=latency_ms,
        error=f"{error.kind}: {error}",
        cost=error.cost,
        usage=error.usage,
    )


def restamp(
    response: ChatResponse,
    *,
    cost: float,
    decision: Decision,
    confidence: float | None = _KEEP,
    choices: tuple[Choice, ...] | None = None,
) -> ChatResponse:
    """`response` with this pattern's total cost and decision (and optionally confidence)."""
    return ChatResponse(
        id=response.id,
        model=response.model,
        provider_model=response.provider_model,
        choices=response.choices if choices is None else choices,
        usage=response.usage,
        cost=cost,
        created=response.created,
        decision=decision,
        confidence=response.confidence if confidence is _KEEP else confidence,
        system_fingerprint=response.system_fingerprint,
    )


def raise_with(error: ModelError, *, cost: float, decision: Decision) -> ModelError:
    """`error` carrying what the failing pattern spent, its partial decision record, and the
    pattern in its `path`."""
    error.cost = cost
    return error.came_through(decision.node).with_decision(decision)


def since_ms(started: float) -> float:
    """Milliseconds since a `time.perf_counter()` reading."""
    return (time.perf_counter() - started) * 1000.0


def common_capabilities(models: Sequence[Model]) -> Capabilities:
    """What every one of `models` can do: a pattern promises only what all its answerers can."""
    caps = [m.info.capabilities for m in models]
    if not caps:
        return Capabilities()
    windows = [c.context_window for c in caps if c.context_window is not None]
    return Capabilities(
        context_window=min(windows) if len(windows) == len(caps) else None,
        max_output_tokens=min(c.max_output_tokens for c in caps),
        streaming=all(c.streaming for c in caps),
        tools=all(c.tools for c in caps),
        vision=all(c.vision for c in caps),
        json_schema=all(c.json_schema for c in caps),
        logprobs=all(c.logprobs for c in caps),
        prefill=all(c.prefill for c in caps),
        choices=all(c.choices for c in caps),
    )


class ScoreVector(Mapping[str, float]):
    """Scores of many candidates as a read-only mapping over a shared name tuple and an array.

    Recording a score per candidate must not cost a dict of 1,000 entries per request: this
    is built in constant time and turned into plain floats only when someone reads it.
    """

    __slots__ = ("_index", "_names", "_values")

    def __init__(
        self,
        names: Sequence[str],
        values: npt.NDArray[np.float64],
        index: Mapping[str, int] | None = None,
    ) -> None:
        self._names = names
        self._values = values
        self._index = index

    def __getitem__(self, key: str) -> float:
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self._names)}
        return float(self._values[self._index[key]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"ScoreVector({dict(self)!r})"


def derived(request: ChatRequest, text: str, system: str | None = None) -> ChatRequest:
    """A new one-message request for a helper call (judge, checker, verifier) that keeps the
    caller's deadline, key, tags and metadata, so budgets and limits still apply."""
    return ChatRequest(
        messages=(Message(role="user", content=text),),
        system=system,
        metadata=request.metadata,
        tags=request.tags,
        key_id=request.key_id,
        deadline=request.deadline,
    )


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `{name}` of `values` replaced: plain replacement, never `format`,
    so braces in user text are left alone."""
    if not values:
        return template
    pattern = re.compile("{(" + "|".join(re.escape(k) for k in values) + ")}")
    return pattern.sub(lambda m: values[m.group(1)], template)


def filled_size(template: str, sizes: Mapping[str, int]) -> int:
    """The most bytes `fill(template, values)` returns when each value is at most
    `sizes[name]` bytes (for cost bounds)."""
    size = len(template.encode("utf-8"))
    return size + sum(template.count("{" + name + "}") * most for name, most in sizes.items())


def emit(response: ChatResponse, stream: bool) -> list[Chunk]:
    """A finished answer as stream chunks, or as the one final chunk when not streaming."""
    return response_chunks(response) if stream else [Chunk(response=response)]
