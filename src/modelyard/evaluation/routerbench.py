"""Loader for RouterBench rows (the `routerbench-train/` CSVs, or a folder of them).

Columns: `sample_id`, `prompt` (a stringified Python list of prompt parts, joined with newlines),
`eval_name`, one 0/1 score column per model, `<model>|model_response` (a stringified list) and
`<model>|total_cost` (USD for that query). An empty or NaN score means the model has no recorded
outcome for that row. The label is the answer most of the correct models gave (their first
line, stripped) for multiple-choice tasks, and none for MBPP (graded by unit tests).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from modelyard.errors import ConfigError
from modelyard.evaluation.recordings import (
    Outcome,
    RecordedItem,
    Recordings,
    make_recordings,
    unit_score,
    usd_cost,
)
from modelyard.evaluation.tabular import (
    files_in,
    parse_float,
    read_csv,
    refuse_other_format,
    require_columns,
)

RESPONSE = "|model_response"
COST = "|total_cost"
_FREE_TEXT_TASKS = ("mbpp",)


def parse_parts(value: str, path: Path, line: int, column: str) -> str:
    """A stringified Python list of strings (RouterBench's prompt and response cells) as text."""
    text = value.strip()
    if not text.startswith("["):
        return text
    try:
        parts = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(
            f"column {column!r}: not a Python list literal: {text[:40]!r}",
            path=str(path),
            line=line,
        ) from None
    if not isinstance(parts, list):
        raise ConfigError(f"column {column!r}: expected a list", path=str(path), line=line)
    return "\n".join(str(p) for p in parts)


def _label(task: str, outcomes: dict[str, Outcome]) -> str | None:
    if task.startswith(_FREE_TEXT_TASKS):
        return None
    answers = Counter(
        o.text.strip().splitlines()[0].strip()
        for o in outcomes.values()
        if o.score == 1.0 and o.text.strip()
    )
    return answers.most_common(1)[0][0] if answers else None


def _load_file(path: Path) -> tuple[list[str], list[RecordedItem]]:
    header, rows = read_csv(path)
    refuse_other_format(path, header, "routerbench")
    require_columns(path, header, ["prompt", "sample_id"])
    # A model is known by its response or its cost column, so a file that lost either one
    # names that column rather than saying the model is not recorded.
    models = list(
        dict.fromkeys(
            c.removesuffix(RESPONSE).removesuffix(COST)
            for c in header
            if c.endswith((RESPONSE, COST))
        )
    )
    if not models:
        raise ConfigError(f"no '<model>{RESPONSE}' columns", path=str(path))
    require_columns(path, header, [c for m in models for c in (m, m + RESPONSE, m + COST)])
    items = []
    for line, row in rows:
        outcomes = {}
        for model in models:
            score = parse_float(row[model], path, line, model)
            if score is None:
                continue
            cost = parse_float(row[model + COST], path, line, model + COST)
            outcomes[model] = Outcome(
                text=parse_parts(row[model + RESPONSE], path, line, model + RESPONSE).strip(),
                score=unit_score(score, f"column {model!r}", str(path), line),
                cost=None
                if cost is None
                else usd_cost(cost, f"column {model + COST!r}", str(path), line),
            )
        task = row.get("eval_name", "")
        prompt = parse_parts(row["prompt"], path, line, "prompt")
        if not prompt.strip():
            raise ConfigError("column 'prompt' is empty", path=str(path), line=line)
        items.append(
            RecordedItem(
                id=row["sample_id"],
                prompt=prompt,
                outcomes=outcomes,
                label=_label(task, outcomes),
                meta={"task": task, "file": path.name},
            )
        )
    return models, items


def load_routerbench(path: Path) -> Recordings:
    """One RouterBench CSV, or every CSV in a folder (the same models in each)."""
    models: list[str] = []
    items: list[RecordedItem] = []
    for file in files_in(path, ".csv"):
        file_models, file_items = _load_file(file)
        if models and set(file_models) != set(models):
            raise ConfigError("model columns differ from the other files", path=str(file))
        models = models or file_models
        items.extend(file_items)
    return make_recordings(str(path), "routerbench", models, items)
