"""Cascade configs: each estimator, escalation, skips, failures, streaming, and the record."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.cost.accounting import spend_rows
from modelyard.errors import ConfigError
from modelyard.streaming import collect
from modelyard.types import user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, dollars

LOG_09 = math.log(0.9)

MODELS = f"""
providers:
  openai: {{type: openai, api_key: "${{OPENAI_API_KEY}}", optional: true}}
models:
  small:
    local: {{type: fake, default: {{text: "Paris", logprob: {LOG_09}, confidence: 0.4}}}}
    capabilities: {{logprobs: true}}
    {PRICE}
  plain:
    local: {{type: fake, default: "Paris"}}
    {PRICE}
  big:
    local: {{type: fake, default: "Paris, France"}}
    {PRICE}
  lyon:
    local: {{type: fake, default: "Lyon"}}
  judge-no:
    local: {{type: fake, default: "No, that is wrong."}}
    price: {{input: 0, output: 2000000}}
  hosted:
    provider: openai
    id: gpt-4o-mini-2024-07-18
    price: {{input: 0.15, output: 0.6}}
  sampler:
    local: {{type: fake, script: ["(A)", "B", "A."], default: "C"}}
    {PRICE}
  broken:
    local: {{type: fake, default: {{error: unavailable}}}}
  slow:
    local: {{type: fake, default: {{text: "late", latency: 0.5}}}}
"""


def cascade(first: str, *, last: str = "big") -> str:
    return (
        MODELS
        + f"""
systems:
  qa:
    type: cascade
    stages:
      - {first}
      - {{model: {last}}}
"""
    )


async def test_confident_logprobs_accept_the_cheap_answer(yard_of: Callable[[str], Yard]) -> None:
    text = cascade("{model: small, threshold: 0.8, estimator: {type: logprob}}")
    async with yard_of(text) as yard:
        response = await yard.complete("qa", "capital of France?")
    assert (response.text, response.model, response.cost) == ("Paris", "small", 2.0)
    assert response.confidence == pytest.approx(0.9)
    decision = response.decision
    assert decision is not None
    assert (decision.kind, decision.chosen) == ("cascade", "small")
    assert decision.reason == "small accepted: mean token probability 0.900 >= 0.8"
    assert dict(decision.scores) == pytest.approx({"small": 0.9})
    [stage] = decision.children
    assert (stage.node, stage.kind, stage.chosen, stage.threshold) == (
        "small",
        "stage",
        "small",
        0.8,
    )
    assert stage.scores["confidence"] == pytest.approx(0.9)
    assert [c.node for c in stage.children] == ["small"]


async def test_logprobs_asked_only_for_the_estimate_are_not_returned(
    yard_of: Callable[[str], Yard],
) -> None:
    text = cascade("{model: small, threshold: 0.8, estimator: {type: logprob}}")
    async with yard_of(text) as yard:
        quiet = await yard.complete("qa", "capital of France?")
        asked = await yard.complete("qa", "capital of France?", logprobs=True)
    assert quiet.model == asked.model == "small"
    assert quiet.choices[0].logprobs is None
    assert asked.choices[0].logprobs


async def test_low_logprobs_escalate_and_cost_both(yard_of: Callable[[str], Yard]) -> None:
    text = cascade("{model: small, threshold: 0.95, estimator: {type: logprob}}")
    async with yard_of(text) as yard:
        response = await yard.complete("qa", "capital of France?")
    # small: "Paris" = 2 tokens; big: "Paris, France" = 4 tokens
    assert (response.text, response.model, response.cost) == ("Paris, France", "big", 6.0)
    decision = response.decision
    assert decision is not None
    assert decision.reason == "escalated to the last stage big"
    assert [(c.node, c.chosen) for c in decision.children] == [("small", None), ("big", "big")]
    assert decision.children[0].reason == "escalated: mean token probability 0.900 < 0.95"


def test_confidence_estimator_on_a_hosted_model_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    """A hosted model's answers carry no confidence: every request would pay for the stage and
    escalate ("the model gave no confidence")."""
    error = config_error(cascade("{model: hosted, threshold: 0.5, estimator: {type: confidence}}"))
    message = str(error)
    assert "systems.qa.stages[0].estimator: stage 'hosted'" in message
    assert "hosted model (provider 'openai')" in message
    assert "confidence estimator could never let it answer" in message


def with_claude(text: str) -> str:
    """`text` with a Claude model (an Anthropic provider, optional) among its models."""
    claude = """
  anthropic: {type: anthropic, api_key: "${ANTHROPIC_API_KEY}", optional: true}
