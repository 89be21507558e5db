"""Recordings written as the JSONL recording format, whole or split into train and test files:
the input of `modelyard train`, of `type: replay` with `format: jsonl`, and a labelled set for
`eval`/`calibrate` (with `--format jsonl`). Captured gateway traffic written as a labelled set
whose labels are the answers given then (`modelyard traffic`)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError
from modelyard.evaluation.recordings import RecordedItem, Recordings


def rows(items: Iterable[RecordedItem], split: str | None = None) -> Iterable[dict[str, Any]]:
    """One JSONL row per (item, model), with what was recorded (nothing invented but the
    synthesised texts the format documents)."""
    for item in items:
        for model, outcome in item.outcomes.items():
            row: dict[str, Any] = {
                "id": item.id,
                "prompt": item.prompt,
                "model": model,
                "response": outcome.text,
            }
            optional = {
                "score": outcome.score,
                "cost": outcome.cost,
                "input_tokens": outcome.input_tokens,
                "output_tokens": outcome.output_tokens,
                "confidence": outcome.confidence,
                "latency_ms": outcome.latency_ms,
                "provider_model": outcome.provider_model,
                "label": item.label,
                "split": split or item.split,
                "synthetic": outcome.synthetic or None,
            }
            row.update({k: v for k, v in optional.items() if v is not None})
            yield row


def write_jsonl(path: Path, lines: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL; the number written."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
            count += 1
    return count


def split_recordings(
    recordings: Recordings, out_dir: Path, test_fraction: float, seed: int
) -> dict[str, int]:
    """Write `train.jsonl` and `test.jsonl` (a seeded split of prompts) into `out_dir`."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    if not recordings.items:
        raise ConfigError("the recordings hold no prompts", path=recordings.source)
    order = list(range(len(recordings.items)))
    random.Random(seed).shuffle(order)
    cut = round(len(order) * test_fraction)
    test_ids = set(order[:cut])
    test = [it for n, it in enumerate(recordings.items) if n in test_ids]
    train = [it for n, it in enumerate(recordings.items) if n not in test_ids]
    if not train or not test:
        raise ConfigError(
            f"a {test_fraction:.0%} split of {len(order)} prompts leaves one empty",
            path=recordings.source,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "train": write_jsonl(out_dir / "train.jsonl", rows(train, "train")),
        "test": write_jsonl(out_dir / "test.jsonl", rows(test, "test")),
        "train_prompts": len(train),
        "test_prompts": len(test),
    }


def traffic_rows(exchanges: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Captured exchanges (`read_traffic`) as labelled-set rows: the messages, the answer given
    then as the label, and what it cost, how long it took and which model gave it as metadata."""
    for exchange in exchanges:
        yield {
            "id": exchange["id"],
            "messages": [{"role": role, "content": text} for role, text in exchange["messages"]],
            "label": exchange["answer"],
            "target": exchange["target"],
            "model": exchange["model"],
            "cost": exchange["cost"],
            "latency_ms": exchange["latency_ms"],
            "config_version": exchange["config_version"],
            "at": exchange["at"],
        }
