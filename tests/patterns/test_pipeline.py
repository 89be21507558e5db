"""Pipeline configs: templates, field mapping, gates, retries, escalation, stops, streaming."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.errors import (
    BadRequestError,
    ConfigError,
    ModelTimeoutError,
    QualityCheckError,
    UnavailableError,
)
from modelyard.streaming import collect
from modelyard.types import Decision, user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, ask, with_hosted

MODELS = f"""
models:
  extractor:
    local: {{type: fake, default: '{{"city": "Paris", "n": 2}}'}}
    {PRICE}
  sloppy:
    local: {{type: fake, script: ["city is Paris", '{{"city": "Lyon"}}'], default: "nope"}}
    {PRICE}
  writer:
    local:
      type: fake
      answers: {{"Describe Paris": "Paris is lovely", "Describe Lyon": "Lyon is nice"}}
      default: "unknown"
    {PRICE}
  approver:
    local: {{type: fake, default: "yes"}}
  rejecter:
    local: {{type: fake, default: "no"}}
  checker-down:
    local: {{type: fake, default: {{error: unavailable}}}}
  sure:
    local: {{type: fake, default: {{text: "fine", confidence: 0.2}}}}
"""

SCHEMA = "{type: object, required: [city], properties: {city: {type: string}}}"


def pipeline(first: str, second: str = "{model: writer, input: 'Describe {previous.city}'}") -> str:
    return (
        MODELS
        + f"""
systems:
  flow:
    type: pipeline
    stages:
      - {first}
      - {second}
