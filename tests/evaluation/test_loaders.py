"""Loaders on small slices of the real recordings, and their errors on bad files."""

from __future__ import annotations

import csv
import gc
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.evaluation.dataset import load_items, select_split
from modelyard.evaluation.formats import FORMATS, load_jsonl, load_recordings
from modelyard.evaluation.synthetic import pseudo_gold
from modelyard.patterns.training import OutcomesError, read_outcomes
from tests.evaluation.conftest import own_rows, write_jsonl

GSM8K = "routellm/gsm8k/gsm8k_responses.csv"
MMLU = "routellm/mmlu/responses/mmlu_anatomy.csv"
ROUTERBENCH = "routerbench-train/arc_challenge_train.csv"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GPT4 = "gpt-4-1106-preview"


def test_gsm8k_rows_carry_both_models_texts_and_correctness(
    sliced: Callable[[str, int], Path],
) -> None:
    recordings = load_recordings("routellm-gsm8k", [sliced(GSM8K, 12)])
    assert len(recordings.items) == 12
    assert set(recordings.models) == {MIXTRAL, GPT4}
    first = recordings.items[0]
    assert first.prompt.startswith("Janet’s ducks lay 16 eggs")
    assert first.outcomes[MIXTRAL].text.endswith("#### 18")
    assert {o.score for i in recordings.items for o in i.outcomes.values()} <= {0.0, 1.0}


def test_gsm8k_label_is_the_final_number_of_a_correct_answer(
    sliced: Callable[[str, int], Path],
) -> None:
    recordings = load_recordings("routellm-gsm8k", [sliced(GSM8K, 12)])
    assert recordings.items[0].label == "18"
    for item in recordings.items:
        right = [o for o in item.outcomes.values() if o.score == 1.0]
        assert (item.label is None) == (not right)


def _gsm8k_file(tmp_path: Path, header: list[str], row: list[str]) -> Path:
    path = tmp_path / "gsm8k.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, row])
    return path


def test_a_gsm8k_response_column_of_no_model_is_named_with_what_it_lacks(
    tmp_path: Path,
) -> None:
    # A grader's text beside the models' answers failed with "missing column 'judge'".
    header = ["prompt", "a", "a_response", "judge_response"]
    path = _gsm8k_file(tmp_path, header, ["1 + 1?", "True", "#### 2", "looks right"])
    with pytest.raises(ConfigError) as caught:
        load_recordings("routellm-gsm8k", [path])
    message = str(caught.value)
    assert message.startswith(f"{path}: column 'judge_response' ends in '_response'")
    assert "no True/False column 'judge'" in message and "missing column" not in message
    assert "remove the column if it holds no model's answers" in message


def test_mmlu_synthesised_answers_are_right_exactly_when_recorded_right(
    sliced: Callable[[str, int], Path],
) -> None:
    recordings = load_recordings("routellm-mmlu", [sliced(MMLU, 30)])
    assert len(recordings.items) == 30
    for item in recordings.items:
        assert item.label == pseudo_gold(item.prompt)
        for outcome in item.outcomes.values():
            assert outcome.synthetic
            assert (outcome.text == item.label) == (outcome.score == 1.0)
    assert recordings.items[0].meta["subject"] == "anatomy"


def test_routerbench_prompt_and_responses_are_parsed_from_list_literals(
    sliced: Callable[[str, int], Path],
) -> None:
    recordings = load_recordings("routerbench", [sliced(ROUTERBENCH, 8)])
    assert len(recordings.models) == 11
    item = recordings.items[0]
    assert not item.prompt.startswith("[")
    assert "Which skin surface will produce the most heat?" in item.prompt
    assert item.outcomes["claude-v1"].text == "D"
    assert item.outcomes[GPT4].cost == pytest.approx(0.00533)
    assert item.label == "D"
    assert item.meta["task"] == "arc-challenge"


def test_routerdc_multiple_choice_scores_become_correctness_without_confidence(
    sliced: Callable[[str, int], Path],
) -> None:
    recordings = load_recordings("routerdc", [sliced("routerdc-7llm/mmlu_test.json", 10)])
    assert len(recordings.models) == 7
    item = recordings.items[0]
    assert item.split == "test"
    for outcome in item.outcomes.values():
        assert outcome.score in (0.0, 1.0)
        assert outcome.confidence is None


