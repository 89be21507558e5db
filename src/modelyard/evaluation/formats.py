"""Every recording format by name, the RouterDC and JSONL loaders, and default list prices.

Formats: `routellm-gsm8k`, `routellm-mmlu`, `routellm-mtbench` (routellm.py), `routerbench`
(routerbench.py), `routerdc` and `jsonl` (here).

**JSONL (your own recordings)**: one object per line and per (prompt, model):
`prompt`, `model`, `response` (required); `score` in [0, 1] or `correct` (bool); `input_tokens`,
`output_tokens` (whole numbers), `cost` (USD; else computed from the model's price and the
token counts, which are estimated from the texts when absent); optional `label` (the gold
answer), `confidence` (the model's own, in [0, 1]), `latency_ms`, `provider_model`, `id`,
`split`.

**RouterDC** (`routerdc-7llm/*.json`): a JSON list of `{"question", "scores": {model: float}}`,
a file or the folder. A word of the file's name says which task it holds (nothing else in
the file does; a name naming no known task is refused). Multiple-choice tasks (mmlu, cmmlu,
ceval, arc) store the gold option's probability when the model's top choice was right and 0
otherwise: the recorded score is 1/0 and the raw value stays in the decision details. A null
score (a model absent from that item, as pandas writes it) is not recorded, as a missing key. It is
*not* passed on as `confidence`: it exists only for right answers, so a cascade reading it
would read the label. Generation tasks store the fraction of 10 samples that were right. No
response texts: multiple-choice answers are synthesised letters (`synthetic.py`), other answers
one placeholder, the same for every model, so that no text tells the scores apart.
"""

from __future__ import annotations

import math
import re
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelyard.cost.prices import Price
from modelyard.errors import ConfigError
from modelyard.evaluation.recordings import (
    Outcome,
    RecordedItem,
    Recordings,
    make_recordings,
    normalize_prompt,
    recorded_cost,
    recorded_score,
    scalar_field,
    text_field,
    unit_score,
)
from modelyard.evaluation.routellm import load_gsm8k, load_mmlu, load_mtbench
from modelyard.evaluation.routerbench import load_routerbench
from modelyard.evaluation.synthetic import choice_answer, option_letters, pseudo_gold
from modelyard.evaluation.tabular import files_in, read_json, read_jsonl
from modelyard.suggest import did_you_mean

Loader = Callable[[Path], Recordings]

_MC_TASKS = frozenset({"mmlu", "cmmlu", "ceval", "arc"})
_GENERATION_TASKS = frozenset({"gsm8k", "humaneval", "mbpp", "javascript", "math"})

LIST_PRICES: dict[str, Price] = {
    "gpt-4-1106-preview": Price(input=10.0, output=30.0),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": Price(input=0.6, output=0.6),
    "mistralai/Mistral-7B-v0.1": Price(input=0.2, output=0.2),
    "meta-math/MetaMath-Mistral-7B": Price(input=0.2, output=0.2),
    "itpossible/Chinese-Mistral-7B-v0.1": Price(input=0.2, output=0.2),
    "HuggingFaceH4/zephyr-7b-beta": Price(input=0.2, output=0.2),
    "cognitivecomputations/dolphin-2.6-mistral-7b": Price(input=0.2, output=0.2),
    "meta-llama/Meta-Llama-3-8B": Price(input=0.2, output=0.2),
    "cognitivecomputations/dolphin-2.9-llama3-8b": Price(input=0.2, output=0.2),
}
"""USD per million tokens for recorded models whose data has no costs: OpenAI's list price for
GPT-4-1106 (early 2024) and a typical hosted price for Mixtral-8x7B and 7-8B models. A config's
`price:` overrides these."""


def _multiple_choice(path: Path) -> bool:
    """Whether a RouterDC file holds multiple-choice scores, told by the task a word of its
    name names (`mmlu_test`, `heldout-arc_challenge`): the scores mean different things for
    the two kinds and the file does not say which, so a name that tells neither is refused."""
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    choice, generation = bool(words & _MC_TASKS), bool(words & _GENERATION_TASKS)
    if choice == generation:
        raise ConfigError(
            "cannot tell from the file name whether its scores are multiple-choice (a name "
            "with mmlu, cmmlu, ceval or arc) or generation (gsm8k, humaneval, mbpp, javascript "
            "or math), which RouterDC scores differently; name the file after its task, e.g. "
            "mmlu_heldout.json",
            path=str(path),
        )
    return choice


