"""Text classifiers over any embedder: nearest centroid and multinomial logistic regression.

Both are trained from labelled examples when the config is built (plain numpy, deterministic:
the same examples give the same model) and give a probability per label:

- **centroid**: a label's centroid is the normalised mean of its examples' unit vectors; the
  probabilities are a softmax over the cosine similarities to each centroid divided by a
  temperature. The temperature is fitted at build time by minimising the leave-one-out log-loss
  on the examples (each example scored against centroids built without it; targets smoothed by
  Laplace's rule, 1/(n+2), so a few perfectly separated examples do not make every answer
  certain). A confidence of 0.8 then means about what it says on data like the examples; set
  `temperature` to fix it instead. Probabilities are relative to the known labels: an
  off-topic text still gets a label, so the decision also records the raw best similarity.
- **logistic**: softmax regression with an L2 penalty, fitted by accelerated gradient descent
  from zero weights.

`ClassifierModel` answers with the predicted label as its text, `confidence` = that label's
probability, and `Decision.scores` = every label's probability.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelyard.cost.dispatch import mark_sent
from modelyard.errors import BadRequestError
from modelyard.local.answers import scored_answer
from modelyard.local.vectors import Matrix, encode, encode_now, unit_rows
from modelyard.model import Embedder, Model, ModelInfo
from modelyard.types import ChatRequest, ChatResponse

Array = npt.NDArray[np.float64]
Prediction = tuple[str, float, dict[str, float]]
"""(label, its probability, every label's probability)."""

DEFAULT_TEMPERATURE = 0.05
_TEMPERATURES = np.geomspace(0.005, 1.0, 80)


def softmax(logits: Array) -> Array:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class CentroidClassifier:
    """Cosine similarity to each label's centroid, softmaxed with a temperature."""

    labels: tuple[str, ...]
    centroids: Array
    temperature: float

    @classmethod
    def fit(
        cls,
        vectors: Matrix,
        targets: npt.NDArray[np.int64],
        labels: Sequence[str],
        temperature: float | None = None,
    ) -> CentroidClassifier:
        """Centroids from unit `vectors` labelled by index `targets`; temperature fitted if None."""
        x = vectors.astype(np.float64)
        sums = np.zeros((len(labels), x.shape[1]))
        np.add.at(sums, targets, x)
        centroids = unit_rows(sums).astype(np.float64)
        if temperature is None:
            temperature = _loo_temperature(x, targets, sums, centroids)
        return cls(tuple(labels), centroids, float(temperature))

    def probabilities(self, vectors: Matrix) -> Array:
        """One row of label probabilities per unit vector."""
        return softmax(self.similarities(vectors) / self.temperature)

    def similarities(self, vectors: Matrix) -> Array:
        """Cosine similarity of each unit vector to each centroid."""
        return vectors.astype(np.float64) @ self.centroids.T


def _loo_temperature(
    x: Array, targets: npt.NDArray[np.int64], sums: Array, centroids: Array
) -> float:
    """The temperature minimising the leave-one-out log-loss; the default if no label has two
    examples to leave one out of."""
    counts = np.bincount(targets, minlength=len(sums))
    usable = counts[targets] >= 2
    if not usable.any():
        return DEFAULT_TEMPERATURE
    x, targets = x[usable], targets[usable]
    similarities = x @ centroids.T
    own = sums[targets]  # each example's own label sum, which includes the example
    dot = np.einsum("ij,ij->i", x, own)
    loo_norm = np.sqrt(np.maximum(np.einsum("ij,ij->i", own, own) - 2 * dot + 1.0, 1e-12))
    similarities[np.arange(len(x)), targets] = (dot - 1.0) / loo_norm
    # Laplace's rule: after n left-out examples, expect about 1/(n+2) of them to be wrong, so
    # the targets keep that much mass off the true label; a perfect leave-one-out score on a
    # handful of examples then cannot drive the temperature to 0 and every confidence to 1.
    k = similarities.shape[1]
    smoothing = 1.0 / (len(x) + 2)
    targets_soft = np.full(similarities.shape, smoothing / (k - 1))
    targets_soft[np.arange(len(x)), targets] = 1.0 - smoothing
    losses = []
    for t in _TEMPERATURES:
        log_probs = np.log(np.maximum(softmax(similarities / t), 1e-300))
        losses.append(-(targets_soft * log_probs).sum(axis=1).mean())
    return float(_TEMPERATURES[int(np.argmin(losses))])


@dataclass(frozen=True, slots=True)
class LogisticClassifier:
    """Multinomial logistic regression on the embeddings."""

    labels: tuple[str, ...]
    weights: Array
    """(dimensions + 1) x labels; the last row is the bias."""

    @classmethod
    def fit(
        cls,
        vectors: Matrix,
        targets: npt.NDArray[np.int64],
        labels: Sequence[str],
        l2: float = 0.001,
        iterations: int = 1000,
    ) -> LogisticClassifier:
        """Minimise mean cross-entropy + l2/2 * |W|^2 (bias unpenalised) by Nesterov's method."""
        x = _with_bias(vectors)
        n, k = len(x), len(labels)
        y = np.zeros((n, k))
        y[np.arange(n), targets] = 1.0
        penalty = np.ones((x.shape[1], 1))
        penalty[-1] = 0.0
        # The softmax loss's curvature is at most 1/2 per sample: this step never overshoots.
        step = 1.0 / (0.5 * np.linalg.norm(x, 2) ** 2 / n + l2)
        w = np.zeros((x.shape[1], k))
        previous = w
        for i in range(1, iterations + 1):
            look = w + (i - 1) / (i + 2) * (w - previous)
            gradient = x.T @ (softmax(x @ look) - y) / n + l2 * penalty * look
            previous, w = w, look - step * gradient
            if np.abs(gradient).max() < 1e-6:
                break
        return cls(tuple(labels), w)

    def probabilities(self, vectors: Matrix) -> Array:
        """One row of label probabilities per vector."""
        return softmax(_with_bias(vectors) @ self.weights)


def _with_bias(vectors: Matrix) -> Array:
    x = vectors.astype(np.float64)
    return np.hstack([x, np.ones((len(x), 1))])


Classifier = CentroidClassifier | LogisticClassifier


def train(
    examples: Mapping[str, Sequence[str]],
    vectors: Matrix,
    *,
    method: str,
    temperature: float | None = None,
    l2: float = 0.001,
) -> Classifier:
    """Fit `method` ("centroid" or "logistic") on `vectors`, the embeddings of every example
    in `examples` order (label by label)."""
    labels = list(examples)
    targets = np.repeat(np.arange(len(labels)), [len(examples[label]) for label in labels])
    if method == "logistic":
        return LogisticClassifier.fit(vectors, targets, labels, l2=l2)
    return CentroidClassifier.fit(vectors, targets, labels, temperature)


def example_texts(examples: Mapping[str, Sequence[str]]) -> list[str]:
    """Every example text, label by label: the order `train` expects vectors in."""
    return [text for texts in examples.values() for text in texts]


class ClassifierModel(Model):
    """Answers with the most probable label of the last user message."""

    def __init__(
        self,
        info: ModelInfo,
        embedder: Embedder,
        examples: Mapping[str, Sequence[str]],
        *,
        method: str = "centroid",
        temperature: float | None = None,
        l2: float = 0.001,
        trained: Classifier | None = None,
    ) -> None:
        self.info = info
        self.embedder = embedder
        self.examples = examples
        self.method = method
        self.temperature = temperature
        self.l2 = l2
        self.trained = trained
        """None until the first request when the embedder can only embed asynchronously."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels it can answer, in config order."""
        return tuple(self.examples)

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out["method"] = self.method
        out["labels"] = ", ".join(self.labels)
        out["embedder"] = self.embedder.name
        return out

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Label, probability and all probabilities for each text, computed in this thread."""
        vectors = encode_now(self.embedder, texts)
        if vectors is None or self.trained is None:
            raise BadRequestError(
                f"embedder {self.embedder.name!r} cannot encode synchronously; "
                "use `await model.complete(...)` instead",
                model=self.name,
            )
        return self._predictions(self.trained, vectors)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        text = request.last_user_text
        if not text.strip():
            raise BadRequestError("no user text to classify", model=self.name, provider="local")
        mark_sent()  # an in-process model starts at once
        trained, cost = await self._trained()
        vectors, spent = await encode(self.embedder, [text], deadline=request.deadline)
        ((label, probability, scores),) = self._predictions(trained, vectors)
        details: dict[str, object] = {"method": self.method}
        if isinstance(trained, CentroidClassifier):
            # Probabilities are relative; the raw similarity shows how far off-topic a text is.
            details["similarity"] = round(float(trained.similarities(vectors).max()), 4)
        return scored_answer(
            self.info,
            request,
            label,
            confidence=probability,
            scores=scores,
            started=started,
            reason=f"{self.method} classifier: {label} with probability {probability:.2f}",
            extra_cost=cost + spent,
            details=details,
        )

    async def _trained(self) -> tuple[Classifier, float]:
        if self.trained is not None:
            return self.trained, 0.0
        vectors, cost = await encode(self.embedder, example_texts(self.examples))
        self.trained = train(
            self.examples, vectors, method=self.method, temperature=self.temperature, l2=self.l2
        )
        return self.trained, cost

    @staticmethod
    def _predictions(trained: Classifier, vectors: Matrix) -> list[Prediction]:
        probabilities = trained.probabilities(vectors)
        out = []
        for row in probabilities:
            best = int(np.argmax(row))
            scores = {label: float(p) for label, p in zip(trained.labels, row, strict=True)}
            out.append((trained.labels[best], float(row[best]), scores))
        return out
