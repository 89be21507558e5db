"""Scorers, including answers they cannot read (counted as unparsed, never guessed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import modelyard
from modelyard.errors import ConfigError
from modelyard.evaluation.dataset import Item
from modelyard.evaluation.replay import RECORDED_MODEL, RECORDED_SCORE
from modelyard.evaluation.scorers import (
    UNLABELLED,
    UNPARSED,
    CallableScorer,
    JudgeScorer,
    Score,
    make_scorer,
)
from modelyard.model import ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.types import ChatResponse, Choice, Decision, Message
from tests.evaluation.conftest import write_jsonl


def _response(text: str, decision: Decision | None = None, model: str = "m") -> ChatResponse:
    return ChatResponse(
        id="r",
        model=model,
        provider_model=model,
        choices=(Choice(message=Message(role="assistant", content=text)),),
        decision=decision,
    )


async def _score(spec: str, answer: str, label: str | None) -> Score:
    return await make_scorer(spec).score(Item(id="1", prompt="q", label=label), _response(answer))


async def test_exact_ignores_case_and_spacing() -> None:
    assert (await _score("exact", "  Paris \n", "paris")).value == 1.0
    assert (await _score("exact", "Lyon", "paris")).value == 0.0


@pytest.mark.parametrize(
    "answer", ["B", "(B)", "B) because", "The answer is B.", "Answer: (b)", "I pick option B"]
)
async def test_choice_reads_the_letter_in_common_shapes(answer: str) -> None:
    assert (await _score("choice", answer, "B")).value == 1.0


async def test_choice_without_a_letter_is_unparsed() -> None:
    score = await _score("choice", "I cannot decide between them", "B")
    assert score.value is None and score.reason == UNPARSED


async def test_number_takes_the_marked_or_last_number() -> None:
    assert (await _score("number", "2 + 2 = 4\n#### 1,200", "1200")).value == 1.0
    assert (await _score("number", "so she makes $18.00.", "18")).value == 1.0
    assert (await _score("number", "it is 17", "18")).value == 0.0
    assert (await _score("number", "no idea", "18")).reason == UNPARSED


async def test_a_label_the_scorer_cannot_read_leaves_the_item_out_whatever_the_answer() -> None:
    # Whether the answer held a number used to decide it: "no idea" was unparsed (counted
    # wrong), "it is 5" unlabelled (left out), so two systems were judged on different items,
    # and a failed call on the same item was left out too.
    for answer in ("no idea", "it is 5"):
        score = await _score("number", answer, "Paris")
        assert score.value is None and score.reason == UNLABELLED
    for answer in ("The answer is 64.", "B"):
        assert (await _score("choice", answer, "64")).reason == UNLABELLED


async def test_regex_compares_the_first_group() -> None:
    assert (await _score(r"regex:Final: (\w+)", "Final: yes", "YES")).value == 1.0
    assert (await _score(r"regex:Final: (\w+)", "nothing", "yes")).reason == UNPARSED


async def test_regex_whose_first_group_took_no_part_in_the_match_is_unparsed() -> None:
    # An optional or alternative group: the pattern matched, the group holds nothing (it was
    # an AttributeError on None that ended the run with a traceback).
    score = await _score(r"regex:(?:answer: (\w+)|no answer)", "no answer", "yes")
    assert score.value is None and score.reason == UNPARSED
    assert (await _score(r"regex:(?:answer: (\w+)|no answer)", "answer: YES", "yes")).value == 1.0


async def test_regex_leaves_out_a_label_it_cannot_read_as_its_labelled_says() -> None:
    # A blank label: `labelled` (what eval's warning and the comparisons count) says the
    # scorer cannot read it, so the score leaves the item out too; it was scored (an empty
    # group even counted correct, both sides reading as nothing).
    scorer = make_scorer(r"regex:Final: (\w*)")
    item = Item(id="1", prompt="q", label="  ")
    assert not scorer.labelled(item)
    for answer in ("Final: yes", "Final: "):
        score = await scorer.score(item, _response(answer))
        assert score.value is None and score.reason == UNLABELLED


async def test_json_field_reads_fenced_json() -> None:
    answer = 'Here:\n```json\n{"result": {"label": "spam"}}\n```'
    assert (await _score("json:result.label", answer, "spam")).value == 1.0
    assert (await _score("json:result.label", "not json", "spam")).reason == UNPARSED
    assert (await _score("json:result.missing", answer, "spam")).reason == UNPARSED


async def test_json_field_reads_json_between_braces_in_prose() -> None:
    answer = 'The verdict is {"result": {"label": "spam"}} as you asked.'
    assert (await _score("json:result.label", answer, "spam")).value == 1.0


async def test_a_scorer_needing_a_label_reports_unlabelled_items() -> None:
    assert (await _score("exact", "x", None)).reason == UNLABELLED


async def test_recorded_reads_the_answering_models_recorded_score() -> None:
    leaf = Decision(node="cheap", kind="model", details={RECORDED_SCORE: 1.0})
    other = Decision(node="big", kind="model", details={RECORDED_SCORE: 0.0})
    tree = Decision(node="cascade", kind="cascade", chosen="cheap", children=(other, leaf))
    score = await make_scorer("recorded").score(
        Item(id="1", prompt="q"), _response("x", tree, model="cheap")
    )
    assert score.value == 1.0


async def test_recorded_without_a_clear_answerer_is_unparsed() -> None:
    a = Decision(node="a", kind="model", details={RECORDED_SCORE: 1.0})
    b = Decision(node="b", kind="model", details={RECORDED_SCORE: 0.0})
    tree = Decision(node="vote", kind="ensemble", children=(a, b))
    score = await make_scorer("recorded").score(
        Item(id="1", prompt="q"), _response("x", tree, model="vote")
    )
    assert score.reason == UNPARSED


async def test_recorded_never_lends_the_answer_a_checker_s_score() -> None:
    # The answering model's score was not recorded; the model that checked it was right.
    mine = Decision(node="cheap", kind="model", details={RECORDED_MODEL: "c"})
    checker = Decision(node="big", kind="model", details={RECORDED_MODEL: "b", RECORDED_SCORE: 1.0})
    tree = Decision(node="cascade", kind="cascade", chosen="cheap", children=(mine, checker))
    score = await make_scorer("recorded").score(
        Item(id="1", prompt="q"), _response("x", tree, model="cheap")
    )
    assert score.reason == UNPARSED


async def test_an_answer_recorded_without_a_score_stays_unparsed_through_a_cascade(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    rows = [
        {"prompt": "What is 2 + 2?", "model": "weak", "response": "#### 4"},
        {"prompt": "What is 2 + 2?", "model": "strong", "response": "#### 4", "correct": True},
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = write_config(
        f"""
