"""The response of a local model whose answer is one short text with a confidence: a language
code, a class label, an FAQ answer. One place builds it, so all of them look alike."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from modelyard.cost.prices import estimate_input_tokens, estimate_tokens
from modelyard.model import ModelInfo, elapsed_ms
from modelyard.types import ChatRequest, ChatResponse, Choice, Decision, Message, Usage


def scored_answer(
    info: ModelInfo,
    request: ChatRequest,
    text: str,
    *,
    confidence: float,
    scores: Mapping[str, float],
    started: float,
    reason: str,
    extra_cost: float = 0.0,
    details: Mapping[str, Any] | None = None,
) -> ChatResponse:
    """A one-choice response with `confidence`, and a decision recording every score.

    Usage is estimated from text length (these models have no generation tokens to count);
    `extra_cost` is what the model paid others, e.g. a hosted embedder.
    """
    usage = Usage(
        input_tokens=estimate_input_tokens(request),
        output_tokens=estimate_tokens(text),
        estimated=True,
    )
    cost = info.price.cost(usage) + extra_cost
    decision = Decision(
        node=info.name,
        kind="model",
        chosen=text if len(text) <= 80 else text[:77] + "...",
        reason=reason,
        scores=dict(scores),
        latency_ms=elapsed_ms(started),
        cost=cost,
        details=dict(details or {}),
        usage=usage,
    )
    return ChatResponse(
        id=f"{info.kind}-{secrets.token_hex(8)}",
        model=info.name,
        provider_model=info.model_id or info.name,
        choices=(Choice(message=Message(role="assistant", content=text)),),
        usage=usage,
        cost=cost,
        created=int(time.time()),
        decision=decision,
        confidence=confidence,
    )
