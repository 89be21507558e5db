"""The simplest local Models: a Python function as a model, a disabled stand-in, and a hashing
embedder that needs no model file (for tests and dry runs)."""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import numpy as np

from modelyard.cost.dispatch import mark_sent
from modelyard.cost.prices import (
    estimate_embedding_tokens,
    estimate_input_tokens,
    estimate_tokens,
)
from modelyard.errors import (
    BadRequestError,
    BadResponseError,
    ModelError,
    UnavailableError,
)
from modelyard.functions import SHARED_THREADS, FunctionThreads, call_function
from modelyard.model import Embedder, Model, ModelInfo, elapsed_ms
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    Usage,
)

Function = Callable[[ChatRequest], "str | ChatResponse | Awaitable[str | ChatResponse]"]


class FunctionModel(Model):
    """A Model whose answer is whatever a Python function returns (text or a ChatResponse)."""

    def __init__(
        self,
        info: ModelInfo,
        function: Function,
        *,
        source: str | None = None,
        threads: FunctionThreads = SHARED_THREADS,
    ) -> None:
        self.info = info
        self.function = function
        self.source = source
        """The `module:function` it came from, for trees and diagrams."""
        self.threads = threads
        self._ids = itertools.count()

    @property
    def _what(self) -> str:
        """How errors name the function: by its `module:function` when it came from config."""
        return "function" if self.source is None else f"function {self.source}"

    def describe(self) -> dict[str, object]:
        out = super().describe()
        if self.source is not None:
            out["function"] = self.source
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        mark_sent()  # an in-process model starts at once
        try:
            result = await call_function(self.function, request, threads=self.threads)
        except ModelError:
            raise
        except Exception as exc:
            raise BadResponseError(
                f"{self._what} raised {type(exc).__name__}: {exc}",
                model=self.name,
                retryable=False,
            ) from exc
        if isinstance(result, ChatResponse):
            return result
        if not isinstance(result, str):
            raise BadResponseError(
                f"{self._what} returned {type(result).__name__}; expected str or ChatResponse",
                model=self.name,
                retryable=False,
            )
        usage = Usage(
            input_tokens=estimate_input_tokens(request),
            output_tokens=estimate_tokens(result),
            estimated=True,
        )
        cost = self.info.price.cost(usage)
        return ChatResponse(
            id=f"fn-{next(self._ids)}",
            model=self.name,
            provider_model=self.info.model_id or self.name,
            choices=(Choice(message=Message(role="assistant", content=result)),),
            usage=usage,
            cost=cost,
            created=int(time.time()),
            decision=Decision(
                node=self.name,
                kind="model",
                chosen=self.name,
                reason="answered",
                latency_ms=elapsed_ms(started),
                cost=cost,
                usage=usage,
            ),
        )


class DisabledModel(Model):
    """Stands in for a model whose provider is switched off; says why on every call."""

    def __init__(self, info: ModelInfo, reason: str) -> None:
        self.info = info
        self.reason = reason

    async def complete(self, request: ChatRequest) -> ChatResponse:
        raise UnavailableError(
            f"disabled: {self.reason}",
            model=self.name,
            provider=self.info.provider,
            code="disabled",
            retryable=False,
        )


class HashingEmbedder(Embedder):
    """Character-trigram feature hashing into a unit vector: deterministic, instant, no model
    file. Similar spellings get similar vectors; meaning is not captured.

    A text longer than MAX_CHARS is read by its first and last MAX_CHARS / 2 characters (a
    check's text keeps both the prompt's start and the answer's end): hashing runs on the event
    loop, and one 16 MB request must not hold every other for seconds. Each distinct trigram's
    bucket and sign are kept (up to MAX_TRIGRAMS of them), since hashing them again was most of
    the time: the vectors are the same, in under half the time (bench/README.md).
    """

    MAX_CHARS = 20_000
    MAX_TRIGRAMS = 65_536
    """Every recorded prompt and answer in ../shared/data (GSM8K, MMLU, ARC, MBPP) holds 40,761
    distinct trigrams; past the cap new ones are hashed each time rather than kept, so hostile
    text cannot grow the table beyond about 13 MB (measured)."""

    def __init__(self, info: ModelInfo, dimensions: int) -> None:
        self.info = info
        self.dimensions = dimensions
        self._trigrams: dict[str, tuple[int, float]] = {}

    def vector(self, text: str) -> tuple[float, ...]:
        """The embedding of one text."""
        if len(text) > self.MAX_CHARS:
            half = self.MAX_CHARS // 2
            text = text[:half] + text[-half:]
        padded = f"  {text.lower()} "
        known = self._trigrams
        buckets: list[int] = []
        weights: list[float] = []
        for trigram, count in Counter(padded[i : i + 3] for i in range(len(padded) - 2)).items():
            place = known.get(trigram)
            if place is None:
                place = self._place(trigram)
                if len(known) < self.MAX_TRIGRAMS:
                    known[trigram] = place
            buckets.append(place[0])
            weights.append(place[1] * count)
        # Whole numbers until the division, so the sums are exact in any order: the vector is
        # the same as adding one trigram at a time.
        values = np.bincount(buckets, weights, minlength=self.dimensions)
        norm = math.sqrt(float(values @ values)) or 1.0
        return tuple((values / norm).tolist())

    def _place(self, trigram: str) -> tuple[int, float]:
        """The trigram's bucket and the sign it adds there."""
        digest = hashlib.blake2b(trigram.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % self.dimensions
        return bucket, 1.0 if digest[4] & 1 else -1.0

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if request.dimensions is not None and request.dimensions != self.dimensions:
            raise BadRequestError(
                f"this embedder gives {self.dimensions}-dimensional vectors; "
                f"{request.dimensions} were asked for",
                model=self.name,
                provider="local",
            )
        vectors = tuple(self.vector(text) for text in request.inputs)
        return EmbeddingResponse(
            model=self.name,
            provider_model=self.name,
            vectors=vectors,
            usage=Usage(input_tokens=estimate_embedding_tokens(request), estimated=True),
        )
