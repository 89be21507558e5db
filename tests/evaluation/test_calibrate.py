"""Calibration: the choice per target, train/test separation, and never reading test labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.evaluation.calibrate import (
    Calibrator,
    Target,
    Trial,
    choose,
    dominating_single,
    pareto,
    surely_meets,
)
from modelyard.evaluation.dataset import Item, items_from_recordings
from modelyard.evaluation.formats import load_recordings
from modelyard.evaluation.knobs import parse_knob
from modelyard.evaluation.report import EvalReport, summarize
from modelyard.evaluation.scorers import make_scorer

FAKE = """
models:
  answer:
    local: {type: fake, default: "B"}   # tuned below
    price: {input: 1, output: 1}
  other:
    local: {type: fake, default: "B"}
    price: {input: 2, output: 2}
systems:
  main: {type: fallback, chain: [answer, other]}
"""
KNOB = parse_knob("models.answer.local.default=B,C")


def _report(cost: float, accuracy: float) -> EvalReport:
    report = summarize("s", [])
    from dataclasses import replace

    return replace(report, cost_per_item=cost, accuracy=accuracy, n=10)


def _trial(cost: float, accuracy: float) -> Trial:
    return Trial(values={"c": cost}, text="", train=_report(cost, accuracy))


def test_quality_target_takes_the_cheapest_setting_that_reaches_it() -> None:
    trials = [_trial(1.0, 0.70), _trial(2.0, 0.86), _trial(3.0, 0.90), _trial(4.0, 0.91)]
    chosen, met, required = choose(trials, Target.parse("quality:0.95"), best_single=0.9)
    assert met and required == pytest.approx(0.855) and chosen.train.cost_per_item == 2.0


def test_budget_target_takes_the_best_accuracy_within_the_budget() -> None:
    trials = [_trial(1.0, 0.70), _trial(2.0, 0.86), _trial(3.0, 0.90)]
    chosen, met, _ = choose(trials, Target.parse("budget:2.5"), best_single=0.9)
    assert met and chosen.train.accuracy == 0.86


def test_an_unreachable_target_is_reported_not_met() -> None:
    chosen, met, _ = choose([_trial(1.0, 0.5)], Target.parse("quality:1.0"), best_single=0.9)
    assert not met and chosen.train.accuracy == 0.5


def test_a_quality_target_with_a_ceiling_parses_and_prints_as_given() -> None:
    share = Target.parse("quality:1.0,cost:0.2")
    assert (share.kind, share.value, share.ceiling, share.ceiling_kind) == (
        "quality",
        1.0,
        0.2,
        "cost",
    )
    assert str(share) == "quality:1,cost:0.2" and share.ceiling_usd(0.01) == pytest.approx(0.002)
    usd = Target.parse("quality:0.95,budget:0.002")
    assert usd.ceiling_usd(0.01) == 0.002 and str(usd) == "quality:0.95,budget:0.002"
    for bad in ("quality:1.0,cost:0", "budget:1,cost:0.2", "quality:1.0,speed:2", "quality:1,"):
        with pytest.raises(ConfigError, match="quality:F,cost:S"):
            Target.parse(bad)


def test_a_ceiling_keeps_the_closest_setting_within_what_may_be_spent() -> None:
    # MBPP: GPT-4's accuracy at 20 % of its cost is out of reach. The quality alone was "met"
    # by the setting that sends every item to GPT-4 (and pays for the checkers too).
    cheap, middle, everything = _trial(0.7, 0.68), _trial(1.5, 0.69), _trial(10.0, 0.71)
    target = Target.parse("quality:1.0,cost:0.2")
    chosen, met, required = choose(
        [everything, middle, cheap], target, best_single=0.71, ceiling=2.0
    )
    assert not met and chosen is middle and required == pytest.approx(0.71)
    chosen, met, _ = choose([everything, cheap], target, best_single=0.68, ceiling=2.0)
    assert met and chosen is cheap  # within the ceiling and as good as the best single
    # Nothing within the ceiling: the cheapest is the closest.
    chosen, met, _ = choose([everything, middle], target, best_single=0.71, ceiling=1.0)
    assert not met and chosen is middle


def test_a_setting_a_single_model_beats_on_both_counts_is_named() -> None:
    everything = _trial(10.5, 0.71)  # every item escalated, checkers paid for as well
    singles = {"cheap": _report(0.3, 0.68), "strong": _report(10.0, 0.71)}
    assert dominating_single(everything, singles) == "strong"
    assert dominating_single(_trial(10.0, 0.71), singles) is None  # equal is not better
    assert dominating_single(_trial(0.7, 0.69), singles) is None


def _scored(cost: float, right: list[int]) -> Trial:
    trial = _trial(cost, sum(right) / len(right))
    trial.scores = {str(i): float(r) for i, r in enumerate(right)}
    return trial


def test_with_a_confidence_the_target_must_hold_beyond_sampling_noise() -> None:
    reference = {str(i): 1.0 for i in range(200)}  # the best single model: right on all 200
    barely = _scored(1.0, [1] * 190 + [0] * 10)  # 95.0 %: meets 95 % on average only
    clearly = _scored(2.0, [1] * 198 + [0] * 2)  # 99.0 %
    target = Target.parse("quality:0.95")
    assert choose([barely, clearly], target, 1.0)[0] is barely
    chosen, met, _ = choose([barely, clearly], target, 1.0, reference=reference, confidence=0.9)
    assert met and chosen is clearly
    assert surely_meets(clearly.scores, reference, 0.95, 0.9)
    assert not surely_meets(barely.scores, reference, 0.95, 0.9)
    # An item the trial never answered counts as wrong.
    assert not surely_meets({}, reference, 0.95, 0.9)


def test_pareto_keeps_only_undominated_settings() -> None:
    trials = [_trial(1.0, 0.7), _trial(2.0, 0.6), _trial(3.0, 0.9)]
    assert [t.train.cost_per_item for t in pareto(trials)] == [1.0, 3.0]


def test_invalid_target_is_explained() -> None:
    with pytest.raises(Exception) as caught:
        Target.parse("accuracy:0.9")
    assert "quality:F" in str(caught.value)


def _items(labels: str, split: str) -> list[Item]:
    return [Item(id=f"{split}{i}", prompt=f"{split} q{i}", label=x) for i, x in enumerate(labels)]


async def _calibrate(config: Path, train_labels: str, test_labels: str) -> tuple[dict, float]:
    calibrator = Calibrator(config, "main", make_scorer("exact"))
    result = await calibrator.calibrate(
        [KNOB], Target.parse("quality:1.0"), _items(train_labels, "tr"), _items(test_labels, "te")
    )
    assert result.chosen.test is not None
    return result.chosen.values, result.chosen.test.accuracy or 0.0


async def test_the_choice_depends_on_training_labels_only(
    write_config: Callable[[str], Path],
) -> None:
    config = write_config(FAKE)
    chosen, test_accuracy = await _calibrate(config, "BBBB", "CCCC")
    assert chosen == {"models.answer.local.default": "B"} and test_accuracy == 0.0
    same, _ = await _calibrate(config, "BBBB", "BBBB")
    assert same == chosen
    flipped, _ = await _calibrate(config, "CCCC", "BBBB")
    assert flipped == {"models.answer.local.default": "C"}


CHAINED = """
models:
  cheap:
    local: {type: fake, default: "C"}
    price: {input: 1, output: 1}
  strong:
    local: {type: fake, default: "B"}
    price: {input: 2, output: 2}