def test_routerdc_generation_scores_keep_their_fraction(
    sliced: Callable[[str, int], Path],
) -> None:
    recordings = load_recordings("routerdc", [sliced("routerdc-7llm/gsm8k-train.json", 5)])
    item = recordings.items[0]
    assert item.split == "train"
    assert item.outcomes["HuggingFaceH4/zephyr-7b-beta"].score == pytest.approx(0.9)
    assert item.label is None


def test_routerdc_generation_answers_do_not_carry_their_score(
    sliced: Callable[[str, int], Path],
) -> None:
    # A system reads the answer text; a text naming the recorded score would hand a cascade's
    # agreement check (or a verifier) the label: MetaMath and dolphin "agreed" exactly when
    # their scores were equal.
    recordings = load_recordings("routerdc", [sliced("routerdc-7llm/gsm8k-train.json", 20)])
    assert any(len({o.score for o in i.outcomes.values()}) > 1 for i in recordings.items)
    for item in recordings.items:
        texts = {outcome.text for outcome in item.outcomes.values()}
        assert len(texts) == 1 and not re.search(r"\d", texts.pop())


@pytest.mark.parametrize("name", ["heldout_mmlu.json", "rdc-arc_challenge-calib.json"])
def test_routerdc_multiple_choice_file_is_read_as_such_whatever_comes_before_its_task(
    tmp_path: Path, name: str
) -> None:
    # A held-out copy named after its task but not starting with it was read as a generation
    # task: each right answer's gold probability counted as a fraction of a right answer, and
    # every model answered the same placeholder, so an agreement cascade never accepted.
    path = tmp_path / name
    path.write_text(json.dumps([{"question": "Q?\nA. x\nB. y", "scores": {"m": 0.62, "n": 0}}]))
    item = load_recordings("routerdc", [path]).items[0]
    assert item.outcomes["m"].score == 1.0 and item.outcomes["n"].score == 0.0
    assert item.label is not None and item.outcomes["m"].text == item.label


def test_routerdc_file_whose_name_names_no_known_task_is_refused(tmp_path: Path) -> None:
    # Its scores mean different things for multiple-choice and generation tasks, and only the
    # file name says which: a guess would be a silently wrong accuracy either way.
    path = tmp_path / "heldout.json"
    path.write_text(json.dumps([{"question": "Q?", "scores": {"m": 0.62}}]))
    with pytest.raises(ConfigError, match=r"heldout\.json: cannot tell from the file name"):
        load_recordings("routerdc", [path])


def test_mtbench_scores_are_judge_scores_over_ten(data: Path) -> None:
    recordings = load_recordings("routellm-mtbench", [data / "routellm/mt_bench"])
    assert len(recordings.items) == 160
    scores = [o.score for i in recordings.items for o in i.outcomes.values()]
    assert all(s is not None and 0.1 <= s <= 1.0 for s in scores)
    first = recordings.items[0]
    assert "Assistant" not in first.outcomes[GPT4].text[:30]


