"""Learned cost-quality routing math, free of I/O (the approach of CARROT and RouteLLM).

From recorded outcomes — for each prompt's embedding, which candidate models got it right (or
a score in [0, 1]) — fit a predictor of each candidate's P(success | prompt), then route to the
argmax of P − λ·cost. Two predictors, both plain numpy:

- `logistic`: one L2-regularised logistic regression per candidate on the prompt embedding
  (soft labels allowed). Calibrated probabilities, a d×m weight matrix,
  and a prediction that is one matrix-vector product however many prompts were recorded.
- `knn`: the mean outcome of the k most similar recorded prompts, shrunk towards the
  candidate's overall accuracy. No fitting, but prediction scans every recorded prompt.

`fit` picks between them (and their regularisation) by log-loss on a held-out part of the
prompts; bench/README.md has the comparison on recorded RouterBench and RouteLLM outcomes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Method = Literal["logistic", "knn"]
Features = Literal["prompt", "answer"]
"""What a predictor reads: the prompt (a router) or the prompt and an answer (a cascade check)."""

L2_GRID = (0.01, 0.1, 1.0, 10.0)
K_GRID = (10, 20, 40, 80)
_EPS = 1e-6


def _unit(matrix: Array) -> Array:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    out: Array = matrix / np.where(norms == 0, 1.0, norms)
    return out


def _sigmoid(z: Array) -> Array:
    out: Array = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    return out


@dataclass(frozen=True, slots=True)
class Logistic:
    """Per-candidate logistic regressions: P = sigmoid(x·W + b)."""

    weights: Array
    """d × m."""
    bias: Array
    """m."""
    _fast: npt.NDArray[np.float32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Predict in float32: single-threaded BLAS, half the memory read per request.
        object.__setattr__(self, "_fast", np.ascontiguousarray(self.weights, dtype=np.float32))

    def predict(self, x: Array) -> Array:
        """P(success) of each candidate for one unit-length embedding, or rows of them."""
        z = np.asarray(x, dtype=np.float32) @ self._fast
        return _sigmoid(z.astype(np.float64) + self.bias)


@dataclass(frozen=True, slots=True)
class Knn:
    """Mean outcome of the k nearest recorded prompts, shrunk to each candidate's prior."""

    vectors: Array
    """n × d, unit rows."""
    outcomes: Array
    """n × m, NaN where a candidate has no record for a prompt."""
    prior: Array
    """m: each candidate's mean outcome."""
    k: int
    strength: float = 2.0
    """How many pseudo-observations of the prior each estimate starts from."""
    _known: Array = field(init=False, repr=False)
    _filled: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        known = ~np.isnan(self.outcomes)
        object.__setattr__(self, "_known", known.astype(np.float64))
        object.__setattr__(self, "_filled", np.where(known, self.outcomes, 0.0))

    def predict(self, x: Array) -> Array:
        """P(success) of each candidate for one unit-length embedding, or rows of them."""
        similarities = np.atleast_2d(x) @ self.vectors.T
        k = min(self.k, self.vectors.shape[0])
        nearest = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        hits = self._filled[nearest].sum(axis=1)
        counts = self._known[nearest].sum(axis=1)
        p: Array = (hits + self.strength * self.prior) / (counts + self.strength)
        return p[0] if np.ndim(x) == 1 else p


Predictor = Logistic | Knn