systems:
  main: {type: fallback, chain: [cheap, strong]}
"""


async def test_calibrating_to_a_quality_under_a_cost_ceiling(
    write_config: Callable[[str], Path],
) -> None:
    knob = parse_knob("systems.main.chain=[cheap,strong],[strong,cheap]")
    calibrator = Calibrator(write_config(CHAINED), "main", make_scorer("exact"))
    train, test = _items("BBBB", "tr"), _items("BBBB", "te")
    capped = await calibrator.calibrate([knob], Target.parse("quality:1.0,cost:0.6"), train, test)
    strong_cost = capped.singles_train["strong"].cost_per_item
    assert capped.ceiling == pytest.approx(0.6 * strong_cost)
    assert not capped.met and capped.chosen.values == {knob.name: ["cheap", "strong"]}
    assert capped.to_dict()["cost_ceiling"] == capped.ceiling
    assert capped.to_dict()["reached_cost"] == capped.chosen.train.cost_per_item
    plain = await calibrator.calibrate([knob], Target.parse("quality:1.0"), train, test)
    assert plain.met and plain.ceiling is None
    assert plain.chosen.values == {knob.name: ["strong", "cheap"]}
    await calibrator.aclose()


async def test_a_scorer_that_reads_no_answer_stops_calibration_instead_of_meeting_the_target(
    write_config: Callable[[str], Path],
) -> None:
    # With every answer unparsed the best single model's accuracy was 0, so 95 % of it was
    # "met" by the cheapest setting: a calibrated config chosen on no evidence, exit 0.
    calibrator = Calibrator(write_config(FAKE), "main", make_scorer("number"))
    with pytest.raises(ConfigError) as caught:
        await calibrator.calibrate(
            [KNOB], Target.parse("quality:0.95"), _items("1234", "tr"), _items("5678", "te")
        )
    message = str(caught.value)
    assert "cannot calibrate: no single model's answer on the training split was scored" in message
    assert "answer: no answer was scored (4 unparsed, 0 failed)" in message


async def test_a_test_split_no_model_answers_stops_calibration_with_the_reason(
    own: Callable[..., Path],
) -> None:
    # Held-out prompts the replayed recordings lack (the config still reads the training
    # file): every test call failed, and the frontier was reported as all 0 with exit 0.
    train = items_from_recordings(load_recordings("jsonl", [own().with_suffix(".jsonl")]))
    test = [Item(id="new", prompt="What is 9 + 9?", label="18")]
    knob = parse_knob("systems.main.chain=[weak,strong],[strong,weak]")
    calibrator = Calibrator(own(), "main", make_scorer("recorded"))
    with pytest.raises(ConfigError) as caught:
        await calibrator.calibrate([knob], Target.parse("quality:0.95"), train, test)
    message = str(caught.value)
    assert "no single model's answer on the test split was scored" in message
    assert "weak: no answer was scored (0 unparsed, 1 failed)" in message
    assert "the first failure, item new: " in message and "no recording for prompt" in message


async def test_calibrating_a_replayed_choice_of_model_on_routerbench(
    sliced: Callable[[str, int], Path], write_config: Callable[[str], Path]
) -> None:
    path = sliced("routerbench-train/arc_challenge_train.csv", 40)
    config = write_config(f"""
