"""A pipeline under a deadline: a stage with a `share` of the time left is cut at it and the
error names it (unless it has an escalation, which then gets the stage's share of what is left);
without one it may use all the time left (a pipeline has no other path, so a cut would fail
requests that fit), and a later stage that runs out says what the earlier took."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from modelyard.errors import ConfigError, ModelTimeoutError
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, ask

MODELS = f"""
models:
  drafter:
    local: {{type: fake, default: {{text: "a draft", latency: DRAFT}}}}
    {PRICE}
  checker:
    local: {{type: fake, default: {{text: "checked", latency: 0.2}}}}
    {PRICE}
  writer:
    local: {{type: fake, default: "the answer"}}
    {PRICE}
  careful:
    local: {{type: fake, default: {{text: "a careful draft", latency: CAREFUL}}}}
    {PRICE}
systems:
  flow:
    type: pipeline
    deadline: 0.9
    stages:
      - {{name: draft, model: drafter SHARE}}
      - {{name: check, model: checker, input: "Check: {{previous}}"}}
      - {{name: answer, model: writer, input: "Write: {{previous}}"}}
"""


def flow(draft_latency: float, share: str = "", escalation: float | None = None) -> str:
    text = MODELS.replace("DRAFT", str(draft_latency)).replace("CAREFUL", str(escalation or 0))
    settings = f", share: {share}" if share else ""
    if escalation is not None:
        settings += ", retries: 1, escalate: careful"
    return text.replace(" SHARE", settings)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_slow_first_stage_is_cut_at_its_share_and_named(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    async with yard_of(flow(0.7, share="0.34")) as yard:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError) as caught:
            await ask(yard, "flow", streamed)
    # Cut at a third of 0.9 s (and the grace), well before the draft's 0.7 s answer: room for
    # a loaded machine (0.5 failed once in CI beside other work).
    assert time.perf_counter() - started < 0.65
    error = caught.value
    cut = r"stage 'draft''s share of the deadline \(0\.3\d*s\) passed"  # 0.34 of 0.9 s
    assert re.search(cut, str(error))
    assert "node flow's deadline" not in str(error)  # 0.6 s of it were left
    assert error.decision is not None
    assert re.fullmatch(r"stage 'draft' failed \(timeout\): " + cut, error.decision.reason)
    assert [d.node for d in error.decision.children] == ["draft"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_stage_out_of_time_names_what_the_stages_before_it_took(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # The draft took 0.7 s of 0.9: the check, left 0.2 s for its 0.2 s, runs out; the
    # error must say where the time went, not only that the check timed out.
    async with yard_of(flow(0.7)) as yard:
        with pytest.raises(ModelTimeoutError) as caught:
            await ask(yard, "flow", streamed)
    error = caught.value
    assert error.decision is not None
    took = r"the stages before it took 'draft' [78]\d\d ms"
    assert re.fullmatch(r"stage 'check' failed \(timeout\); " + took, error.decision.reason)
    assert re.search(took, str(error))
    assert [d.node for d in error.decision.children] == ["draft", "check"]


async def test_without_shares_a_slow_first_stage_keeps_the_time_it_needs(
    yard_of: Callable[[str], Yard],
) -> None:
    # 0.5 s of 0.9: more than an even third, and the later stages still fit in what is left.
    async with yard_of(flow(0.5)) as yard:
        response = await yard.complete("flow", "a question")
    assert response.text == "the answer"


async def test_stages_within_their_shares_leave_the_last_its_time(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(flow(0.25)) as yard:
        response = await yard.complete("flow", "a question")
    assert response.text == "the answer"
    assert response.decision is not None
    assert [d.node for d in response.decision.children] == ["draft", "check", "answer"]


async def test_a_stage_share_lets_a_slow_stage_take_more(yard_of: Callable[[str], Yard]) -> None:
    # 0.4 s of 0.9: within the 0.6 it is given; the check then has what is left (0.5 s).
    async with yard_of(flow(0.4, share="0.6")) as yard:
        response = await yard.complete("flow", "a question")
    assert response.text == "the answer"


def test_a_share_on_the_last_stage_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    text = flow(0.1).replace('"Write: {previous}"}', '"Write: {previous}", share: 0.5}')
    error = config_error(text)
    assert "stages[2] is the last stage" in str(error) and "drop its share" in str(error)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_stage_cut_at_its_share_escalates_with_its_share_of_what_is_left(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # The draft is cut at 0.34 of 0.9 s (0.306 s): its escalation gets 0.34 of the 0.594 s
    # left (0.2 s) for its 0.1 s, and the check and the answer still fit in the rest. The
    # retry is not made: the drafter would be as slow again.
    async with yard_of(flow(0.7, share="0.34", escalation=0.1)) as yard:
        response = await ask(yard, "flow", streamed, "a question")
    assert response.text == "the answer"
    assert response.decision is not None
    draft = response.decision.children[0]
    assert re.fullmatch(
        r"escalation by careful passed \(after try 1 was cut at stage 'draft''s share of the"
        r" deadline \(0\.3\d*s\)\)",
        draft.reason,
    )
    assert [d.node for d in draft.children] == ["drafter", "careful"]
    assert re.search(
        r"stage 'draft''s share of the deadline \(0\.3\d*s\) passed", str(draft.children[0].error)
    )
    assert [d.node for d in response.decision.children] == ["draft", "check", "answer"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_an_escalation_cut_at_its_share_stops_the_pipeline_and_is_named(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # The escalation needs 0.3 s of its 0.2: it is cut too, leaving the later stages the rest.
    async with yard_of(flow(0.7, share="0.34", escalation=0.3)) as yard:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError) as caught:
            await ask(yard, "flow", streamed, "a question")
    assert time.perf_counter() - started < 0.7  # 0.306 + 0.2 s, and the grace
    error = caught.value
    cut = r"stage 'draft''s share of the time left for its escalation \(0\.[12]\d*s\) passed"
    assert re.search(cut, str(error))
    assert error.decision is not None
    assert re.fullmatch(r"stage 'draft' failed \(timeout\): " + cut, error.decision.reason)
    draft = error.decision.children[0]
    assert draft.reason == "escalation failed (timeout)"
    assert [d.node for d in draft.children] == ["drafter", "careful"]
