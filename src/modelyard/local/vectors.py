"""Embeddings as numpy matrices for in-process users (classifiers, retrievers, semantic caches).

An embedder that can encode synchronously (`SyncEncoder`, e.g. the local MiniLM) is used
directly; any other `Embedder` (a hosted API) goes through its async `embed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from modelyard.errors import BadResponseError
from modelyard.model import Embedder
from modelyard.types import EmbeddingRequest

Matrix = npt.NDArray[np.float32]
"""One row per text."""


@runtime_checkable
class SyncEncoder(Protocol):
    """An embedder that can encode in the calling thread, batched."""

    def encode(self, texts: Sequence[str]) -> Matrix:
        """One L2-normalised row per text."""
        ...


def unit_rows(matrix: npt.ArrayLike) -> Matrix:
    """`matrix` as float32 with every row scaled to length 1 (zero rows stay zero)."""
    rows = np.asarray(matrix, dtype=np.float32)
    if rows.ndim != 2:
        rows = rows.reshape(len(rows), -1)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: Matrix = rows / np.maximum(norms, 1e-12)
    return out


def encode_now(embedder: Embedder, texts: Sequence[str]) -> Matrix | None:
    """Unit rows for `texts` computed in this thread, or None if `embedder` is async only."""
    if isinstance(embedder, SyncEncoder):
        return unit_rows(embedder.encode(texts))
    return None


async def encode(
    embedder: Embedder, texts: Sequence[str], *, deadline: float | None = None
) -> tuple[Matrix, float]:
    """Unit rows for `texts` through the embedder's `embed`, and what that cost in USD."""
    response = await embedder.embed(EmbeddingRequest(inputs=tuple(texts), deadline=deadline))
    if len(response.vectors) != len(texts):
        raise BadResponseError(
            f"embedder {embedder.name!r} returned {len(response.vectors)} vectors "
            f"for {len(texts)} texts",
            model=embedder.name,
        )
    return unit_rows(response.vectors), response.cost