def text_digest(text: str, *, spaced: bool = True) -> bytes:
    """The 16-byte key an out-of-fold prediction is stored under. `spaced`: runs of white space
    count as one space and the ends are stripped, so a recording that kept a leading space or a
    CRLF still finds its row (an exact miss would silently answer from the in-sample fit)."""
    key = " ".join(text.split()) if spaced else text
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class OutOfFold:
    """Cross-fitted predictions for the texts a predictor was trained on.

    Each training text's prediction comes from a fit on the other folds, so it never read that
    text's own label. Answering a training text from here (instead of from the predictor, which
    saw it) lets a router or check be calibrated on the data it was trained on without
    in-sample optimism; any other text goes to the predictor.
    """

    digests: npt.NDArray[np.uint8]
    """n × 16: `text_digest` of each training text."""
    predictions: Array
    """n × m: each text's P(success) per candidate from the fit that did not see it."""
    folds: int
    spaced: bool = True
    """Whether the digests ignore white space (`text_digest`); artifacts written before it did
    hold exact digests."""
    _row: dict[bytes, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rows = {bytes(d): i for i, d in enumerate(self.digests)}
        object.__setattr__(self, "_row", rows)

    def lookup(self, text: str) -> Array | None:
        """The out-of-fold P(success) per candidate, or None when `text` was not trained on."""
        row = self._row.get(text_digest(text, spaced=self.spaced))
        return None if row is None else self.predictions[row]

    @classmethod
    def of(cls, texts: Sequence[str], predictions: Array, folds: int) -> OutOfFold:
        """The table for `texts` (rows of `predictions`)."""
        digests = np.frombuffer(b"".join(text_digest(t) for t in texts), dtype=np.uint8)
        return cls(digests.reshape(len(texts), 16), predictions, folds)


class LogisticSolver:
    """L2-regularised logistic regressions on one design matrix, for any labels and penalty.

    The weights of an L2-penalised fit lie in the row space of `x`, so the fit runs in the
    r = min(n, d) coordinates of its SVD, computed once and shared by every penalty tried.
    There each column is fitted by Newton's method: 4–7 iterations of one r × r solve on
    MMLU's 5,575 training prompts, where a diagonal-bound gradient method ran out of its 2,000
    iterations at the small penalties (training on MMLU is 5× faster, bench/README.md).
    """

    def __init__(self, x: Array) -> None:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        self.basis = vt.T
        """d × r."""
        self.z = x @ self.basis
        """n × r: the prompts in SVD coordinates."""

    def fit(self, y: Array, l2: float, iterations: int = 100, tolerance: float = 1e-8) -> Logistic:
        """Fit every column of `y` (NaN = no record; soft labels allowed); the bias is not
        penalised."""
        n, r = self.z.shape
        design = np.hstack([self.z, np.ones((n, 1))])
        penalty = np.append(np.full(r, float(l2)), 0.0)
        coef = np.zeros((r + 1, y.shape[1]))
        for j in range(y.shape[1]):
            known = ~np.isnan(y[:, j])
            rows = design if known.all() else design[known]
            coef[:, j] = _newton(rows, y[known, j], penalty, iterations, tolerance)
        return Logistic(weights=self.basis @ coef[:r], bias=coef[r])


_RIDGE = 1e-10
"""Keeps the Hessian invertible in the unpenalised bias when every prediction saturates."""


def _newton(a: Array, t: Array, penalty: Array, iterations: int, tolerance: float) -> Array:
    """The weights minimising the penalised log-loss of targets `t` on rows `a`, by Newton's
    method from the intercept-only fit, halving any step that does not lower the loss."""
    mean = float(np.clip(t.mean(), _EPS, 1 - _EPS)) if len(t) else 0.5
    w = np.zeros(a.shape[1])
    w[-1] = np.log(mean / (1 - mean))
    loss = _penalised_loss(a, t, w, penalty)
    for _ in range(iterations):
        p = _sigmoid(a @ w)
        gradient = a.T @ (p - t) + penalty * w
        hessian = (a * (p * (1 - p))[:, None]).T @ a
        hessian[np.diag_indices_from(hessian)] += penalty + _RIDGE
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while (trial := _penalised_loss(a, t, w - size * step, penalty)) > loss:
            size /= 2
            if size < 1e-6:
                return w  # no step lowers the loss: at the optimum, to rounding
        w, loss = w - size * step, trial
        if float(np.abs(size * step).max()) < tolerance:
            break
    return w


def _penalised_loss(a: Array, t: Array, w: Array, penalty: Array) -> float:
    score = a @ w
    # log(1 + e^s) - t·s is the log-loss of sigmoid(s) against t, without overflow.
    return float((np.logaddexp(0.0, score) - t * score).sum() + 0.5 * (penalty * w * w).sum())


def fit_logistic(x: Array, y: Array, l2: float) -> Logistic:
    """Fit one L2-regularised logistic regression per column of `y` (NaN = no record)."""
    return LogisticSolver(x).fit(y, l2)


def fit_knn(x: Array, y: Array, k: int) -> Knn:
    """A kNN predictor over the recorded prompts."""
    prior = np.array([_mean(y[:, j]) for j in range(y.shape[1])])
    return Knn(vectors=_unit(x), outcomes=y, prior=prior, k=k)


def _mean(column: Array) -> float:
    known = column[~np.isnan(column)]
    return float(known.mean()) if len(known) else 0.5


def log_loss(p: Array, y: Array) -> float:
    """Mean binary cross-entropy over the known cells of `y` (soft labels allowed)."""
    known = ~np.isnan(y)
    q = np.clip(p[known], _EPS, 1 - _EPS)
    t = y[known]
    return float(-(t * np.log(q) + (1 - t) * np.log(1 - q)).mean())


@dataclass(frozen=True, slots=True)
class Fitted:
    """The chosen predictor and how it and the alternatives scored on held-out prompts."""

    predictor: Predictor
    method: Method
    setting: float
    """l2 for logistic, k for knn."""
    validation: dict[str, float]
    """Held-out log-loss of every method/setting tried, e.g. {"logistic l2=1": 0.41}."""


def fit(
    x: Array,
    y: Array,
    *,
    method: Method | Literal["auto"] = "auto",
    holdout: float = 0.2,
    seed: int = 0,
) -> Fitted:
    """Pick the method and setting with the lowest held-out log-loss, then refit on all rows."""
    x = _unit(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = max(1, int(len(x) * holdout)) if len(x) >= 10 else 0
    test, train = order[:cut], order[cut:]
    trials: list[tuple[Method, float]] = []
    if method in ("auto", "logistic"):
        trials += [("logistic", l2) for l2 in L2_GRID]
    if method in ("auto", "knn"):
        trials += [("knn", float(k)) for k in K_GRID]
    scores: dict[str, float] = {}
    best: tuple[float, Method, float] | None = None
    solver = LogisticSolver(x[train]) if cut and method != "knn" else None
    for kind, setting in trials:
        if cut == 0:
            loss = 0.0
        else:
            model = _fit_one(kind, x[train], y[train], setting, solver)
            loss = log_loss(model.predict(x[test]), y[test])
        scores[f"{kind} {'l2' if kind == 'logistic' else 'k'}={setting:g}"] = round(loss, 5)
        if best is None or loss < best[0]:
            best = (loss, kind, setting)
    assert best is not None
    _, kind, setting = best
    return Fitted(
        predictor=_fit_one(kind, x, y, setting), method=kind, setting=setting, validation=scores
    )


def cross_fit(
    x: Array, y: Array, fitted: Fitted, groups: Sequence[str], folds: int, seed: int = 0
) -> Array:
    """Out-of-fold P(success) for every row of `x`: the rows of each fold are predicted by the
    chosen method and setting fitted on the other folds. Rows of one group (the answers to one
    prompt) share a fold, so no prediction leans on a sibling of its own prompt."""
    unique = list(dict.fromkeys(groups))
    if not 2 <= folds <= len(unique):
        raise ValueError(
            f"cross-fitting needs 2 to {len(unique)} folds (one per prompt), not {folds}"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {group: int(order[i]) % folds for i, group in enumerate(unique)}
    fold = np.array([fold_of[g] for g in groups])
    x = _unit(np.asarray(x, dtype=np.float64))
    out = np.full(np.shape(y), np.nan)
    for k in range(folds):
        held = fold == k
        model = _fit_one(fitted.method, x[~held], np.asarray(y)[~held], fitted.setting)
        out[held] = model.predict(x[held])
    return out


def _fit_one(
    kind: Method, x: Array, y: Array, setting: float, solver: LogisticSolver | None = None
) -> Predictor:
    if kind == "logistic":
        return (solver or LogisticSolver(x)).fit(y, setting)
    return fit_knn(x, y, int(setting))


def predict_vector(
    predictor: Predictor,
    vector: Sequence[float],
    dimensions: int | None,
    signals: Sequence[float] = (),
) -> Array:
    """P(success) per candidate for one embedding followed by its answer `signals` (the whole
    made unit-length, as in training).

    Raises ValueError, naming both sizes, when the embedding's size is not the artifact's.
    """
    if dimensions is not None and len(vector) != dimensions:
        raise ValueError(
            f"embedder gave {len(vector)} dimensions, the artifact expects {dimensions}"
        )
    x = np.concatenate([np.asarray(vector, dtype=np.float64), np.asarray(signals, dtype=float)])
    norm = float(np.linalg.norm(x))
    return predictor.predict(x / norm if norm else x)


def answer_text(prompt: str, answer: str) -> str:
    """The text a learned check embeds: the prompt, then the answer being judged."""
    return f"{prompt}\n\nAnswer:\n{answer}"


def utilities(p: Array, cost: Array, lam: float) -> Array:
    """P(success) − λ·cost, cost relative to the dearest candidate (so λ is scale-free)."""
    top = float(cost.max())
    return p - lam * (cost / top if top > 0 else cost)


def outcome_matrix(
    prompts: Sequence[str], rows: Sequence[tuple[str, str, float]], models: Sequence[str]
) -> Array:
    """prompts × models outcomes from (prompt, model, score) rows; NaN where none was recorded,
    the mean where a pair was recorded more than once."""
    p_index = {p: i for i, p in enumerate(prompts)}
    m_index = {m: j for j, m in enumerate(models)}
    total = np.zeros((len(prompts), len(models)))
    count = np.zeros((len(prompts), len(models)))
    for prompt, model, score in rows:
        i, j = p_index[prompt], m_index[model]
        total[i, j] += score
        count[i, j] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
