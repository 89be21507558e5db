"""Loaders for RouteLLM's recorded outcomes (GPT-4-1106 vs Mixtral-8x7B): GSM8K with response
texts, MMLU with correctness only, MT-Bench with GPT-4 judge scores.

- `routellm-gsm8k`: `prompt`, one True/False column per model and `<model>_response` (the
  models are the columns with a response column; any other column is ignored, and a response
  column without its True/False column is an error naming it). Label: the
  final number of the first correct response (`normalise.number`: the stated `#### N` or
  "answer is N", else its last number); none when no model was right.
- `routellm-mmlu`: a subject CSV or the folder of them; `prompt` and one True/False column per
  model; no response text and no gold letter, so answers are synthesised (`synthetic.py`) and
  the label is the pseudo-gold letter. Token use: the prompt, and one output token.
- `routellm-mtbench`: the `mt_bench` folder (`question.jsonl` + `judgements.jsonl`); one item per
  question and turn, keyed by that turn's user text; score = judge score / 10; the answer text
  is cut from the judge prompt.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from modelyard.errors import ConfigError
from modelyard.evaluation.recordings import (
    Outcome,
    RecordedItem,
    Recordings,
    make_recordings,
    unit_score,
)
from modelyard.evaluation.synthetic import choice_answer, option_letters, pseudo_gold
from modelyard.evaluation.tabular import (
    files_in,
    index_column,
    parse_bool,
    read_csv,
    read_jsonl,
    refuse_other_format,
    require_columns,
)
from modelyard.patterns import normalise

RESPONSE_SUFFIX = "_response"


def _gsm8k_models(path: Path, header: list[str]) -> list[str]:
    """The models: one per `<model>_response` column, each with its True/False `<model>`
    column. ConfigError naming a response column without one: left out, a model whose
    correctness column was misnamed would vanish from the recordings without a word."""
    models = [c.removesuffix(RESPONSE_SUFFIX) for c in header if c.endswith(RESPONSE_SUFFIX)]
    if not models:
        raise ConfigError(
            f"no '<model>{RESPONSE_SUFFIX}' columns: routellm-gsm8k reads each model from a "
            f"True/False column '<model>' and its answers in '<model>{RESPONSE_SUFFIX}'",
            path=str(path),
        )
    for model in models:
        if model not in header:
            raise ConfigError(
                f"column {model + RESPONSE_SUFFIX!r} ends in '{RESPONSE_SUFFIX}', so "
                f"routellm-gsm8k reads it as the answers of a model {model!r}, but there is no "
                f"True/False column {model!r} with their correctness: add it, or rename or "
                "remove the column if it holds no model's answers",
                path=str(path),
            )
    return models


def load_gsm8k(path: Path) -> Recordings:
    """RouteLLM's `gsm8k_responses.csv`."""
    header, rows = read_csv(path)
    refuse_other_format(path, header, "routellm-gsm8k")
    require_columns(path, header, ["prompt"])
    models = _gsm8k_models(path, header)
    items = []
    for number, (line, row) in enumerate(rows):
        outcomes = {}
        label = None
        for model in models:
            score = parse_bool(row[model], path, line, model)
            text = row[model + RESPONSE_SUFFIX].strip()
            outcomes[model] = Outcome(text=text, score=score)
            if label is None and score == 1.0:
                label = normalise.number(text)
        items.append(
            RecordedItem(id=f"gsm8k-{number}", prompt=row["prompt"], outcomes=outcomes, label=label)
        )
    return make_recordings(str(path), "routellm-gsm8k", models, items)


def _mmlu_score(value: str, file: Path, line: int, column: str) -> float | None:
    """A model's True/False cell; a column of something else is named as not being a model."""
    try:
        return parse_bool(value, file, line, column)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message}; routellm-mmlu reads every column besides 'prompt' as a model's "
            "True/False scores: remove the column if it is not a model",
            path=str(file),
            line=line,
        ) from None


