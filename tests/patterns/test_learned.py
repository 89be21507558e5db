"""Learned router math and its artifact: fitting, predicting, utilities, saving, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.cost.prices import Price, estimate_input_tokens
from modelyard.patterns.artifact import Artifact, ArtifactError, load, save
from modelyard.patterns.learned import (
    fit,
    fit_knn,
    fit_logistic,
    outcome_matrix,
    predict_vector,
    utilities,
)
from modelyard.patterns.routing import CandidateCosts
from modelyard.types import user


def dataset(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Model 0 is right on prompts with x0 > 0, model 1 on all but a few."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = np.stack([(x[:, 0] > 0).astype(float), (rng.random(n) > 0.1).astype(float)], axis=1)
    return x, y


def test_logistic_learns_which_prompts_a_model_gets_right() -> None:
    x, y = dataset()
    model = fit_logistic(x, y, l2=0.1)
    p = model.predict(np.array([[3.0, 0, 0, 0], [-3.0, 0, 0, 0]]))
    assert p[0, 0] > 0.9 and p[1, 0] < 0.1
    assert 0.75 < p[0, 1] < 0.98


def test_a_vector_is_made_unit_length_and_its_size_checked() -> None:
    x, y = dataset()
    model = fit_logistic(x / np.linalg.norm(x, axis=1, keepdims=True), y, l2=0.1)
    long = predict_vector(model, [30.0, 0.0, 0.0, 0.0], dimensions=4)
    assert long == pytest.approx(model.predict(np.array([1.0, 0.0, 0.0, 0.0])))
    with pytest.raises(ValueError, match="embedder gave 3 dimensions, the artifact expects 4"):
        predict_vector(model, [1.0, 0.0, 0.0], dimensions=4)


def test_logistic_ignores_missing_records() -> None:
    x, y = dataset()
    y[:100, 1] = np.nan
    model = fit_logistic(x, y, l2=1.0)
    assert np.isfinite(model.weights).all()


@pytest.mark.parametrize("l2", [0.01, 1.0])
def test_logistic_reaches_the_penalised_optimum(l2: float) -> None:
    # More dimensions than a gradient method settles in its iteration budget at small
    # penalties, soft labels and a gap: at the optimum the penalised gradient vanishes.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 60))
    y = np.stack([1 / (1 + np.exp(-3 * x[:, 0] - x[:, 1])), (x[:, 2] > 0).astype(float)], 1)
    y[:50, 1] = np.nan
    model = fit_logistic(x, y, l2=l2)
    for j in range(2):
        known = ~np.isnan(y[:, j])
        p = 1 / (1 + np.exp(-(x[known] @ model.weights[:, j] + model.bias[j])))
        residual = p - y[known, j]
        gradient = x[known].T @ residual + l2 * model.weights[:, j]
        assert np.abs(gradient).max() < 1e-6
        assert abs(residual.sum()) < 1e-6  # the unpenalised bias


def test_knn_shrinks_towards_the_models_accuracy() -> None:
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    y = np.array([[1.0], [1.0], [0.0]])
    model = fit_knn(x, y, k=2)
    # neighbours of (1, 0) are rows 0 and 1: (2 + 2 * prior 2/3) / (2 + 2)
    assert model.predict(np.array([1.0, 0.0]))[0] == pytest.approx((2 + 2 * 2 / 3) / 4)


def test_fit_reports_every_trial_and_keeps_the_best() -> None:
    x, y = dataset()
    fitted = fit(x, y)
    assert fitted.method in ("logistic", "knn")
    best = min(fitted.validation.values())
    key = f"{fitted.method} {'l2' if fitted.method == 'logistic' else 'k'}={fitted.setting:g}"
    assert fitted.validation[key] == best


def test_utilities_use_cost_relative_to_the_dearest() -> None:
    u = utilities(np.array([0.9, 0.8]), np.array([10.0, 1.0]), lam=0.5)
    assert u == pytest.approx([0.9 - 0.5, 0.8 - 0.05])


def test_an_unrecorded_candidates_cost_for_a_long_prompt_is_at_its_long_context_tier() -> None:
    flat = Price(input=2.0, output=12.0)
    tiered = Price(input=1.25, output=10.0).with_tier(tokens=200_000, input=2.5, output=15.0)
    costs = CandidateCosts(
        recorded=np.zeros(2),
        missing=np.ones(2, dtype=bool),
        prices=[flat, tiered],
        expected_output_tokens=1_000,
    )
    long = user("x" * 1_000_000)
    tokens = estimate_input_tokens(long)
    assert tokens > 200_000
    assert costs.for_request(long) == pytest.approx(
        [(tokens * 2.0 + 12_000) / 1e6, (tokens * 2.5 + 15_000) / 1e6]
    )


def test_outcome_matrix_averages_repeats_and_marks_gaps() -> None:
    rows = [("p", "a", 1.0), ("p", "a", 0.0), ("q", "b", 1.0)]
    y = outcome_matrix(["p", "q"], rows, ["a", "b"])
    assert y[0, 0] == 0.5 and y[1, 1] == 1.0
    assert np.isnan(y[0, 1]) and np.isnan(y[1, 0])


def test_artifact_round_trips(tmp_path: Path) -> None:
    x, y = dataset()
    for predictor in (fit_logistic(x, y, 1.0), fit_knn(x, y, 5)):
        path = tmp_path / "a.npz"
        save(
            path,
            Artifact(predictor, ("m0", "m1"), "emb", 4, (0.5, None), {"note": "x"}),
        )
        loaded = load(path)
        assert loaded.models == ("m0", "m1")
        assert loaded.mean_cost == (0.5, None)
        probe = np.array([0.5, -0.2, 0.1, 0.3])
        probe /= np.linalg.norm(probe)
        assert loaded.predictor.predict(probe) == pytest.approx(predictor.predict(probe), abs=1e-6)


def test_loading_something_else_says_so(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ArtifactError, match="not a learned-router artifact"):
        load(path)
    with pytest.raises(ArtifactError, match="modelyard train"):
        load(tmp_path / "missing.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"empty\.npz is not a learned-router artifact"):
        load(tmp_path / "empty.npz")