"""
    )


async def test_json_field_feeds_the_next_stage(yard_of: Callable[[str], Yard]) -> None:
    text = pipeline(f"{{model: extractor, gates: [{{type: json_schema, schema: {SCHEMA}}}]}}")
    async with yard_of(text) as yard:
        response = await yard.complete("flow", "Tell me about the capital of France")
    # extractor '{"city": "Paris", "n": 2}' = 25 chars = 7 tokens; writer 'Paris is lovely' = 4
    assert (response.text, response.model, response.cost) == ("Paris is lovely", "writer", 11.0)
    decision = response.decision
    assert decision is not None
    assert (decision.kind, decision.chosen) == ("pipeline", "writer")
    assert decision.reason == "2 stage(s) passed; stage 'writer' answered"
    first, second = decision.children
    assert (first.node, first.chosen, first.cost) == ("extractor", "extractor", 7.0)
    assert first.reason == "try 1 by extractor passed all gates"
    assert first.details["checks"] == ["try 1: json_schema: valid against the schema"]
    assert (second.node, second.cost) == ("writer", 4.0)


async def test_a_failed_gate_retries_the_stage(yard_of: Callable[[str], Yard]) -> None:
    text = pipeline(
        f"{{model: sloppy, retries: 1, gates: [{{type: json_schema, schema: {SCHEMA}}}]}}"
    )
    async with yard_of(text) as yard:
        response = await yard.complete("flow", "capital?")
    # sloppy "city is Paris" 4 tokens (rejected), '{"city": "Lyon"}' 4 tokens; writer 3
    assert (response.text, response.cost) == ("Lyon is nice", 4.0 + 4.0 + 3.0)
    assert response.decision is not None
    first = response.decision.children[0]
    assert first.reason == (
        "retry 1 by sloppy passed all gates (after failing json_schema: the output is not JSON)"
    )
    assert first.details["checks"][0] == "try 1: json_schema: the output is not JSON"


async def test_escalation_after_retries(yard_of: Callable[[str], Yard]) -> None:
    gate = "{type: regex, pattern: '^\\{'}"
    text = pipeline(f"{{name: draft, model: writer, gates: [{gate}], escalate: extractor}}")
    async with yard_of(text) as yard:
        response = await yard.complete("flow", "capital?")
    assert response.text == "Paris is lovely"
    assert response.decision is not None
    first = response.decision.children[0]
    assert (first.chosen, first.reason) == (
        "extractor",
        "escalation by extractor passed all gates (after failing regex /^\\{/: no match)",
    )
    assert [c.node for c in first.children] == ["writer", "extractor"]


async def test_stop_names_the_stage_and_the_check(yard_of: Callable[[str], Yard]) -> None:
    gate = "{type: checker, model: rejecter}"
    async with yard_of(pipeline(f"{{model: extractor, gates: [{gate}], retries: 1}}")) as yard:
        with pytest.raises(QualityCheckError) as caught:
            await yard.complete("flow", "capital?")
    error = caught.value
    assert str(error) == (
        "flow: pipeline flow: stage 'extractor' failed check checker rejecter: "
        "checker score 0.000 < 0.5 after 2 attempt(s) (HTTP 422)"
    )
    assert error.cost == 14.0  # two extractor answers of 7 tokens; the checker is free
    assert error.decision is not None and error.decision.error is not None


async def test_a_checker_that_is_down_stops_with_its_own_error_not_a_quality_one(
    yard_of: Callable[[str], Yard],
) -> None:
    gate = "{type: checker, model: checker-down}"
    text = pipeline(f"{{model: extractor, gates: [{gate}], retries: 1, escalate: sloppy}}")
    async with yard_of(text) as yard:
        with pytest.raises(UnavailableError) as caught:
            await yard.complete("flow", "capital of France?")
    error = caught.value
    assert error.decision is not None
    assert error.decision.reason == "stage 'extractor': checker checker-down failed (unavailable)"
    [stage] = error.decision.children
    assert [c.node for c in stage.children] == ["extractor", "checker-down"]
    assert error.cost == 7.0  # one extractor answer of 7 tokens, no retry


async def test_checker_saying_yes_passes(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(
        pipeline("{model: extractor, gates: [{type: checker, model: approver}]}")
    ) as yard:
        response = await yard.complete("flow", "capital?")
    assert response.model == "writer"
    assert response.decision is not None
    assert [c.node for c in response.decision.children[0].children] == ["extractor", "approver"]


async def test_an_escalation_answering_the_last_stage_is_not_credited_to_its_model(
    yard_of: Callable[[str], Yard],
) -> None:
    """The reason had said "sloppy answered" (the stage's name is its model's) when its
    escalation, extractor, had written the answer."""
    last = (
        f"{{model: sloppy, gates: [{{type: json_schema, schema: {SCHEMA}}}], escalate: extractor}}"
    )
    async with yard_of(pipeline("{model: writer}", last)) as yard:
        response = await yard.complete("flow", "Describe Paris")
    decision = response.decision
    assert decision is not None and response.model == "extractor"
    assert decision.reason == "2 stage(s) passed; stage 'sloppy' answered"
    assert decision.chosen == "extractor"


async def test_confidence_gate(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(pipeline("{model: sure, gates: [{type: confidence, min: 0.5}]}")) as yard:
        with pytest.raises(QualityCheckError, match=r"confidence 0.200 < 0.5"):
            await yard.complete("flow", "capital?")


@pytest.mark.parametrize(
    ("stage", "name", "whose"),
    [
        ("{model: hosted, gates: [{type: confidence, min: 0.5}]}", "hosted", "model 'hosted'"),
        (
            "{model: sure, escalate: hosted, gates: [{type: confidence, min: 0.1}]}",
            "sure",
            "its escalation's model 'hosted'",
        ),
    ],
)
def test_a_confidence_gate_on_a_hosted_model_is_refused(
    config_error: Callable[[str], ConfigError], stage: str, name: str, whose: str
) -> None:
    """A hosted model's answers carry no confidence: the gate would fail each one, paid for."""
    error = config_error(with_hosted(pipeline(stage)))
    message = str(error)
    assert f"systems.flow.stages[0].gates[0]: stage '{name}': {whose} is a hosted" in message
    assert "hosted model (provider 'openai')" in message
    assert "a confidence gate would fail every answer" in message