def test_missing_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("question,gpt-4\nhi,True\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_recordings("routellm-mmlu", [path])
    assert "'prompt'" in str(caught.value) and "bad.csv" in str(caught.value)


def test_routerbench_without_a_models_response_column_names_that_column(tmp_path: Path) -> None:
    # The models were found by their response columns only, so a file that lost one model's
    # said that model "is not in the recordings" though its score and cost columns were there.
    path = tmp_path / "rb.csv"
    path.write_text(
        "sample_id,prompt,m,m|model_response,m|total_cost,n,n|total_cost\n"
        "1,\"['q']\",1.0,\"['A']\",0.1,0.0,0.2\n"
    )
    with pytest.raises(ConfigError, match=r"rb\.csv: missing column 'n\|model_response'"):
        load_recordings("routerbench", [path])


RB_HEADER = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
RB_ROW = "a,['Q1'],arc,1,['A'],0.1\n"
GSM_HEADER = f"prompt,{GPT4},{GPT4}_response\n"
GSM_ROW = "Q1,True,#### 3\n"


@pytest.mark.parametrize(
    ("text", "fmt", "found"),
    [
        (RB_HEADER + RB_ROW, "routellm-gsm8k", "routerbench"),
        (RB_HEADER + RB_ROW, "routellm-mmlu", "routerbench"),
        (RB_HEADER + RB_ROW, "labelled", "routerbench"),
        (GSM_HEADER + GSM_ROW, "routerbench", "routellm-gsm8k"),
        (GSM_HEADER + GSM_ROW, "routellm-mmlu", "routellm-gsm8k"),
        (GSM_HEADER + GSM_ROW, "labelled", "routellm-gsm8k"),
    ],
)
def test_a_csv_read_as_the_wrong_format_names_the_format_its_columns_are(
    tmp_path: Path, text: str, fmt: str, found: str
) -> None:
    # Read as another format such a file failed on a column it never meant to have ("missing
    # column 'm|model'", "column '': expected True/False") or, as a labelled set, asked every
    # prompt unlabelled and reported no accuracy with exit 0.
    path = tmp_path / "rec.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"rec\.csv: .*those of {found} recordings") as caught:
        load_items(str(path), fmt)
    assert f"--format {found}" in str(caught.value)


def test_a_labelled_csv_with_a_label_may_have_response_columns(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    path.write_text("prompt,label,draft_response\nQ1,3,#### 3\n")
    assert load_items(str(path))[0].label == "3"


def test_routerbench_without_cost_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rb.csv"
    path.write_text("sample_id,prompt,m,m|model_response\n1,\"['q']\",1.0,\"['A']\"\n")
    with pytest.raises(ConfigError) as caught:
        load_recordings("routerbench", [path])
    assert "'m|total_cost'" in str(caught.value)


def test_jsonl_groups_rows_by_prompt_with_their_tokens_and_costs(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"prompt": "2+2?", "model": "small", "response": "5", "correct": False, "cost": 0.1},
            {
                "prompt": "2+2?",
                "model": "big",
                "response": "4",
                "score": 1.0,
                "input_tokens": 3,
                "output_tokens": 1,
                "label": "4",
                "confidence": 0.9,
            },
        ],
    )
    recordings = load_recordings("jsonl", [path])
    assert recordings.models == ("small", "big")
    (item,) = recordings.items
    assert item.label == "4"
    assert item.outcomes["small"].score == 0.0 and item.outcomes["small"].cost == 0.1
    assert item.outcomes["big"].input_tokens == 3 and item.outcomes["big"].confidence == 0.9


def test_jsonl_missing_field_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "x", "model": "m"}])
    with pytest.raises(ConfigError) as caught:
        load_recordings("jsonl", [path])
    assert caught.value.line == 1 and "'response'" in str(caught.value)


def test_duplicate_prompts_keep_the_first_and_are_counted(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dup.jsonl",
        [
            {"prompt": "same  prompt", "model": "m", "response": "first"},
            {"prompt": "other", "model": "m", "response": "x"},
        ],
    )
    second = write_jsonl(
        tmp_path / "dup2.jsonl", [{"prompt": "same prompt", "model": "m", "response": "second"}]
    )
    recordings = load_recordings("jsonl", [path, second])
    assert recordings.duplicates == 1
    assert recordings.lookup("same prompt") is not None
    assert recordings.lookup("same prompt").outcomes["m"].text == "first"  # type: ignore[union-attr]


def test_rows_repeating_a_prompt_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # RouteLLM's MMLU files repeat 105 prompts across subjects, 4 with other outcomes.
    folder = tmp_path / "mmlu"
    folder.mkdir()
    header = f"prompt,{MIXTRAL},{GPT4}\n"
    (folder / "mmlu_a.csv").write_text(header + "Q1,True,False\nQ2,True,True\n")
    (folder / "mmlu_b.csv").write_text(header + "Q1,False,False\nQ2,True,True\nQ3,True,True\n")
    items = load_items(str(folder), "routellm-mmlu")
    assert len(items) == 3
    assert "2 rows repeat the prompt of an earlier row and are left out" in caplog.text
    assert "1 of them recorded other outcomes" in caplog.text


def test_items_of_distinct_prompts_sharing_an_id_get_distinct_ids(tmp_path: Path) -> None:
    # RouterBench's ARC file repeats 7 sample_ids on different prompts, and a RouterDC folder
    # numbers the items of its _train and _test files alike; gate and the oracle pair results
    # by id, so two items with one id were compared with each other's results.
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
    path = tmp_path / "rb.csv"
    path.write_text(header + "a,['Q1'],arc,1,['A'],0.1\na,['Q2'],arc,0,['B'],0.1\n")
    ids = [item.id for item in load_items(str(path), "routerbench")]
    assert ids[0] == "a" and len(set(ids)) == 2
    folder = tmp_path / "dc"
    folder.mkdir()
    for name in ("arc_challenge_train.json", "arc_challenge_test.json"):
        rows = [{"question": f"{name} {n}?", "scores": {"m": 1}} for n in range(2)]
        (folder / name).write_text(json.dumps(rows))
    ids = [item.id for item in load_items(str(folder), "routerdc")]
    assert len(set(ids)) == 4


