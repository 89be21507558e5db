"""Config for models that run in this process: scripted fakes, Python callables, llama.cpp,
local embedders and classifiers. The `type` key picks which.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, field_validator, model_validator

from modelyard.config.base import Spec
from modelyard.config.replay import ReplaySpec
from modelyard.errors import ERROR_KINDS
from modelyard.suggest import did_you_mean


class ReplySpec(Spec):
    """One scripted outcome of a fake model."""

    text: str = ""
    error: str | None = None
    retry_after: NonNegativeFloat | None = None
    latency: NonNegativeFloat = 0.0
    confidence: float | None = Field(default=None, ge=0, le=1)
    logprob: float | None = Field(default=None, le=0)
    cut_after: int | None = Field(default=None, ge=0)

    @field_validator("error")
    @classmethod
    def _known_kind(cls, kind: str | None) -> str | None:
        if kind is not None and kind not in ERROR_KINDS:
            hint = did_you_mean(kind, ERROR_KINDS, listed="expected one of")
            raise ValueError(f"unknown error kind {kind!r}{hint}")
        return kind


class FakeSpec(Spec):
    """A scripted model: known answers per prompt, a script in order, then a default. Billed as
    a provider bills: a reply slower than the deadline is cut there and costs its input, a
    stream cut by `cut_after` its input and the text sent; a scripted error costs nothing."""

    type: Literal["fake"]
    answers: dict[str, ReplySpec | str] = Field(default_factory=dict)
    script: list[ReplySpec | str] = Field(default_factory=list)
    default: ReplySpec | str = "ok"
    latency: NonNegativeFloat = 0.0
    """Seconds every reply takes unless it says otherwise."""


class CallableSpec(Spec):
    """A Python function `module:function` taking a ChatRequest and returning text or a
    ChatResponse (sync or async); or a `factory` that makes that function once, at load, from
    the data `files` it is given. A sync function runs in a worker thread (so it must be safe
    to call from several at once). One still running at the request's deadline is abandoned
    then (a sync one's thread runs on to its end)."""

    type: Literal["callable"]
    function: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    factory: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`module:function` called once with `files` as keyword arguments (pathlib.Path values);
    it returns the answering function."""
    files: dict[str, str] = Field(default_factory=dict)
    """Files the factory reads, by keyword argument name, relative to this config file."""

    @model_validator(mode="after")
    def _function_or_factory(self) -> CallableSpec:
        if (self.function is None) == (self.factory is None):
            raise ValueError(
                "give either 'function' (answers each request) or 'factory' (makes that "
                "function at load from 'files'), not both"
            )
        if self.files and self.factory is None:
            raise ValueError("'files' are passed to a 'factory'; use factory instead of function")
        return self


class LlamaCppSpec(Spec):
    """A GGUF chat model run in this process by llama.cpp (needs the `local` extra)."""

    type: Literal["llama_cpp"]
    gguf: str = "smollm2"
    """A .gguf path (relative to this file) or an alias of a packaged model: `smollm2`."""
    n_ctx: int = Field(default=2048, ge=256, le=131072)
    """Context window in tokens: prompt plus answer."""
    threads: int = Field(default=1, ge=1, le=256)
    """CPU threads. More only help on an idle machine: on a busy one llama.cpp's threads wait
    for each other by spinning, and 2 threads ran 30x slower than 1 on a loaded 2-core box."""
    seed: int | None = None
    """Sampling seed when the request sets none; unset draws a fresh one per generation."""
    temperature: float = Field(default=0.2, ge=0, le=2)
    """Used when the request sets none; 0 is greedy (deterministic)."""
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.1, ge=1, le=2)


class LangDetectSpec(Spec):
    """Language identification with fastText lid.176 (bundled lite model, 176 languages)."""

    type: Literal["langdetect"]
    top_k: int = Field(default=3, ge=1, le=20)
    """How many candidate languages the decision records."""
    max_chars: int = Field(default=200, ge=10, le=100_000)
    """Only the start of a long message is looked at."""


class ClassifierSpec(Spec):
    """A text classifier on an embedder's vectors, trained from labelled examples at load."""

    type: Literal["classifier"]
    embedder: str
    """Name of an entry of `embedders:`."""
    method: Literal["centroid", "logistic"] = "centroid"
    examples: dict[str, list[str]] | None = None
    """Inline examples: `{label: [text, ...]}`."""
    examples_file: str | None = None
    """JSONL of `{"text", "label"}` or CSV with `text,label` columns, relative to this file."""
    temperature: PositiveFloat | None = None
    """centroid only: softmax temperature over cosine similarities; unset = fitted by
    leave-one-out log-loss on the examples."""
    l2: PositiveFloat | None = None
    """logistic only: L2 penalty (default 0.001); larger gives softer probabilities."""

    @model_validator(mode="after")
    def _settings_match_method(self) -> ClassifierSpec:
        if self.examples is None and self.examples_file is None:
            raise ValueError("give labelled examples: 'examples' inline or an 'examples_file'")
        if self.method == "logistic" and self.temperature is not None:
            raise ValueError("'temperature' applies to method centroid; use 'l2' for logistic")
        if self.method == "centroid" and self.l2 is not None:
            raise ValueError("'l2' applies to method logistic; use 'temperature' for centroid")
        return self


class RetrieverSpec(Spec):
    """An FAQ answerer: the answer of the knowledge-base question closest to the message."""

    type: Literal["retriever"]
    embedder: str
    """Name of an entry of `embedders:`."""
    knowledge_base: str
    """JSONL of `{"question": text or [paraphrases], "answer", "id"?}`, relative to this file."""
    top_k: int = Field(default=3, ge=1, le=100)
    """How many best matches the decision records."""
    refuse_below: float | None = Field(default=None, ge=0, le=1)
    """Raise NoAnswerError when the best similarity is below this; unset always answers."""


LocalModelSpec = Annotated[
    FakeSpec
    | CallableSpec
    | LlamaCppSpec
    | LangDetectSpec
    | ClassifierSpec
    | RetrieverSpec
    | ReplaySpec,
    Field(discriminator="type"),
]


class FakeEmbedderSpec(Spec):
    """A deterministic embedder for tests: hashed character trigrams, no model file."""

    type: Literal["hashing"]
    dimensions: int = Field(default=256, ge=8, le=4096)


class MiniLMSpec(Spec):
    """all-MiniLM-L6-v2 (int8 ONNX, 384-d) on onnxruntime; needs the `local` extra."""

    type: Literal["minilm"]
    threads: int = Field(default=1, ge=1, le=256)
    batch_size: int = Field(default=32, ge=1, le=1024)
    cache_size: int = Field(default=4096, ge=0)
    """Recent texts whose vectors are kept, so a repeated prompt is not embedded again."""
    max_length: int = Field(default=256, ge=8, le=512)
    """Word pieces per text; longer texts are cut (sentence-transformers uses 256)."""


LocalEmbedderSpec = Annotated[FakeEmbedderSpec | MiniLMSpec, Field(discriminator="type")]