models:
  claude:
    provider: anthropic
    id: claude-haiku-4-5-20251001
    price: {input: 1, output: 5}"""
    return text.replace("\nmodels:", claude, 1)


def test_samples_via_n_on_a_model_of_one_choice_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    """The Anthropic Messages API refuses n > 1: every request would escalate on a 400."""
    text = cascade("{model: claude, threshold: 0.5, estimator: {type: samples, via: n}}")
    error = config_error(with_claude(text))
    message = str(error)
    assert "systems.qa.stages[0].estimator: stage 'claude'" in message
    assert "answers one choice per request" in message and "use via: calls" in message


def test_samples_via_n_on_an_ensemble_with_a_model_of_one_choice_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    stage = (
        "{model: {type: ensemble, name: pair, members: [claude, plain]}, threshold: 0.5, "
        "estimator: {type: samples, via: n}}"
    )
    error = config_error(with_claude(cascade(stage)))
    assert "stage 'pair': model 'pair' answers one choice per request" in str(error)


def test_logprob_estimator_on_a_pattern_without_logprobs_names_no_setting_it_lacks(
    config_error: Callable[[str], ConfigError],
) -> None:
    """A pattern has no `capabilities:` to set: the refusal had told the user to set one."""
    stage = (
        "{model: {type: ensemble, name: pair, members: [small, plain]}, threshold: 0.5, "
        "estimator: {type: logprob}}"
    )
    message = str(config_error(cascade(stage)))
    assert "stage 'pair': 'pair', a pattern (ensemble), does not return token logprobs" in message
    assert "not every model answering through it does" in message
    assert "capabilities.logprobs" not in message


def test_a_stage_expected_to_outlast_the_cascades_deadline_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    """It would be skipped on every request ("needs about 5.00s, 1.00s left")."""
    stage = "{model: plain, threshold: 0.5, estimator: {type: confidence}, expected_latency: 5}"
    text = cascade(stage).replace("    type: cascade\n", "    type: cascade\n    deadline: 1\n")
    message = str(config_error(text))
    assert "systems.qa.stages[0].expected_latency: stage 'plain' expects to take 5s" in message
    assert "longer than the cascade's deadline (1s)" in message


def test_logprob_estimator_on_a_model_without_logprobs_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    error = config_error(cascade("{model: plain, threshold: 0.8, estimator: {type: logprob}}"))
    message = str(error)
    assert "systems.qa.stages[0].estimator" in message
    assert "stage 'plain'" in message and "does not return token logprobs" in message
    assert "samples, agreement, verifier or confidence" in message


def test_threshold_outside_zero_one_is_refused(config_error: Callable[[str], ConfigError]) -> None:
    error = config_error(cascade("{model: small, threshold: 1.5, estimator: {type: logprob}}"))
    assert "systems.qa.stages[0].threshold" in str(error)
    assert "less than or equal to 1" in str(error)


def test_a_threshold_on_the_last_stage_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    first = "{model: small, threshold: 0.8, estimator: {type: logprob}}"
    last = "big, threshold: 0.9, estimator: {type: confidence}"
    error = config_error(cascade(first, last=last))
    assert "systems.qa" in str(error)
    assert "stages[1] is the last stage, which always answers" in str(error)
    assert "threshold and estimator would never be used" in str(error)


async def test_samples_take_the_majority_and_count_every_call(
    yard_of: Callable[[str], Yard],
) -> None:
    estimator = "{type: samples, k: 3, normalise: choice}"
    text = cascade(f"{{model: sampler, threshold: 0.6, estimator: {estimator}}}")
    async with yard_of(text) as yard:
        response = await yard.complete("qa", "pick one")
    assert (response.text, response.model) == ("(A)", "sampler")
    assert response.cost == 1.0 + 1.0 + 1.0  # "(A)", "B", "A." are one token each
    assert response.confidence == pytest.approx(2 / 3)
    assert response.decision is not None
    assert response.decision.reason == "sampler accepted: 2 of 3 samples agree on 'A' >= 0.6"
    assert len(response.decision.children[0].children) == 3


async def test_agreement_with_another_model(yard_of: Callable[[str], Yard]) -> None:
    agree = "{type: agreement, models: [plain]}"
    disagree = "{type: agreement, models: [lyon]}"
    async with yard_of(cascade(f"{{model: small, threshold: 1.0, estimator: {agree}}}")) as yard:
        accepted = await yard.complete("qa", "capital?")
    async with yard_of(cascade(f"{{model: small, threshold: 1.0, estimator: {disagree}}}")) as yard:
        escalated = await yard.complete("qa", "capital?")
    assert (accepted.model, accepted.cost) == ("small", 4.0)  # small 2 + plain 2
    assert (escalated.model, escalated.cost) == ("big", 6.0)  # small 2 + lyon 0 + big 4
    assert escalated.decision is not None
    assert escalated.decision.children[0].reason == "escalated: 1 of 2 models agree < 1"


async def test_agreement_asked_in_turn_stops_once_the_threshold_is_cleared(
    yard_of: Callable[[str], Yard],
) -> None:
    panel = "{type: agreement, models: [lyon, plain, big], ask: in_turn}"
    async with yard_of(cascade(f"{{model: small, threshold: 0.5, estimator: {panel}}}")) as yard:
        response = await yard.complete("qa", "capital?")
    assert (response.model, response.cost) == ("small", 4.0)  # small 2 + lyon 0 + plain 2
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason == "accepted: 2 of 4 models agree (3 asked in turn) >= 0.5"
    assert [c.node for c in first.children] == ["small", "lyon", "plain"]  # big never asked


async def test_agreement_asked_in_turn_stops_once_the_threshold_is_out_of_reach(
    yard_of: Callable[[str], Yard],
) -> None:
    panel = "{type: agreement, models: [lyon, plain], ask: in_turn}"
    async with yard_of(cascade(f"{{model: small, threshold: 1.0, estimator: {panel}}}")) as yard:
        response = await yard.complete("qa", "capital?")
    assert (response.model, response.cost) == ("big", 6.0)  # small 2 + lyon 0 + big 4
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason.startswith("escalated: 1 of 3 models agree (2 asked in turn) < 1")
    assert [c.node for c in first.children] == ["small", "lyon"]  # plain could not lift it


async def test_agreement_asked_in_turn_asks_nobody_about_an_unreadable_answer(
    yard_of: Callable[[str], Yard],
) -> None:
    panel = "{type: agreement, models: [plain, lyon], normalise: number, ask: in_turn}"
    async with yard_of(cascade(f"{{model: small, threshold: 0.5, estimator: {panel}}}")) as yard:
        response = await yard.complete("qa", "capital?")
    assert (response.model, response.cost) == ("big", 6.0)  # small 2 + big 4; nobody else asked
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason == ("escalated: the answer could not be read; none of 2 others asked < 0.5")
    assert [c.node for c in first.children] == ["small"]


async def test_a_verifier_saying_no_escalates(yard_of: Callable[[str], Yard]) -> None:
    stage = "{model: plain, threshold: 0.5, estimator: {type: verifier, model: judge-no}}"
    async with yard_of(cascade(stage)) as yard:
        response = await yard.complete("qa", "capital?")
    # plain 2 + verifier "No, that is wrong." 5 tokens at $2 + big 4
    assert (response.model, response.cost) == ("big", 2.0 + 10.0 + 4.0)
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason == "escalated: verifier score 0.000 < 0.5"
    assert [c.node for c in first.children] == ["plain", "judge-no"]


async def test_own_confidence_estimator(yard_of: Callable[[str], Yard]) -> None:
    stage = "{model: small, threshold: 0.3, estimator: {type: confidence}}"
    async with yard_of(cascade(stage)) as yard:
        response = await yard.complete("qa", "capital?")
    assert response.model == "small"
    assert response.decision is not None
    assert response.decision.reason == "small accepted: own confidence 0.400 >= 0.3"


async def test_no_confidence_never_clears_a_threshold(yard_of: Callable[[str], Yard]) -> None:
    stage = "{model: plain, threshold: 0.0, estimator: {type: confidence}}"
    async with yard_of(cascade(stage)) as yard:
        response = await yard.complete("qa", "capital?")
    assert response.model == "big"
    assert response.decision is not None
    assert response.decision.children[0].reason == "escalated: the model gave no confidence"


@pytest.mark.parametrize(
    ("module", "score"),
    [
        ("scoring_for_tests", "0.75 if response.text == 'Paris' else 0.0"),
        # A score computed with numpy is often a float32 (not a float): it was refused as 'not
        # a number in [0, 1]', and every answer escalated.
        ("numpy_scores_for_tests", "numpy.float32(0.75)"),
    ],
)
async def test_callable_estimator(
    yard_of: Callable[[str], Yard],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    score: str,
) -> None:
    (tmp_path / f"{module}.py").write_text(
        f"import numpy\ndef score(request, response):\n    return {score}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    estimator = f"{{type: callable, function: {module}:score}}"
    stage = f"{{model: plain, threshold: 0.7, estimator: {estimator}}}"
    async with yard_of(cascade(stage)) as yard:
        response = await yard.complete("qa", "capital?")
    assert response.model == "plain"
    assert response.confidence == 0.75


async def test_a_callable_estimator_still_running_at_the_deadline_escalates_then(
    yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An async estimator that hung was cut with its stage at the stage's share of the time:
    # the answer it was scoring, and what that answer cost, were lost from the record.
    (tmp_path / "hanging_scores_for_tests.py").write_text(
        "import asyncio\nasync def hang(request, response):\n"
        "    await asyncio.sleep(5)\n    return 1.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    estimator = "{type: callable, function: hanging_scores_for_tests:hang}"
    stage = f"{{model: plain, threshold: 0.7, estimator: {estimator}}}"
    async with yard_of(cascade(stage)) as yard:
        started = time.perf_counter()
        response = await yard.complete("qa", "capital?", deadline=time.monotonic() + 1.0)
    assert time.perf_counter() - started < 1.0
    assert response.model == "big"
    assert response.decision is not None
    first = response.decision.children[0]
    assert "hanging_scores_for_tests:hang gave no score before the deadline" in first.reason
    assert [d.node for d in first.children] == ["plain"]
    assert response.cost == dollars("Paris") + dollars("Paris, France")


def test_missing_callable_is_refused(config_error: Callable[[str], ConfigError]) -> None:
    stage = "{model: plain, threshold: 0.7, estimator: {type: callable, function: nowhere_x:f}}"
    error = config_error(cascade(stage))
    assert "systems.qa.stages[0].estimator.function" in str(error)
    assert "cannot import module 'nowhere_x'" in str(error)


async def test_disabled_stage_is_skipped_noted_once_and_recorded(
    yard_of: Callable[[str], Yard], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    stage = "{model: hosted, threshold: 0.5, estimator: {type: logprob}}"
    async with yard_of(cascade(stage)) as yard:
        notes = [n for n in yard.notes if n.startswith("cascade qa")]
        response = await yard.complete("qa", "capital?")
    assert notes == [
        "cascade qa: stage hosted is skipped (provider 'openai': "
        "environment variable OPENAI_API_KEY is not set)"
    ]
    assert (response.model, response.cost) == ("big", 4.0)
    assert response.decision is not None
    skipped = response.decision.children[0]
    assert (skipped.node, skipped.kind) == ("hosted", "stage")
    assert skipped.reason.startswith("skipped: provider 'openai'")
    # The ledger counts calls: the skipped stage was never one.
    assert [r.model for r in spend_rows("qa", user("capital?"), response, None)] == ["big"]


async def test_a_skipped_stage_is_recorded_in_its_place(
    yard_of: Callable[[str], Yard], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    first = "{model: small, threshold: 0.99, estimator: {type: logprob}}"
    hosted = "{model: hosted, threshold: 0.5, estimator: {type: logprob}}"
    async with yard_of(cascade(f"{first}\n      - {hosted}")) as yard:
        response = await yard.complete("qa", "capital of France?")
    assert response.decision is not None
    assert [c.node for c in response.decision.children] == ["small", "hosted", "big"]


async def test_a_stage_that_cannot_finish_in_time_is_skipped(
    yard_of: Callable[[str], Yard],
) -> None:
    stage = "{model: plain, threshold: 0.5, estimator: {type: confidence}, expected_latency: 5}"
    async with yard_of(cascade(stage)) as yard:
        response = await yard.complete("qa", "capital?", deadline=time.monotonic() + 1.0)
    assert response.model == "big"
    assert response.decision is not None
    assert response.decision.children[0].reason.startswith("skipped: needs about 5.00s")


async def test_a_slow_early_stage_leaves_the_last_stage_time_to_answer(
    yard_of: Callable[[str], Yard],
) -> None:
    text = (
        MODELS
        + """
  steady:
    local: {type: fake, default: {text: "Paris, France", latency: 0.1}}