def test_two_different_recordings_of_one_prompt_and_model_are_refused(tmp_path: Path) -> None:
    same = {"prompt": "q", "model": "m", "response": "4", "correct": True}
    path = write_jsonl(tmp_path / "rec.jsonl", [same, {**same, "prompt": "r"}, same])
    assert load_recordings("jsonl", [path]).lookup("q") is not None  # a repeat is harmless
    rerun = write_jsonl(tmp_path / "rerun.jsonl", [same, {**same, "latency_ms": 812.0}])
    assert load_recordings("jsonl", [rerun]).lookup("q") is not None  # only timing differs
    clash = write_jsonl(tmp_path / "clash.jsonl", [same, {**same, "correct": False}])
    with pytest.raises(ConfigError) as caught:
        load_recordings("jsonl", [clash])
    assert caught.value.line == 2
    assert f"different recording of this prompt at {clash}:1" in str(caught.value)


def test_a_nan_score_in_jsonl_recordings_is_a_load_error_naming_the_line(tmp_path: Path) -> None:
    rows = own_rows()
    rows[4]["score"] = float("nan")
    path = write_jsonl(tmp_path / "rec.jsonl", rows)
    with pytest.raises(ConfigError, match=r"rec\.jsonl:5: field 'score' must be a finite number"):
        load_recordings("jsonl", [path])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("score", 5, "field 'score' must be a finite number from 0 to 1, got 5"),
        ("score", -3, "field 'score' must be a finite number from 0 to 1, got -3"),
        ("cost", -1, "field 'cost' must be a non-negative number of USD, got -1"),
        ("cost", float("inf"), "field 'cost' must be a non-negative number of USD, got inf"),
        ("confidence", 1.5, "field 'confidence' must be a finite number from 0 to 1"),
        ("prompt", 12345, "field 'prompt' must be a non-empty string, got 12345"),
        ("model", 7, "field 'model' must be a non-empty string, got 7"),
        ("response", None, "field 'response' must be a string, got None"),
        ("response", 42, "field 'response' must be a string, got 42"),
        # A list or an object became its Python repr: "['train']" is in no split.
        ("split", ["train"], "field 'split' must be a string or a number, got ['train']"),
        ("split", float("nan"), "field 'split' must be a finite number, got nan"),
        ("id", {"n": 2}, "field 'id' must be a string or a number, got {'n': 2}"),
    ],
)
def test_jsonl_recordings_reject_impossible_values_as_train_does(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    rows = own_rows()
    rows[4][field] = value
    path = write_jsonl(tmp_path / "rec.jsonl", rows)
    with pytest.raises(ConfigError, match=rf"rec\.jsonl:5: {re.escape(message)}"):
        load_recordings("jsonl", [path])
    if field not in ("confidence", "response", "split", "id"):  # train reads none of them
        with pytest.raises(OutcomesError, match=rf"rec\.jsonl:5: {re.escape(message)}"):
            read_outcomes(path)


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens"])
def test_a_token_count_in_jsonl_recordings_is_a_whole_number(tmp_path: Path, field: str) -> None:
    """A count of 2.7 tokens was cut to 2 without a word. It is a load error naming the file,
    line and field; a whole number written as a float (3.0, as pandas writes a column with
    gaps) is that number."""
    rows = own_rows()
    rows[4][field] = 2.7
    path = write_jsonl(tmp_path / "rec.jsonl", rows)
    message = f"rec.jsonl:5: field '{field}' must be a whole number, got 2.7"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recordings("jsonl", [path])
    rows[4][field] = 3.0
    item = load_recordings("jsonl", [write_jsonl(path, rows)]).lookup("What is 2 + 2?")
    assert item is not None
    count = getattr(item.outcomes["weak"], field)
    assert count == 3 and isinstance(count, int)


def test_routerbench_rejects_a_score_above_one_and_a_negative_cost(tmp_path: Path) -> None:
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
    path = tmp_path / "rb.csv"
    path.write_text(header + "a,['Q1'],arc,1,['A'],0.1\nb,['Q2'],arc,5,['B'],0.1\n")
    with pytest.raises(ConfigError, match=r"rb\.csv:3: column 'm' must be a finite number"):
        load_recordings("routerbench", [path])
    path.write_text(header + "a,['Q1'],arc,1,['A'],-0.1\n")
    with pytest.raises(ConfigError, match=r"rb\.csv:2: column 'm\|total_cost' must be a non-neg"):
        load_recordings("routerbench", [path])


def test_a_routerbench_cell_that_is_not_a_list_literal_names_its_line(tmp_path: Path) -> None:
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
    path = tmp_path / "rb.csv"
    path.write_text(header + "a,['Q1'],arc,1,['A'],0.1\nb,['Q2'],arc,1,\"['B\",0.1\n")
    with pytest.raises(ConfigError, match=r"rb\.csv:3: column 'm\|model_response': not a Python"):
        load_recordings("routerbench", [path])


def test_a_csv_saved_with_a_byte_order_mark_keeps_its_first_column(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" (and many Windows tools) start the file with a BOM, which would
    # otherwise become part of the first column's name ("\ufeffsample_id": "missing column").
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\r\n"
    path = tmp_path / "rb.csv"
    path.write_text(header + "a,['Q1'],arc,1,['A'],0.1\r\n", encoding="utf-8-sig")
    assert [item.id for item in load_items(str(path), "routerbench")] == ["a"]


def test_a_routerbench_row_with_an_empty_prompt_names_its_line(tmp_path: Path) -> None:
    # It would be asked as an empty message and scored, as JSONL and labelled sets refuse.
    header = "sample_id,prompt,eval_name,m,m|model_response,m|total_cost\n"
    path = tmp_path / "rb.csv"
    path.write_text(header + "a,['Q1'],arc,1,['A'],0.1\nb,[' '],arc,1,['B'],0.1\n")
    with pytest.raises(ConfigError, match=r"rb\.csv:3: column 'prompt' is empty"):
        load_recordings("routerbench", [path])


def test_routerdc_rejects_a_score_outside_zero_to_one(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k-test.json"
    path.write_text(
        json.dumps(
            [{"question": "Q?", "scores": {"m": 0.5}}, {"question": "R?", "scores": {"m": 1.5}}]
        )
    )
    with pytest.raises(ConfigError, match=r"item 1: score of 'm' must be a finite number"):
        load_recordings("routerdc", [path])


def test_a_null_routerdc_score_is_not_recorded_as_a_missing_key_is(tmp_path: Path) -> None:
    # pandas' to_json writes a model missing from a row as null; a held-out file made so
    # must load, with that model's answer not recorded there (a call asking it fails).
    path = tmp_path / "mmlu_heldout.json"
    rows = [
        {"question": "Q?\nA. 1\nB. 2", "scores": {"m": 0.9, "n": None}},
        {"question": "R?\nA. 1\nB. 2", "scores": {"m": 0.0, "n": 0.7}},
    ]
    path.write_text(json.dumps(rows))
    first, second = load_recordings("routerdc", [path]).items
    assert set(first.outcomes) == {"m"}
    assert second.outcomes["n"].score == 1.0


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"question": None, "scores": {"m": 1}}, "item 1: 'question' must be a non-empty string"),
        ({"question": 12345, "scores": {"m": 1}}, "item 1: 'question' must be a non-empty string"),
        ({"question": "R?", "scores": ["m", 1]}, "item 1: 'scores' must be an object"),
        ({"question": "R?", "scores": 5}, "item 1: 'scores' must be an object"),
    ],
)
def test_routerdc_rejects_a_question_or_scores_of_the_wrong_type(
    tmp_path: Path, item: dict[str, object], message: str
) -> None:
    # A null question would reach the models as the text 'None'; a list of scores crashed.
    path = tmp_path / "mmlu_test.json"
    path.write_text(json.dumps([{"question": "Q?", "scores": {"m": 1}}, item]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recordings("routerdc", [path])


def test_a_csv_row_with_too_few_cells_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gsm.csv"
    header = f"prompt,{MIXTRAL},{MIXTRAL}_response\n"
    path.write_text(header + 'Q1,True,"line one\nline two #### 3"\nQ2,False\n')
    with pytest.raises(ConfigError, match=r"gsm\.csv:4: row has 2 cells, header has 3"):
        load_recordings("routellm-gsm8k", [path])


def test_a_csv_header_naming_a_column_twice_is_an_error(tmp_path: Path) -> None:
    # The row's cells went into a dict by name: the second 'prompt' silently won.
    path = tmp_path / "golden.csv"
    path.write_text("prompt,label,prompt\nWhat is 2+2?,4,What is 3+3?\n")
    with pytest.raises(ConfigError, match=r"golden\.csv:1: column 'prompt' is named twice"):
        load_items(str(path))


def test_a_labelled_csv_row_with_extra_cells_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "golden.csv"
    path.write_text("prompt,label\nWhat is 2+2?,4\nWhat is 3+3?,6,extra\n")
    with pytest.raises(ConfigError, match=r"golden\.csv:3: row has 3 cells, header has 2"):
        load_items(str(path))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", None, "field 'prompt' must be a non-empty string, got None"),
        ("prompt", 12345, "field 'prompt' must be a non-empty string, got 12345"),
        ("label", [1, 2], "field 'label' must be a string or a number, got [1, 2]"),
        # A NaN label became the text 'nan', which every scorer then marked wrong.
        ("label", float("nan"), "field 'label' must be a finite number, got nan"),
        # A message without text content reached the model as '' or as a list's Python repr.
        ("messages", [{"role": "user"}], "each message needs a role (system, user, assistant)"),
        (
            "messages",
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "each message needs a role (system, user, assistant) and its content as a string",
        ),
        ("messages", [{"role": "system", "content": "Be brief."}], "'messages' has no user text"),
        # A list or an object became its Python repr: "['train']" is in no split.
        ("split", ["train"], "field 'split' must be a string or a number, got ['train']"),
        ("id", {"n": 2}, "field 'id' must be a string or a number, got {'n': 2}"),
    ],
)
def test_a_labelled_set_rejects_fields_of_the_wrong_type(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    rows: list[dict[str, object]] = [
        {"prompt": f"What is {n}+{n}?", "label": 2 * n} for n in (1, 2)
    ]
    rows[1][field] = value
    path = write_jsonl(tmp_path / "golden.jsonl", rows)
    with pytest.raises(ConfigError, match=rf"golden\.jsonl:2: {re.escape(message)}"):
        load_items(str(path))


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_repeated_item_id_names_both_lines(tmp_path: Path, suffix: str) -> None:
    # It named the file only: in a file of thousands of rows, which two?
    rows = [{"id": f"q{n}", "prompt": f"What is {n}+{n}?", "label": str(2 * n)} for n in range(4)]
    rows[3]["id"] = "q1"
    path = tmp_path / f"golden.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, rows)
    else:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["id", "prompt", "label"])
            writer.writeheader()
            writer.writerows(rows)
    line, earlier = (4, 2) if suffix == "jsonl" else (5, 3)
    message = rf"golden\.{suffix}:{line}: item id 'q1' is also the id of line {earlier}"
    with pytest.raises(ConfigError, match=message):
        load_items(str(path))