models:
  weak: {{local: {{type: replay, data: "{data}", format: jsonl, model: weak}}}}
  strong: {{local: {{type: replay, data: "{data}", format: jsonl, model: strong}}}}
systems:
  main:
    type: cascade
    stages:
      - model: weak
        threshold: 1.0
        estimator: {{type: agreement, models: [strong], normalise: number}}
      - model: strong
"""
    )
    async with modelyard.load(config) as yard:
        response = await yard.complete("main", "What is 2 + 2?")
    assert response.model == "weak"  # the two agree, so the cheap answer stands
    score = await make_scorer("recorded").score(Item(id="1", prompt="q"), response)
    assert score.reason == UNPARSED


async def test_judge_model_verdicts_and_unreadable_verdicts() -> None:
    judge = ScriptedModel(
        info=ModelInfo(name="judge", kind="fake"),
        script=[Reply(text="CORRECT"), Reply(text="Incorrect."), Reply(text="maybe?")],
    )
    scorer = JudgeScorer(judge)
    item = Item(id="1", prompt="Capital of France?", label="Paris")
    values = [(await scorer.score(item, _response("Paris"))).value for _ in range(3)]
    assert values == [1.0, 0.0, None]
    assert "Paris" in judge.calls[0].last_user_text


async def test_callable_scorer_maps_none_to_unparsed() -> None:
    scorer = CallableScorer(lambda item, response: None if response.text == "?" else True)
    assert (await scorer.score(Item(id="1", prompt="q"), _response("?"))).reason == UNPARSED
    assert (await scorer.score(Item(id="1", prompt="q"), _response("ok"))).value == 1.0


def test_unknown_scorer_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        make_scorer("fuzzy")
    assert "regex:PATTERN" in str(caught.value)


async def test_a_callable_scorer_that_raises_names_itself_and_the_item() -> None:
    scorer = make_scorer("callable:os:getcwd")
    with pytest.raises(ConfigError, match="scorer callable:os:getcwd raised TypeError on item q7"):
        await scorer.score(Item(id="q7", prompt="q", label="x"), _response("x"))


@pytest.mark.parametrize(
    ("result", "value"),
    [(np.True_, 1.0), (np.False_, 0.0), (np.float32(0.25), 0.25), (np.int64(1), 1.0)],
)
async def test_a_callable_scorer_may_answer_with_numpy_scalars(
    result: object, value: float
) -> None:
    """`np.isclose(...)` is a numpy bool and a model's probability often a float32: they were
    refused as 'expected true/false, a number from 0 to 1', stopping the evaluation."""
    scorer = CallableScorer(lambda item, response: result)
    assert (await scorer.score(Item(id="1", prompt="q"), _response("ok"))).value == value


@pytest.mark.parametrize("result", [5, -1, float("nan")])
async def test_a_callable_scorer_returning_a_number_outside_zero_to_one_is_an_error(
    result: float,
) -> None:
    scorer = CallableScorer(lambda item, response: result)
    with pytest.raises(ConfigError, match="expected true/false, a number from 0 to 1"):
        await scorer.score(Item(id="1", prompt="q"), _response("ok"))
