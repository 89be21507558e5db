"""Config for models that run in this process: scripted fakes, Python callables, llama.cpp,
local embedders and classifiers. The `type` key picks which.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat

from modelyard.config.base import Spec
from modelyard.config.replay import ReplaySpec


class ReplySpec(Spec):
    """One scripted outcome of a fake model."""

    text: str = ""
    error: str | None = None
    retry_after: NonNegativeFloat | None = None
    latency: NonNegativeFloat = 0.0
    confidence: float | None = Field(default=None, ge=0, le=1)
    logprob: float | None = Field(default=None, le=0)
    cut_after: int | None = Field(default=None, ge=0)


class FakeSpec(Spec):
    """A scripted model: known answers per prompt, a script in order, then a default."""

    type: Literal["fake"]
    answers: dict[str, ReplySpec | str] = Field(default_factory=dict)
    script: list[ReplySpec | str] = Field(default_factory=list)
    default: ReplySpec | str = "ok"
    latency: NonNegativeFloat = 0.0
    """Seconds every reply takes unless it says otherwise."""


class CallableSpec(Spec):
    """A Python function `module:function` taking a ChatRequest and returning text or a
    ChatResponse (sync or async)."""

    type: Literal["callable"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


LocalModelSpec = Annotated[FakeSpec | CallableSpec | ReplaySpec, Field(discriminator="type")]


class FakeEmbedderSpec(Spec):
    """A deterministic embedder for tests: hashed character trigrams, no model file."""

    type: Literal["hashing"]
    dimensions: int = Field(default=256, ge=8, le=4096)


LocalEmbedderSpec = Annotated[FakeEmbedderSpec, Field(discriminator="type")]