def test_a_numeric_id_or_split_is_read_as_its_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "golden.jsonl", [{"prompt": "Q?", "id": 7, "split": 2}])
    item = load_items(str(path))[0]
    assert (item.id, item.split) == ("7", "2")


def test_a_labelled_set_keeps_a_numeric_label_as_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "golden.jsonl", [{"prompt": "What is 9+9?", "answer": 18}])
    assert load_items(str(path))[0].label == "18"


def test_a_labelled_set_asking_one_prompt_with_two_labels_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        {"id": "a", "prompt": "2 + 2?", "label": "4"},
        {"id": "b", "prompt": "3 + 3?", "label": "6"},
        {"id": "c", "prompt": "2 + 2?", "label": "4"},  # a repeat is harmless
    ]
    assert len(load_items(str(write_jsonl(tmp_path / "ok.jsonl", rows)))) == 3
    assert "different labels" not in caplog.text
    rows.append({"id": "d", "prompt": "2 + 2?", "label": "5"})
    assert len(load_items(str(write_jsonl(tmp_path / "clash.jsonl", rows)))) == 4
    assert "items 'a' and 'd' ask the same prompt with different labels" in caplog.text


def test_a_csv_saved_with_windows_line_endings_reads_the_same_texts(
    sliced: Callable[[str, int], Path], tmp_path: Path
) -> None:
    unix = sliced(GSM8K, 12)
    windows = tmp_path / "windows.csv"
    windows.write_bytes(unix.read_bytes().replace(b"\n", b"\r\n"))
    expected = load_recordings("routellm-gsm8k", [unix])
    found = load_recordings("routellm-gsm8k", [windows])
    assert [i.prompt for i in found.items] == [i.prompt for i in expected.items]
    assert [i.outcomes for i in found.items] == [i.outcomes for i in expected.items]


