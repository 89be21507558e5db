"""A Model that answers from recorded outcomes, so any router, cascade or ensemble can run
offline on what real models really answered.

The replayed model sees only the request: it looks up the last user message (after whitespace
normalisation) and returns the named model's recorded text, usage and cost. The recorded
correctness travels in the decision (`details["recorded_score"]`) for the `recorded` scorer;
patterns never read it, and nothing here reads an item's label.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace

from modelyard.cost.dispatch import mark_sent
from modelyard.cost.prices import Price, estimate_input_tokens, estimate_tokens
from modelyard.errors import ModelTimeoutError, NotFoundError
from modelyard.evaluation.recordings import Outcome, Recordings, normalize_prompt
from modelyard.model import Model, ModelInfo, elapsed_ms
from modelyard.types import ChatRequest, ChatResponse, Choice, Decision, Message, Usage

RECORDED_SCORE = "recorded_score"
"""The decision detail holding the answering model's recorded correctness."""
RECORDED_MODEL = "recorded_model"
"""The decision detail naming the recorded model a replayed answer came from (on every replayed
answer, also one whose correctness was not recorded)."""


def _shared(texts: list[str]) -> str:
    """The longest start all of `texts` share."""
    low, high = min(texts), max(texts)  # what these two share, every text between shares
    n = next((i for i, (a, b) in enumerate(zip(low, high, strict=False)) if a != b), len(low))
    return low[:n]


def _affixes(recorded: list[str]) -> tuple[str, str]:
    """The start and the (reversed) end that all of `recorded` share; none for one prompt."""
    if len(recorded) < 2:
        return "", ""
    return _shared(recorded), _shared([r[::-1] for r in recorded])


def _distinct(prompt: str, affixes: tuple[str, str], width: int = 80) -> str:
    """The part of `prompt` that tells it apart, quoted: the recorded prompts of one benchmark
    often share a long start (few-shot examples) and end (the answer format), `affixes`,
    which are cut."""
    text = normalize_prompt(prompt)
    start, end = affixes
    head, tail = len(_shared([text, start])), len(_shared([text[::-1], end]))
    head = text.rfind(" ", 0, head) + 1  # whole words: 'Georgina', not '…ina'
    cut = text.find(" ", len(text) - tail)
    tail = len(text) - cut if cut >= 0 else 0
    head, tail = (head, tail) if head + tail < len(text) else (0, 0)
    core = text[head : len(text) - tail]
    more = len(core) > width or tail
    return ("…" if head else "") + repr(core[:width]) + ("…" if more else "")


class ReplayModel(Model):
    """Answers each prompt with `model`'s recorded outcome in `recordings`."""

    def __init__(
        self,
        info: ModelInfo,
        recordings: Recordings,
        model: str,
        *,
        price: Price | None = None,
        latency: float = 0.0,
        recorded_latency: float | None = None,
    ) -> None:
        self.info = replace(info, price=price) if price is not None else info
        self.recordings = recordings
        self.model = model
        self.latency = latency
        self.recorded_latency = recorded_latency
        """The scale of the recorded latencies waited, or None to wait `latency` always."""
        self._ids = itertools.count()
        self._affixes: tuple[str, str] | None = None

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out["replays"] = self.model
        return out

    def _quoted(self, prompt: str) -> str:
        if self._affixes is None:  # when a prompt is first missing: a pass over every prompt
            self._affixes = _affixes(list(self.recordings.index))
        return _distinct(prompt, self._affixes)

    def outcome(self, request: ChatRequest) -> Outcome:
        """The recorded outcome for this request; NotFoundError when there is none."""
        prompt = request.last_user_text
        item = self.recordings.lookup(prompt)
        if item is None:
            raise NotFoundError(
                f"no recording for prompt {self._quoted(prompt)} in {self.recordings.source}",
                model=self.name,
                code="not_recorded",
            )
        outcome = item.outcomes.get(self.model)
        if outcome is None:
            raise NotFoundError(
                f"{self.model!r} has no recorded outcome for prompt {self._quoted(prompt)} "
                f"(item {item.id})",
                model=self.name,
                code="not_recorded",
            )
        return outcome

    def _usage(self, request: ChatRequest, outcome: Outcome) -> Usage:
        estimated = outcome.input_tokens is None or outcome.output_tokens is None
        return Usage(
            input_tokens=outcome.input_tokens
            if outcome.input_tokens is not None
            else estimate_input_tokens(request),
            output_tokens=outcome.output_tokens
            if outcome.output_tokens is not None
            else estimate_tokens(outcome.text),
            estimated=estimated,
        )

    def _seconds(self, outcome: Outcome) -> float:
        """How long the answer takes: its recorded latency scaled, else `latency`."""
        if self.recorded_latency is not None and outcome.latency_ms is not None:
            return outcome.latency_ms / 1000 * self.recorded_latency
        return self.latency

    async def _wait(self, request: ChatRequest, seconds: float) -> None:
        left = request.remaining()
        if left is not None and left < seconds:
            await asyncio.sleep(max(0.0, left))
            raise ModelTimeoutError(
                f"no answer within the deadline ({seconds:.3f}s needed)", model=self.name
            )
        await asyncio.sleep(seconds)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        mark_sent()  # stands in for the provider that was recorded
        outcome = self.outcome(request)
        seconds = self._seconds(outcome)
        if seconds:
            await self._wait(request, seconds)
        usage = self._usage(request, outcome)
        cost = outcome.cost if outcome.cost is not None else self.info.price.cost(usage)
        reported = outcome.provider_model or self.model
        details: dict[str, object] = {RECORDED_MODEL: self.model}
        if outcome.score is not None:
            details[RECORDED_SCORE] = outcome.score
        if outcome.synthetic:
            details["synthetic_text"] = True
        if outcome.latency_ms is not None:
            details["recorded_latency_ms"] = outcome.latency_ms
        decision = Decision(
            node=self.name,
            kind="model",
            chosen=reported,
            reason="replayed",
            latency_ms=elapsed_ms(started),
            cost=cost,
            details=details,
            usage=usage,
        )
        return ChatResponse(
            id=f"replay-{next(self._ids)}",
            model=self.name,
            provider_model=reported,
            choices=(Choice(message=Message(role="assistant", content=outcome.text)),),
            usage=usage,
            cost=cost,
            created=int(time.time()),
            decision=decision,
            confidence=outcome.confidence,
        )
