"""The learned router's artifact: a versioned `.npz` with the fitted predictor and a JSON header
(candidate models, embedder, training data and how well each method did on held-out prompts).

Written by `modelyard train`, read when a config's router points at it. Loaded with
`allow_pickle=False`: an artifact is data, never code.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.patterns.learned import Knn, Logistic, OutOfFold, Predictor
from modelyard.patterns.signals import SignalSet, signal_set

FORMAT = "modelyard.learned-router"
VERSION = 1


class ArtifactError(ValueError):
    """An artifact that cannot be read, or was written for something else."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """A trained learned router: predictor, candidates and how it was made."""

    predictor: Predictor
    models: tuple[str, ...]
    embedder: str
    dimensions: int
    """The embedder's; the predictor reads these plus one per answer signal."""
    mean_cost: tuple[float | None, ...]
    """Mean recorded USD per request for each candidate, None where none was recorded."""
    meta: dict[str, Any]
    out_of_fold: OutOfFold | None = None
    """Cross-fitted predictions for the training texts (`modelyard train --folds K`)."""
    signals: SignalSet | None = None
    """The answer signals read beside the embedding (`modelyard train --signals NAME`)."""


def save(path: Path, artifact: Artifact) -> None:
    """Write `artifact` to `path` (an .npz file)."""
    header = {
        **artifact.meta,
        "format": FORMAT,
        "version": VERSION,
        "models": list(artifact.models),
        "embedder": artifact.embedder,
        "dimensions": artifact.dimensions,
        "mean_cost": list(artifact.mean_cost),
    }
    arrays: dict[str, Any] = {}
    predictor = artifact.predictor
    if isinstance(predictor, Logistic):
        header["method"] = "logistic"
        arrays.update(weights=predictor.weights, bias=predictor.bias)
    else:
        header["method"] = "knn"
        header["k"] = predictor.k
        header["strength"] = predictor.strength
        arrays.update(
            vectors=predictor.vectors.astype(np.float32),
            outcomes=predictor.outcomes,
            prior=predictor.prior,
        )
    if artifact.signals is not None:
        header["signals"] = artifact.signals.name
        header["signal_names"] = list(artifact.signals.names)
    if artifact.out_of_fold is not None:
        header["folds"] = artifact.out_of_fold.folds
        header["oof_spaced"] = artifact.out_of_fold.spaced
        arrays.update(
            oof_digests=artifact.out_of_fold.digests,
            oof_predictions=artifact.out_of_fold.predictions.astype(np.float32),
        )
    arrays["header"] = np.array(json.dumps(header, sort_keys=True))
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)


def load(path: Path) -> Artifact:
    """Read an artifact; ArtifactError saying what is wrong with it otherwise."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ArtifactError(f"no artifact at {path}; write one with `modelyard train`") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # EOF: an empty file
        raise ArtifactError(f"{path} is not a learned-router artifact ({exc})") from None
    if "header" not in arrays:
        raise ArtifactError(f"{path} is not a learned-router artifact (no header)")
    header = json.loads(str(arrays["header"]))
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a learned-router artifact")
    if header.get("version") != VERSION:
        raise ArtifactError(
            f"{path} has artifact version {header.get('version')}; this modelyard reads "
            f"version {VERSION}: retrain it with `modelyard train`"
        )
    signals = _signals(header, path)
    # The predictor reads the embedding, then one number per answer signal.
    width = int(header["dimensions"]) + (len(signals.names) if signals else 0)
    predictor = _predictor(header, arrays, path, width)
    return Artifact(
        predictor=predictor,
        models=tuple(header["models"]),
        embedder=str(header["embedder"]),
        dimensions=int(header["dimensions"]),
        mean_cost=tuple(header["mean_cost"]),
        meta=header,
        out_of_fold=_out_of_fold(header, arrays, path),
        signals=signals,
    )


def _signals(header: dict[str, Any], path: Path) -> SignalSet | None:
    name = header.get("signals")
    if name is None:
        return None
    try:
        signals = signal_set(str(name))
    except ValueError as exc:
        raise ArtifactError(
            f"{path} was trained with answer signals this modelyard lacks: {exc}"
        ) from None
    if list(signals.names) != header.get("signal_names"):
        raise ArtifactError(
            f"{path} was trained with {name} signals {header.get('signal_names')}; this "
            f"modelyard computes {list(signals.names)}: retrain it with `modelyard train`"
        )
    return signals


def _out_of_fold(header: dict[str, Any], arrays: dict[str, Any], path: Path) -> OutOfFold | None:
    if "oof_digests" not in arrays:
        return None
    digests = np.asarray(arrays["oof_digests"], dtype=np.uint8)
    predictions = np.asarray(arrays.get("oof_predictions"), dtype=np.float64)
    m = len(header["models"])
    if digests.ndim != 2 or digests.shape[1] != 16 or predictions.shape != (len(digests), m):
        raise ArtifactError(f"{path}: out-of-fold predictions do not fit {m} models")
    spaced = bool(header.get("oof_spaced", False))  # absent: written by an exact-digest modelyard
    return OutOfFold(digests, predictions, int(header.get("folds", 0)), spaced)


def _predictor(header: dict[str, Any], arrays: dict[str, Any], path: Path, d: int) -> Predictor:
    m = len(header["models"])
    try:
        if header["method"] == "logistic":
            weights = np.asarray(arrays["weights"], dtype=np.float64)
            bias = np.asarray(arrays["bias"], dtype=np.float64)
            if weights.shape != (d, m) or bias.shape != (m,):
                raise ArtifactError(f"{path}: weights do not fit {m} models and {d} dimensions")
            return Logistic(weights=weights, bias=bias)
        if header["method"] == "knn":
            vectors = np.asarray(arrays["vectors"], dtype=np.float64)
            outcomes = np.asarray(arrays["outcomes"], dtype=np.float64)
            if vectors.shape[1:] != (d,) or outcomes.shape != (len(vectors), m):
                raise ArtifactError(f"{path}: neighbours do not fit {m} models and {d} dimensions")
            return Knn(
                vectors=vectors,
                outcomes=outcomes,
                prior=np.asarray(arrays["prior"], dtype=np.float64),
                k=int(header["k"]),
                strength=float(header.get("strength", 2.0)),
            )
    except KeyError as missing:
        raise ArtifactError(f"{path} lacks {missing.args[0]!r}") from None
    raise ArtifactError(f"{path}: unknown method {header['method']!r}")