async def test_a_pipeline_with_a_disabled_stage_is_noted(
    yard_of: Callable[[str], Yard], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` said ok and noted only the provider; every request then failed."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with yard_of(with_hosted(pipeline("{model: hosted}"))) as yard:
        notes = [n for n in yard.notes if n.startswith("pipeline flow")]
    assert notes == [
        "pipeline flow: stage hosted is disabled (provider 'openai': environment variable "
        "OPENAI_API_KEY is not set); it cannot answer"
    ]


async def test_callable_gate(
    yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gates_for_tests.py").write_text(
        "def short(text, response):\n    return len(text) < 10\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    gate = "{type: callable, function: gates_for_tests:short}"
    async with yard_of(pipeline(f"{{model: extractor, gates: [{gate}]}}")) as yard:
        with pytest.raises(
            QualityCheckError, match="callable gates_for_tests:short: returned false"
        ):
            await yard.complete("flow", "capital?")


@pytest.mark.parametrize(
    ("returned", "verdict"),
    [
        ("'false'", "returned 'false' (str), not true or false"),
        ("None", "returned None (NoneType), not true or false"),
        ("numpy.bool_(False)", "returned false"),
        ("numpy.bool_(True)", None),
    ],
)
async def test_a_callable_gate_that_returns_no_bool_fails_saying_what_it_returned(
    yard_of: Callable[[str], Yard],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    returned: str,
    verdict: str | None,
) -> None:
    """A gate's verdict was read as Python truth: one returning the string 'false' (or any
    object) passed every output unseen. Only a bool (numpy's too) is a verdict now; anything
    else fails the gate, naming the function and what it returned."""
    module = f"typed_gate_{tmp_path.name}"  # a module of its own for each case: imports are kept
    (tmp_path / f"{module}.py").write_text(
        f"import numpy\ndef check(text, response):\n    return {returned}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    gate = f"{{type: callable, function: {module}:check}}"
    async with yard_of(pipeline(f"{{model: extractor, gates: [{gate}]}}")) as yard:
        if verdict is None:
            assert (await yard.complete("flow", "capital?")).text == "Paris is lovely"
            return
        with pytest.raises(QualityCheckError) as caught:
            await yard.complete("flow", "capital?")
    assert f"failed check callable {module}:check: {verdict}" in str(caught.value)


async def test_a_callable_gate_still_running_at_the_deadline_stops_the_pipeline_then(
    yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An async gate that hangs held the pipeline (and its caller) until it returned, long past
    # the request's deadline. Cut there, it gave no verdict: no retry can be judged either.
    (tmp_path / "hanging_gates_for_tests.py").write_text(
        "import asyncio\nasync def hang(text, response):\n"
        "    await asyncio.sleep(5)\n    return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    gate = "{type: callable, name: slow-check, function: hanging_gates_for_tests:hang}"
    async with yard_of(pipeline(f"{{model: extractor, gates: [{gate}], retries: 2}}")) as yard:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError) as caught:
            await yard.complete("flow", "capital?", deadline=time.monotonic() + 0.3)
    assert time.perf_counter() - started < 1.0
    assert "slow-check" in str(caught.value) and "deadline" in str(caught.value)
    assert caught.value.cost > 0  # the extractor answered before the gate ran
    assert caught.value.decision is not None
    assert [d.node for d in caught.value.decision.walk() if d.kind == "model"] == ["extractor"]


def test_gate_naming_a_missing_callable_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    gate = "{type: callable, name: tidy, function: gates_for_tests:absent_function}"
    error = config_error(pipeline(f"{{model: extractor, gates: [{gate}]}}"))
    assert "systems.flow.stages[0].gates[0].function" in str(error)
    assert "gate 'tidy'" in str(error)


def test_template_reading_a_later_stage_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    error = config_error(pipeline("{model: extractor, input: 'x {stages.writer}'}"))
    assert "systems.flow.stages[0].input" in str(error)
    assert "names a later stage" in str(error)


async def test_missing_json_field_stops_with_a_quality_error(
    yard_of: Callable[[str], Yard],
) -> None:
    second = "{model: writer, input: 'Describe {previous.country}'}"
    async with yard_of(pipeline("{model: extractor}", second)) as yard:
        with pytest.raises(QualityCheckError, match="output has no field 'country'"):
            await yard.complete("flow", "capital?")


async def test_last_stage_streams_live(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(pipeline("{model: extractor}")) as yard:
        chunks = [c async for c in yard.get("flow").stream(user("capital?"))]
    assert [c.text for c in chunks if c.text] == ["Paris ", "is ", "lovely"]
    final = chunks[-1].response
    assert final is not None and final.cost == 11.0


def _reasons(decision: Decision) -> list[tuple[str, str]]:
    return [(d.node, d.reason) for d in decision.walk()]


async def test_a_streamed_pipeline_records_its_stages_as_a_whole_one_does(
    yard_of: Callable[[str], Yard],
) -> None:
    # The last stage streamed said "streamed" where the same stage answering whole said
    # "try 1 by writer passed", so the records of one request differed by how it was asked.
    async with yard_of(pipeline("{model: extractor}")) as yard:
        whole = await yard.complete("flow", "capital?")
        streamed = await collect(yard.get("flow").stream(user("capital?")))
    assert whole.decision is not None and streamed.decision is not None
    assert _reasons(streamed.decision) == _reasons(whole.decision)


async def test_a_streamed_last_stage_that_fails_is_recorded_as_a_whole_one_is(
    yard_of: Callable[[str], Yard],
) -> None:
    text = pipeline("{model: extractor}", "{model: checker-down}")
    records = []
    async with yard_of(text) as yard:
        for streamed in (False, True):
            with pytest.raises(UnavailableError) as caught:
                if streamed:
                    await collect(yard.get("flow").stream(user("capital?")))
                else:
                    await yard.complete("flow", "capital?")
            assert caught.value.decision is not None
            records.append(_reasons(caught.value.decision))
    assert records[1] == records[0]


def failing(kind: str, first: str, second: str | None = None) -> str:
    """A pipeline whose `failing` model fails with an error of `kind`."""
    text = pipeline(first) if second is None else pipeline(first, second)
    model = f"  failing:\n    local: {{type: fake, default: {{error: {kind}}}}}\n"
    return text.replace("systems:\n", model + "systems:\n")


@pytest.mark.parametrize("kind", ["unavailable", "rate_limited", "timeout", "overloaded"])
async def test_a_try_that_fails_as_a_fallback_moves_on_goes_to_the_escalation_at_once(
    yard_of: Callable[[str], Yard], kind: str
) -> None:
    # The pipeline stopped at the first try's error, the escalation never asked; the retries
    # are for gate failures and are skipped (an outage would repeat).
    stage = "{name: draft, model: failing, retries: 2, escalate: extractor}"
    async with yard_of(failing(kind, stage)) as yard:
        response = await yard.complete("flow", "capital?")
    assert response.text == "Paris is lovely"
    assert response.decision is not None
    draft = response.decision.children[0]
    assert (draft.chosen, draft.reason) == (
        "extractor",
        f"escalation by extractor passed (after try 1 failed ({kind}))",
    )
    assert [c.node for c in draft.children] == ["failing", "extractor"]
    assert response.cost == 11.0  # the extractor's 7 tokens and the writer's 4


@pytest.mark.parametrize("kind", ["bad_request", "content_filter"])
async def test_a_bad_request_stops_the_pipeline_without_escalating(
    yard_of: Callable[[str], Yard], kind: str
) -> None:
    stage = "{name: draft, model: failing, escalate: extractor}"
    async with yard_of(failing(kind, stage)) as yard:
        with pytest.raises(BadRequestError) as caught:
            await yard.complete("flow", "capital?")
    decision = caught.value.decision
    assert decision is not None
    assert decision.reason == f"stage 'draft' failed ({kind})"
    [draft] = decision.children
    assert [c.node for c in draft.children] == ["failing"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_last_stage_that_is_down_goes_to_its_escalation_whole_or_streamed(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    last = "{name: answer, model: failing, input: 'Describe {previous.city}', escalate: writer}"
    async with yard_of(failing("unavailable", "{model: extractor}", last)) as yard:
        response = await ask(yard, "flow", streamed)
    assert (response.text, response.model) == ("Paris is lovely", "writer")
    assert response.decision is not None
    answer = response.decision.children[-1]
    assert (answer.chosen, answer.reason) == (
        "writer",
        "escalation by writer passed (after try 1 failed (unavailable))",
    )
    assert [c.node for c in answer.children] == ["failing", "writer"]
    assert response.cost == 11.0
