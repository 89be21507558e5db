"""Semantic routing math, free of I/O: example utterances embedded once at build into one
matrix, so scoring a request against every route is one matrix-vector product.

`nearest` scores a route by its most similar example; `centroid` by the cosine to the mean of
its examples (cheaper with many examples, smoother with noisy ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
Match = Literal["nearest", "centroid"]


def unit_rows(matrix: Matrix) -> Matrix:
    """`matrix` with each row scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Matrix = matrix / norms
    return out


class SemanticIndex:
    """Route scores for a query vector: cosine similarity to each route's examples."""

    __slots__ = ("_matrix", "_starts", "match", "routes")

    def __init__(
        self,
        routes: Sequence[str],
        examples: Sequence[Matrix],
        match: Match = "nearest",
    ) -> None:
        if len(routes) != len(examples) or not routes:
            raise ValueError("one example matrix per route, and at least one route")
        if any(len(e) == 0 for e in examples):
            raise ValueError("every route needs at least one example")
        self.routes = tuple(routes)
        self.match = match
        # float32: half the memory traffic, and small enough products that BLAS stays on one
        # thread (a threaded float64 product of 3,000 x 384 took milliseconds on a busy host).
        if match == "centroid":
            centroids = np.stack([unit_rows(e).mean(axis=0) for e in examples])
            self._matrix = unit_rows(centroids).astype(np.float32)
            self._starts = None
        else:
            self._matrix = unit_rows(np.concatenate(list(examples))).astype(np.float32)
            sizes = [len(e) for e in examples]
            self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)

    @property
    def dimensions(self) -> int:
        """The length of the vectors this index expects."""
        return int(self._matrix.shape[1])

    def scores(self, vector: Sequence[float] | Matrix) -> Matrix:
        """Each route's cosine similarity to `vector`, in route order."""
        query = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            return np.zeros(len(self.routes))
        similarities = self._matrix @ (query / np.float32(norm))
        if self._starts is not None:
            similarities = np.maximum.reduceat(similarities, self._starts)
        return similarities.astype(np.float64)

    def best(self, vector: Sequence[float] | Matrix) -> tuple[int, float, Matrix]:
        """The index of the best route, its score, and every route's score."""
        scores = self.scores(vector)
        i = int(np.argmax(scores))
        return i, float(scores[i]), scores