systems:
  qa:
    type: cascade
    deadline: 0.4
    stages:
      - {model: slow, threshold: 0.5, estimator: {type: confidence}}
      - {model: steady}
"""
    )
    async with yard_of(text) as yard:
        started = time.monotonic()
        response = await yard.complete("qa", "capital?")
        took = time.monotonic() - started
    assert response.text == "Paris, France"
    assert took < 0.4
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason == "failed (timeout); escalating"
    # Cut at its share (200 ms), not the deadline; late, not early, on a loaded machine.
    assert 150 <= first.latency_ms < 400


async def test_a_stage_cut_off_at_its_share_is_learned_as_slow_and_then_skipped(
    yard_of: Callable[[str], Yard],
) -> None:
    text = (
        MODELS
        + """
  quick:
    local: {type: fake, default: "Paris"}
systems:
  qa:
    type: cascade
    deadline: 0.2
    stages:
      - {model: slow, threshold: 0.5, estimator: {type: confidence}}
      - {model: quick}
"""
    )
    async with yard_of(text) as yard:
        for _ in range(20):  # each cut off at its 0.1 s share, and timed
            await yard.complete("qa", "capital?")
        started = time.monotonic()
        response = await yard.complete("qa", "capital?")
        took = time.monotonic() - started
    assert response.decision is not None
    assert response.decision.children[0].reason.startswith("skipped: needs about 0.1")
    assert took < 0.05  # the share is no longer spent waiting for it


async def test_when_no_later_stage_can_run_the_held_answer_is_returned(
    yard_of: Callable[[str], Yard],
) -> None:
    text = (
        MODELS
        + """