def test_a_jsonl_file_starting_with_a_byte_order_mark_reads_its_first_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "own.jsonl"
    row = {"prompt": "What is 2+2?", "model": "m", "response": "4", "correct": True}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    assert load_recordings("jsonl", [path]).items[0].outcomes["m"].score == 1.0


def test_train_reads_a_jsonl_file_starting_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "own.jsonl"
    row = {"prompt": "What is 2+2?", "model": "m", "response": "4", "correct": True}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    assert [o.score for o in read_outcomes(path)] == [1.0]


def test_gsm8k_models_are_the_columns_with_responses_and_other_columns_are_ignored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gsm.csv"
    path.write_text(
        f",prompt,{MIXTRAL},{MIXTRAL}_response,note\n0,Q1,True,#### 3,checked\n",
        encoding="utf-8",
    )
    recordings = load_recordings("routellm-gsm8k", [path])
    assert recordings.models == (MIXTRAL,)
    assert recordings.items[0].outcomes[MIXTRAL].score == 1.0


def test_gsm8k_response_column_without_its_correctness_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gsm.csv"
    path.write_text(f"prompt,mixtral,{MIXTRAL}_response\nQ1,True,#### 3\n", encoding="utf-8")
    found = rf"gsm\.csv: column '{re.escape(MIXTRAL)}_response' .* no True/False column"
    with pytest.raises(ConfigError, match=found):
        load_recordings("routellm-gsm8k", [path])


