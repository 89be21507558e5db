"""The one interface: a Model answers `complete(request)` and `stream(request)`.

Provider adapters, local models, patterns (router, cascade, ...) and wrappers (retry, fallback,
budget, cache, ...) are all Models, so they nest without glue. A Wrapper holds one inner Model
and changes one thing about it.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from modelyard.cost.prices import Price
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingRequest,
    EmbeddingResponse,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a model can do, as data. Patterns read these; nothing branches on provider names."""

    context_window: int | None = None
    max_output_tokens: int = 4096
    streaming: bool = True
    tools: bool = False
    vision: bool = False
    json_schema: bool = False
    logprobs: bool = False
    prefill: bool = False
    """Whether the model continues a trailing partial assistant message (Anthropic prefill)."""
    reasoning: bool = False
    """Whether the model takes `ChatRequest.thinking` (Anthropic extended thinking, OpenAI
    `reasoning_effort`, Gemini `thinkingBudget`); a model without it is sent none."""
    system_messages: bool = True
    """Whether the model takes a system message after the first turn where it stands
    (Anthropic's mid-conversation system messages: Claude Opus 4.8 on); a model without it gets
    such messages moved ahead of the first turn, into its system prompt."""
    choices: bool = True
    """Whether the model answers several choices to one request (`n > 1`, as a cascade's
    `samples` estimator asks `via: n`); the Anthropic Messages API answers one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """Everything static about a Model: its name, where it runs, what it can do, what it costs."""

    name: str
    kind: str
    provider: str | None = None
    model_id: str | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    price: Price = field(default_factory=Price)


class Model(abc.ABC):
    """Anything that answers a chat request."""

    info: ModelInfo

    @property
    def name(self) -> str:
        """The configured name; what decisions, logs and metrics call this node."""
        return self.info.name

    @property
    def children(self) -> Sequence[Model]:
        """The Models this one calls; empty for a leaf."""
        return ()

    @property
    def contenders(self) -> Sequence[Model]:
        """The children that answer the request itself, not those that only decide about it
        (a classifier, a verifier, a gate's checker, a judge): what `compare` and `calibrate`
        set beside the system, each alone. All the children unless a pattern says otherwise."""
        return self.children

    def describe(self) -> dict[str, object]:
        """What a person needs to know about this node in a tree or diagram (thresholds,
        rules, the pinned model id); patterns add their own settings."""
        info = self.info
        out: dict[str, object] = {"kind": info.kind}
        if info.provider:
            out["provider"] = info.provider
        if info.model_id and info.model_id != info.name:
            out["id"] = info.model_id
        return out

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer the request in full."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Answer as a stream of chunks, the last carrying the assembled response.

        The default answers in full and replays the answer as one chunk, for Models that
        cannot stream; streaming adapters and patterns override it.
        """
        response = await self.complete(request)
        for n, choice in enumerate(response.choices):
            yield Chunk(
                index=choice.index,
                text=choice.message.text,
                finish_reason=choice.finish_reason,
                model=None if n else response.model,
                usage=None if n else response.usage,
            )
        yield Chunk(response=response)

    async def aclose(self) -> None:
        """Release connections and other resources; children are closed by their owner."""


class Wrapper(Model):
    """A Model around one inner Model; by default it passes everything through."""

    def __init__(self, inner: Model, *, name: str | None = None) -> None:
        self.inner = inner
        self.info = inner.info if name is None else _renamed(inner.info, name)

    @property
    def children(self) -> Sequence[Model]:
        return (self.inner,)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.inner.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async for chunk in self.inner.stream(request):
            yield chunk


class Embedder(abc.ABC):
    """Anything that turns texts into vectors."""

    info: ModelInfo

    @property
    def name(self) -> str:
        """The configured name."""
        return self.info.name

    @abc.abstractmethod
    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """One vector per input text, in order."""

    async def aclose(self) -> None:
        """Release connections and other resources."""


def _renamed(info: ModelInfo, name: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        kind=info.kind,
        provider=info.provider,
        model_id=info.model_id,
        capabilities=info.capabilities,
        price=info.price,
    )


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading)."""
    return (time.perf_counter() - started) * 1000.0