systems:
  qa:
    type: cascade
    stages:
      - {model: small, threshold: 0.95, estimator: {type: logprob}}
      - {model: big, expected_latency: 5}
"""
    )
    async with yard_of(text) as yard:
        response = await yard.complete("qa", "capital?", deadline=time.monotonic() + 1.0)
    assert (response.model, response.cost) == ("small", 2.0)
    assert response.decision is not None
    assert response.decision.reason == (
        "no later stage can finish in time; answering with small below threshold"
    )


async def test_a_failed_last_stage_returns_the_held_answer(yard_of: Callable[[str], Yard]) -> None:
    text = cascade("{model: small, threshold: 0.95, estimator: {type: logprob}}", last="broken")
    async with yard_of(text) as yard:
        response = await yard.complete("qa", "capital?")
    assert response.model == "small"
    assert response.decision is not None
    assert response.decision.reason.startswith("last stage broken failed (unavailable)")


async def test_stream_runs_early_stages_then_streams_the_last(
    yard_of: Callable[[str], Yard],
) -> None:
    text = cascade("{model: small, threshold: 0.95, estimator: {type: logprob}}")
    async with yard_of(text) as yard:
        chunks = [c async for c in yard.get("qa").stream(user("capital?"))]
    assert [c.text for c in chunks if c.text] == ["Paris, ", "France"]
    final = chunks[-1].response
    assert final is not None and final.cost == 6.0 and final.model == "big"


async def test_stream_of_an_accepted_answer(yard_of: Callable[[str], Yard]) -> None:
    text = cascade("{model: small, threshold: 0.8, estimator: {type: logprob}}")
    async with yard_of(text) as yard:
        response = await collect(yard.get("qa").stream(user("capital?")))
    assert (response.text, response.model, response.cost) == ("Paris", "small", 2.0)