def _routerdc_item(
    path: Path, number: int, row: Any, task: str, split: str | None, choice: bool
) -> RecordedItem:
    if not isinstance(row, dict) or "question" not in row or "scores" not in row:
        raise ConfigError(f"item {number}: needs 'question' and 'scores'", path=str(path))
    prompt, scores = row["question"], row["scores"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(
            f"item {number}: 'question' must be a non-empty string, got {prompt!r}",
            path=str(path),
        )
    if not isinstance(scores, dict):
        raise ConfigError(
            f"item {number}: 'scores' must be an object of model: score, got {scores!r:.60}",
            path=str(path),
        )
    letters = option_letters(prompt) or "ABCD"
    outcomes = {}
    for model, raw in scores.items():
        if raw is None:  # null, as pandas writes a missing value: not recorded, as no key
            continue
        value = unit_score(raw, f"item {number}: score of {model!r}", str(path), None)
        if choice:
            score = 1.0 if value > 0 else 0.0
            text = choice_answer(prompt, model, value > 0, letters)
        else:
            score = value
            # The same text for every model, naming no score: a system reads answers, and
            # a text that told the score apart would hand its checks the label.
            text = "(RouterDC recorded no text for this answer)"
        outcomes[model] = Outcome(text=text, score=score, synthetic=True)
    return RecordedItem(
        id=f"{task}-{number}",
        prompt=prompt,
        outcomes=outcomes,
        label=pseudo_gold(prompt, letters) if choice else None,
        split=split,
        meta={"task": task},
    )


def _split_of(stem: str) -> tuple[str, str | None]:
    for suffix in ("train", "test"):
        for sep in ("_", "-"):
            if stem.endswith(sep + suffix):
                return stem[: -len(suffix) - 1], suffix
    return stem, None


def load_routerdc(path: Path) -> Recordings:
    """A RouterDC task file, or the folder of them (split taken from `_train`/`_test` names)."""
    items: list[RecordedItem] = []
    models: list[str] = []
    for file in files_in(path, ".json"):
        data = read_json(file)
        if not isinstance(data, list):
            raise ConfigError("expected a JSON list of items", path=str(file))
        task, split = _split_of(file.stem)
        choice = _multiple_choice(file) if data else False
        for number, row in enumerate(data):
            item = _routerdc_item(file, number, row, task, split, choice)
            for model in item.outcomes:
                if model not in models:
                    models.append(model)
            items.append(item)
    return make_recordings(str(path), "routerdc", models, items)


def _optional_float(row: dict[str, Any], name: str, path: Path, line: int) -> float | None:
    """A count or a duration: a finite, non-negative number when present."""
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(
            f"field {name!r} must be a non-negative number", path=str(path), line=line
        )
    if not math.isfinite(value):
        raise ConfigError(f"field {name!r} must be finite", path=str(path), line=line)
    return float(value)


def _optional_count(row: dict[str, Any], name: str, path: Path, line: int) -> int | None:
    """A token count: a non-negative whole number when present. One written as a float is
    taken when whole (3.0, as pandas writes a column with gaps), refused otherwise (2.7 was cut
    to 2 without a word)."""
    value = _optional_float(row, name, path, line)
    if value is None:
        return None
    if not value.is_integer():
        raise ConfigError(
            f"field {name!r} must be a whole number, got {row[name]!r}", path=str(path), line=line
        )
    return int(value)


def _jsonl_outcome(row: dict[str, Any], path: Path, line: int) -> Outcome:
    confidence = row.get("confidence")
    return Outcome(
        text=text_field(row, "response", str(path), line, empty=True),
        score=recorded_score(row, str(path), line),
        cost=recorded_cost(row, str(path), line),
        input_tokens=_optional_count(row, "input_tokens", path, line),
        output_tokens=_optional_count(row, "output_tokens", path, line),
        confidence=None
        if confidence is None
        else unit_score(confidence, "field 'confidence'", str(path), line),
        latency_ms=_optional_float(row, "latency_ms", path, line),
        provider_model=str(row["provider_model"]) if row.get("provider_model") else None,
        synthetic=row.get("synthetic") is True,
    )


def load_jsonl(path: Path) -> Recordings:
    """Your own recordings: one JSON object per (prompt, model) line (see the module doc). Rows
    are grouped by the prompt as replay matches it (whitespace collapsed), so one model's row
    ending in a newline still joins the others'; the item keeps the first row's text."""
    grouped: dict[str, dict[str, Outcome]] = defaultdict(dict)
    first: dict[str, dict[str, Any]] = {}
    texts: dict[str, str] = {}
    seen_at: dict[tuple[str, str], str] = {}
    models: list[str] = []
    for file in files_in(path, ".jsonl"):
        for line, row in read_jsonl(file):
            text = text_field(row, "prompt", str(file), line)
            prompt = normalize_prompt(text)
            texts.setdefault(prompt, text)
            model = text_field(row, "model", str(file), line)
            if model not in models:
                models.append(model)
            outcome = _jsonl_outcome(row, file, line)
            earlier = grouped[prompt].get(model)
            # A re-run appended to the file differs in latency or cost; only another answer
            # or another score would change the accuracy.
            if earlier is not None and (earlier.text, earlier.score) != (
                outcome.text,
                outcome.score,
            ):
                # Which of two different recordings is true cannot be guessed; either choice
                # would silently change the accuracy.
                raise ConfigError(
                    f"model {model!r} has another, different recording of this prompt at"
                    f" {seen_at[(prompt, model)]}; keep one",
                    path=str(file),
                    line=line,
                )
            grouped[prompt][model] = outcome
            seen_at.setdefault((prompt, model), f"{file}:{line}")
            kept = first.setdefault(prompt, {})
            for name in ("label", "id", "split"):
                value = scalar_field(row, str(file), line, (name,))  # `"split": 2` as "2"
                if kept.get(name) is None and value is not None:
                    kept[name] = value
    items = [
        RecordedItem(
            id=str(first[prompt].get("id", f"item-{number}")),
            prompt=texts[prompt],
            outcomes=outcomes,
            label=first[prompt].get("label"),
            split=first[prompt].get("split"),
        )
        for number, (prompt, outcomes) in enumerate(grouped.items())
    ]
    return make_recordings(str(path), "jsonl", models, items)


FORMATS: dict[str, Loader] = {
    "routellm-gsm8k": load_gsm8k,
    "routellm-mmlu": load_mmlu,
    "routellm-mtbench": load_mtbench,
    "routerbench": load_routerbench,
    "routerdc": load_routerdc,
    "jsonl": load_jsonl,
}


_IN_USE: weakref.WeakValueDictionary[tuple[object, ...], Recordings] = weakref.WeakValueDictionary()
"""The recordings loaded in this process that something still holds (a yard's replay models),
by format and what `_identity` says of the file or folder."""


def _identity(path: Path) -> tuple[object, ...]:
    """The resolved path with the size and modification time of the file, or of each file in
    the folder: what changes when the recordings do. OSError when it is not there."""
    resolved = path.resolve()
    files = sorted(resolved.iterdir()) if resolved.is_dir() else [resolved]
    return (str(resolved), *((f.name, *_size_and_time(f)) for f in files))


def _size_and_time(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


def _parsed_once(fmt: str, loader: Loader, path: Path) -> Recordings:
    """`loader(path)`, or the same recordings loaded earlier in this process while they are in
    use and unchanged (`--data` naming the file the config's replay models read: a 45 MB file
    took 4 s to parse), under `path`'s name. Nothing is kept that nothing else holds."""
    try:
        key = (fmt, *_identity(path))
    except OSError:  # not there: the loader says so
        return loader(path)
    recordings = _IN_USE.get(key)
    if recordings is None:
        recordings = loader(path)
        _IN_USE[key] = recordings
    source = str(path)
    return recordings if recordings.source == source else replace(recordings, source=source)


def load_recordings(fmt: str, paths: list[Path]) -> Recordings:
    """Recordings of format `fmt` from one or more files or folders, merged by prompt."""
    loader = FORMATS.get(fmt)
    if loader is None:
        raise ConfigError(f"unknown recording format {fmt!r}{did_you_mean(fmt, FORMATS)}")
    loaded = [_parsed_once(fmt, loader, path) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    models: list[str] = []
    for part in loaded:
        models.extend(m for m in part.models if m not in models)
    items = [item for part in loaded for item in part.items]
    merged = make_recordings(" + ".join(p.source for p in loaded), fmt, models, items)
    return Recordings(
        source=merged.source,
        format=fmt,
        models=merged.models,
        items=merged.items,
        index=merged.index,
        duplicates=merged.duplicates + sum(p.duplicates for p in loaded),
        conflicting=merged.conflicting + sum(p.conflicting for p in loaded),
    )