models:
  picked:
    local: {{type: replay, data: "{path}", format: routerbench, model: gpt-4-1106-preview}}
  backup:
    local: {{type: replay, data: "{path}", format: routerbench, model: claude-v2}}
systems:
  main: {{type: fallback, chain: [picked, backup]}}
""")
    items = items_from_recordings(load_recordings("routerbench", [path]))
    knob = parse_knob(
        "models.picked.local.model=gpt-4-1106-preview,zero-one-ai/Yi-34B-Chat,mistralai/mistral-7b-chat"
    )
    result = await Calibrator(config, "main", make_scorer("recorded")).calibrate(
        [knob], Target.parse("quality:0.9"), items[:20], items[20:]
    )
    assert result.met and result.chosen.train.accuracy is not None
    assert result.chosen.train.accuracy >= result.required
    cheaper = [
        t for t in result.trials if t.train.cost_per_item < result.chosen.train.cost_per_item
    ]
    assert all((t.train.accuracy or 0) < result.required for t in cheaper)
    assert result.chosen.text.replace(result.chosen.values[knob.name], "gpt-4-1106-preview", 1) == (
        config.read_text()
    )
    curves = result.frontier.curves
    assert set(curves) == {"system", "system + singles", "calibrated", "random", "oracle"}
    defined = [c.aiq for c in (curves["system"], curves["random"]) if c.aiq is not None]
    assert (curves["system + singles"].aiq or 0.0) >= max(defined)
    oracle = result.frontier.curves["oracle"].points[-1][1]
    assert oracle >= max(p[1] for p in result.frontier.singles.values())