def test_a_numeric_split_in_jsonl_recordings_is_read_as_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "own.jsonl", [{**r, "split": 2} for r in own_rows()])
    assert len(select_split(load_items(str(path), "jsonl"), "2")) == 4


def test_jsonl_rows_of_one_prompt_spaced_differently_are_one_item(tmp_path: Path) -> None:
    rows = own_rows()
    rows[1] = {**rows[1], "prompt": rows[1]["prompt"] + "\n"}  # `strong`'s row of the first prompt
    recordings = load_recordings("jsonl", [write_jsonl(tmp_path / "own.jsonl", rows)])
    assert len(recordings.items) == 4 and recordings.duplicates == 0
    assert set(recordings.items[0].outcomes) == {"weak", "strong"}


def test_a_missing_column_is_shown_beside_the_files_named_columns_in_their_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rb.csv"  # RouterBench files open with pandas' unnamed index column
    path.write_text(",sample_id,prompt,zeta,zeta|model_response\n0,1,\"['q']\",1.0,\"['A']\"\n")
    with pytest.raises(ConfigError) as caught:
        load_recordings("routerbench", [path])
    said = str(caught.value)
    assert "the file has: 'sample_id', 'prompt', 'zeta', 'zeta|model_response'" in said
    assert "''" not in said


@pytest.mark.parametrize("index", ["", "Unnamed: 0"])
def test_mmlu_ignores_the_row_numbers_pandas_writes_as_a_column(tmp_path: Path, index: str) -> None:
    path = tmp_path / "mmlu_anatomy.csv"  # pd.to_csv writes its index unless told not to
    rows = "".join(f"{n},Q{n},True,{n % 2 == 0}\n" for n in range(4))
    path.write_text(f"{index},prompt,{MIXTRAL},gpt-4\n{rows}", encoding="utf-8")
    recordings = load_recordings("routellm-mmlu", [path])
    assert recordings.models == (MIXTRAL, "gpt-4")
    assert [i.outcomes["gpt-4"].score for i in recordings.items] == [1.0, 0.0, 1.0, 0.0]


