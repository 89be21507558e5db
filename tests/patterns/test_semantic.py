"""Semantic route scores: one matrix product over example utterances."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.patterns.semantic import SemanticIndex


def examples() -> list[np.ndarray]:
    return [np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([[0.0, 1.0]])]


def test_nearest_scores_each_route_by_its_closest_example() -> None:
    index = SemanticIndex(["a", "b"], examples())
    scores = index.scores([0.6, 0.8])
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.8)


def test_centroid_scores_by_the_mean_direction() -> None:
    index = SemanticIndex(["a", "b"], examples(), match="centroid")
    centroid = np.array([1.6, 0.8]) / np.linalg.norm([1.6, 0.8])
    i, best, _ = index.best([1.0, 0.0])
    assert i == 0
    assert best == pytest.approx(centroid[0])


def test_zero_query_scores_zero() -> None:
    assert list(SemanticIndex(["a", "b"], examples()).scores([0.0, 0.0])) == [0.0, 0.0]


def test_a_route_without_examples_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        SemanticIndex(["a"], [np.zeros((0, 2))])
