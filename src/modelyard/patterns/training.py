"""Training a learned router or a learned cascade check from recorded outcomes: read the
JSONL, embed the texts, fit, and describe the result in an artifact header.

The outcomes file has one JSON object per line, one per (prompt, model) pair:

    {"prompt": "What is 2+2?", "model": "gpt-4o-mini", "correct": true, "cost": 0.00012}
    {"prompt": "What is 2+2?", "model": "llama-8b", "score": 0.5, "response": "5"}

`score` (0 to 1) or `correct` (true/false) is required (`score` wins when both are given);
`cost` (USD for that call) is optional and, where given, becomes the candidate's mean recorded
cost. With features `prompt` (a router) the predictor sees the prompt only; with `answer` (a
cascade's check) it sees the prompt and the model's `response`, which every row must then
carry, and optionally a set of answer signals (`patterns/signals.py`) computed from the
response.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelyard.errors import ConfigError
from modelyard.evaluation.recordings import recorded_cost, recorded_score, text_field
from modelyard.evaluation.tabular import not_utf8
from modelyard.model import Embedder
from modelyard.patterns.artifact import Artifact
from modelyard.patterns.learned import (
    Features,
    OutOfFold,
    answer_text,
    cross_fit,
    fit,
    outcome_matrix,
)
from modelyard.patterns.signals import SignalSet
from modelyard.types import EmbeddingRequest

BATCH = 64


class OutcomesError(ValueError):
    """An outcomes file that cannot be trained on; the message names the line."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recorded call: which model answered which prompt, how well, at what cost."""

    prompt: str
    model: str
    score: float
    cost: float | None = None
    response: str | None = None
    synthetic: bool = False
    """The response was made up from the score (recordings without answer texts)."""

    def text(self, features: Features) -> str:
        """What the predictor sees for this outcome."""
        if features == "prompt":
            return self.prompt
        assert self.response is not None, "read_outcomes checks every row has a response"
        return answer_text(self.prompt, self.response)


def read_outcomes(
    path: Path, models: Sequence[str] | None = None, *, features: Features = "prompt"
) -> list[Outcome]:
    """The outcomes in a JSONL file (only those of `models`, when given)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise OutcomesError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OutcomesError(str(not_utf8(path))) from None
    wanted = set(models) if models else None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = _row(line, path, number)
        if wanted is not None and row.model not in wanted:
            continue
        if features == "answer" and row.response is None:
            raise OutcomesError(
                f"{path}:{number}: missing 'response' (a string): a check trained on answers "
                "needs each recorded answer"
            )
        if features == "answer" and row.synthetic:
            raise OutcomesError(
                f"{path}:{number}: the response was synthesised from the recorded score, so a "
                "check trained on it would read the label; train on real answers only"
            )
        out.append(row)
    if not out:
        raise OutcomesError(f"{path} has no outcomes" + (" for those models" if wanted else ""))
    if wanted is not None:
        absent = sorted(wanted - {r.model for r in out})
        if absent:
            raise OutcomesError(f"{path} has no outcomes for {', '.join(absent)}")
    return out


def _row(line: str, path: Path, number: int) -> Outcome:
    where = f"{path}:{number}"
    try:
        data = json.loads(line)
    except ValueError as exc:
        hint = (
            "; train reads JSONL outcomes (prompt, model, correct or score per line): "
            "`modelyard split FORMAT RECORDINGS --out DIR` writes them from recordings"
            if number == 1
            else ""
        )
        raise OutcomesError(f"{where}: not JSON ({exc}){hint}") from None
    if not isinstance(data, dict):
        raise OutcomesError(f"{where}: expected an object with prompt, model, correct or score")
    try:  # the checks replay applies to the same rows
        prompt = text_field(data, "prompt", str(path), number)
        model = text_field(data, "model", str(path), number)
        score = recorded_score(data, str(path), number)
        cost = recorded_cost(data, str(path), number)
    except ConfigError as exc:
        raise OutcomesError(str(exc)) from None
    if score is None:
        raise OutcomesError(f"{where}: needs 'correct' (true/false) or 'score' (0 to 1)")
    response = data.get("response")
    if response is not None and not isinstance(response, str):
        raise OutcomesError(f"{where}: 'response' must be a string")
    return Outcome(
        prompt,
        model,
        score,
        cost,
        response,
        data.get("synthetic") is True,
    )


def file_digest(path: Path) -> str:
    """The sha256 of a file, recorded so an artifact names the exact data it was fitted on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def embed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Every text's vector, embedded in batches."""
    rows: list[tuple[float, ...]] = []
    for start in range(0, len(texts), BATCH):
        response = await embedder.embed(
            EmbeddingRequest(inputs=tuple(texts[start : start + BATCH]))
        )
        rows.extend(response.vectors)
    return np.asarray(rows, dtype=np.float64)


async def train_router(
    outcomes: Sequence[Outcome],
    embedder: Embedder,
    *,
    method: Literal["auto", "logistic", "knn"] = "auto",
    features: Features = "prompt",
    source: Path | None = None,
    seed: int = 0,
    folds: int = 0,
    signals: SignalSet | None = None,
) -> Artifact:
    """Embed the texts, fit the predictor, and return the artifact to save; with `folds` ≥ 2,
    also the cross-fitted (out-of-fold) prediction of every training text; with `signals`
    (answer features only), the predictor reads them after each embedding."""
    if signals is not None and features != "answer":
        raise ValueError("answer signals need features 'answer' (they read the response)")
    row_of = {o.text(features): o for o in outcomes}  # a recorded row for each distinct text
    texts = list(row_of)
    models = sorted({o.model for o in outcomes})
    y = outcome_matrix(texts, [(o.text(features), o.model, o.score) for o in outcomes], models)
    embedded = await embed_texts(embedder, texts)
    x = embedded
    if signals is not None:
        x = np.hstack([embedded, np.array([signals(row_of[t].response or "") for t in texts])])
    fitted = fit(x, y, method=method, seed=seed)
    out_of_fold = None
    if folds:
        groups = [row_of[t].prompt for t in texts]
        predictions = cross_fit(x, y, fitted, groups, folds, seed=seed)
        out_of_fold = OutOfFold.of(texts, predictions, folds)
    mean_cost: list[float | None] = []
    per_model: dict[str, dict[str, Any]] = {}
    for j, model in enumerate(models):
        costs = [o.cost for o in outcomes if o.model == model and o.cost is not None]
        mean_cost.append(sum(costs) / len(costs) if costs else None)
        column = y[:, j][~np.isnan(y[:, j])]
        per_model[model] = {
            "prompts": len(column),
            "mean_score": round(float(column.mean()), 5),
            "mean_cost": mean_cost[-1],
        }
    meta: dict[str, Any] = {
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": len(outcomes),
        "prompts": len({o.prompt for o in outcomes}),
        "features": features,
        "method": fitted.method,
        "setting": fitted.setting,
        "validation_log_loss": fitted.validation,
        "per_model": per_model,
        "embedder_model_id": embedder.info.model_id,
        "seed": seed,
        "folds": folds,
    }
    if source is not None:
        meta["source"] = str(source)
        meta["source_sha256"] = file_digest(source)
    return Artifact(
        predictor=fitted.predictor,
        models=tuple(models),
        embedder=embedder.name,
        dimensions=int(embedded.shape[1]),
        mean_cost=tuple(mean_cost),
        meta=meta,
        out_of_fold=out_of_fold,
        signals=signals,
    )