def test_mmlu_column_that_is_no_model_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "mmlu_anatomy.csv"
    path.write_text(f"prompt,{MIXTRAL},subject\nQ1,True,anatomy\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"mmlu_anatomy\.csv:2: column 'subject'.*not a model"):
        load_recordings("routellm-mmlu", [path])


_LATIN1 = "Combien font 2 + 2 ? Réponds".encode("latin-1")  # é as the single byte 0xe9


@pytest.mark.parametrize(
    ("name", "text", "fmt", "where"),
    [
        (
            "set.jsonl",
            b'{"prompt": "ok", "label": "1"}\n{"prompt": "%s", "label": "4"}\n',
            "labelled",
            "2: not UTF-8 text: byte 0xe9 at column 35",
        ),
        (
            "set.csv",
            b"prompt,label\nok,1\n%s,4\n",
            "labelled",
            "3: not UTF-8 text: byte 0xe9 at column 23",
        ),
        (
            "rec.jsonl",
            b'{"prompt": "ok", "model": "m", "response": "1"}\n'
            b'{"prompt": "%s", "model": "m", "response": "4"}\n',
            "jsonl",
            "2: not UTF-8 text: byte 0xe9 at column 35",
        ),
    ],
)
def test_a_file_not_saved_as_utf8_names_its_line_and_column(
    tmp_path: Path, name: str, text: bytes, fmt: str, where: str
) -> None:
    # A spreadsheet or an editor saving as Latin-1 or Windows-1252: it was a traceback for
    # JSONL, and "position 34" of an unknown chunk for CSV.
    path = tmp_path / name
    path.write_bytes(text.replace(b"%s", _LATIN1))
    with pytest.raises(ConfigError, match=rf"{re.escape(name)}:{where}"):
        load_items(str(path), fmt)


@pytest.mark.parametrize(
    ("fmt", "name"), [("routerbench", "routerbench_0shot.pkl"), ("jsonl", "rec.pkl")]
)
def test_a_pickle_is_named_as_one_with_how_to_convert_it(
    tmp_path: Path, fmt: str, name: str
) -> None:
    # RouterBench ships routerbench_0shot.pkl: it was "not UTF-8 text: byte 0x80 at column 1;
    # save the file as UTF-8", advice no spreadsheet can follow.
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"prompt": ["What is 2+2?"]}, protocol=4))
    with pytest.raises(ConfigError) as caught:
        load_recordings(fmt, [path])
    message = str(caught.value)
    assert f"{name}: a Python pickle, not text: pickles are not read" in message
    assert f"pd.read_pickle('{name}').to_csv('{path.stem}.csv')" in message


def test_a_routerdc_file_not_saved_as_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k-test.json"
    path.write_bytes(b'[\n{"question": "' + _LATIN1 + b'", "scores": {"m": 0.5}}\n]\n')
    with pytest.raises(ConfigError, match=r"gsm8k-test\.json:2: not UTF-8 text: byte 0xe9"):
        load_recordings("routerdc", [path])


def test_outcomes_not_saved_as_utf8_name_their_line_for_train(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    row = b'{"prompt": "%s", "model": "m", "response": "4", "correct": true}\n'
    path.write_bytes(row.replace(b"%s", b"ok") + row.replace(b"%s", _LATIN1))
    with pytest.raises(
        OutcomesError, match=r"rec\.jsonl:2: not UTF-8 text: byte 0xe9 at column 35"
    ):
        read_outcomes(path)


def test_a_recordings_file_in_use_is_parsed_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file named twice in a process (by --data and by the config's replay models)
    was parsed twice: 4 s more on a 45 MB file. While one load is in use, another of the same
    file (by resolved path, size and modification time) is that load, under its own name; a
    changed file is read again, and a load no longer in use is not kept."""
    parsed: list[Path] = []

    def counted(path: Path) -> object:
        parsed.append(path)
        return load_jsonl(path)

    monkeypatch.setitem(FORMATS, "jsonl", counted)
    monkeypatch.chdir(tmp_path)
    path = write_jsonl(tmp_path / "rec.jsonl", own_rows())
    first = load_recordings("jsonl", [path])
    again = load_recordings("jsonl", [Path("rec.jsonl")])  # another name for the same file
    assert len(parsed) == 1
    assert again.items is first.items and again.source == "rec.jsonl"
    assert first.source == str(path)

    stat = path.stat()  # the same size, another modification time: read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = load_recordings("jsonl", [path])
    assert len(parsed) == 2 and touched.items is not first.items
    rows = own_rows()
    rows[0]["response"] = "#### 10"  # another size
    write_jsonl(path, rows)
    changed = load_recordings("jsonl", [path])
    assert len(parsed) == 3
    item = changed.lookup("What is 0 + 0?")
    assert item is not None and item.outcomes["weak"].text == "#### 10"

    del first, again, touched, changed
    gc.collect()
    load_recordings("jsonl", [path])
    assert len(parsed) == 4  # nothing held once no one uses it