def load_mmlu(path: Path) -> Recordings:
    """A RouteLLM `mmlu_<subject>.csv`, or the folder of all 57."""
    items: list[RecordedItem] = []
    models: list[str] = []
    for file in files_in(path, ".csv"):
        header, rows = read_csv(file)
        refuse_other_format(file, header, "routellm-mmlu")
        require_columns(file, header, ["prompt"])
        # pandas writes its row numbers as a column unless told not to: not a model
        file_models = [c for c in header if c != "prompt" and not index_column(c)]
        if not file_models:
            raise ConfigError("no model columns besides 'prompt'", path=str(file))
        if models and set(file_models) != set(models):
            raise ConfigError(
                f"model columns differ from the other files ({', '.join(models)})", path=str(file)
            )
        models = models or file_models
        subject = file.stem.removeprefix("mmlu_")
        for number, (line, row) in enumerate(rows):
            prompt = row["prompt"]
            letters = option_letters(prompt) or "ABCD"
            outcomes = {}
            for model in models:
                score = _mmlu_score(row[model], file, line, model)
                if score is None:
                    continue
                text = choice_answer(prompt, model, score == 1.0, letters)
                outcomes[model] = Outcome(text=text, score=score, output_tokens=1, synthetic=True)
            items.append(
                RecordedItem(
                    id=f"mmlu-{subject}-{number}",
                    prompt=prompt,
                    outcomes=outcomes,
                    label=pseudo_gold(prompt, letters),
                    meta={"subject": subject},
                )
            )
    return make_recordings(str(path), "routellm-mmlu", models, items)


def _answer_from_judge_prompt(text: str) -> str:
    """The judged model's answer, cut out of the judge prompt (last assistant turn)."""
    if "[The Start of Assistant's Answer]" in text:
        inner = text.split("[The Start of Assistant's Answer]", 1)[1]
        return inner.split("[The End of Assistant's Answer]", 1)[0].strip()
    parts = text.split("### Assistant A:")
    if len(parts) > 1:
        last = parts[-1]
        return last.split("<|The End of Assistant A's Conversation", 1)[0].strip()
    return text.strip()


def load_mtbench(path: Path) -> Recordings:
    """RouteLLM's `mt_bench` folder: questions and GPT-4 judge scores per model and turn."""
    folder = path if path.is_dir() else path.parent
    questions_file = folder / "question.jsonl"
    judgements_file = folder / "judgements.jsonl"
    questions: dict[int, list[str]] = {}
    for line, row in read_jsonl(questions_file):
        if "question_id" not in row or "turns" not in row:
            raise ConfigError(
                "missing field 'question_id' or 'turns'", path=str(questions_file), line=line
            )
        questions[int(row["question_id"])] = [str(t) for t in row["turns"]]
    outcomes: dict[tuple[int, int], dict[str, Outcome]] = defaultdict(dict)
    models: list[str] = []
    for line, row in read_jsonl(judgements_file):
        for name in ("question_id", "model", "score", "turn", "user_prompt"):
            if name not in row:
                raise ConfigError(f"missing field {name!r}", path=str(judgements_file), line=line)
        model = str(row["model"])
        if model not in models:
            models.append(model)
        key = (int(row["question_id"]), int(row["turn"]))
        outcomes[key][model] = Outcome(
            text=_answer_from_judge_prompt(str(row["user_prompt"])),
            score=unit_score(row["score"], "field 'score'", str(judgements_file), line, scale=10),
        )
    items = []
    for (question, turn), by_model in sorted(outcomes.items()):
        turns = questions.get(question)
        if turns is None or turn > len(turns):
            raise ConfigError(
                f"judgement for question {question} turn {turn} has no question text",
                path=str(judgements_file),
            )
        items.append(
            RecordedItem(
                id=f"mtbench-{question}-{turn}",
                prompt=turns[turn - 1],
                outcomes=by_model,
                meta={"turn": str(turn)},
            )
        )
    return make_recordings(str(folder), "routellm-mtbench", models, items)
