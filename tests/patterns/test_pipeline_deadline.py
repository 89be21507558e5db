"""A pipeline under a deadline: each stage before the last gets its share of the time left (an
even split by default, or its `share`), so a slow stage is cut at it and the error names it,
rather than a later stage failing for want of the time it ate."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from modelyard.errors import ConfigError, ModelTimeoutError
from modelyard.streaming import collect
from modelyard.types import user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE

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
systems:
  flow:
    type: pipeline
    deadline: 0.9
    stages:
      - {{name: draft, model: drafter SHARE}}
      - {{name: check, model: checker, input: "Check: {{previous}}"}}
      - {{name: answer, model: writer, input: "Write: {{previous}}"}}
"""


def flow(draft_latency: float, share: str = "") -> str:
    text = MODELS.replace("DRAFT", str(draft_latency))
    return text.replace(" SHARE", f", share: {share}" if share else "")


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_slow_first_stage_is_cut_at_its_share_and_named(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # The draft took 0.7 s of 0.9: the check was left 0.2 s, timed out, and was blamed.
    async with yard_of(flow(0.7)) as yard:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError) as caught:
            request = user("a question")
            if streamed:
                await collect(yard.get("flow").stream(request))
            else:
                await yard.get("flow").complete(request)
    assert time.perf_counter() - started < 0.5  # a third of 0.9 s, and the grace
    error = caught.value
    assert "stage 'draft''s share of the deadline (0.3s) passed" in str(error)
    assert error.decision is not None
    assert error.decision.reason == (
        "stage 'draft' failed (timeout): stage 'draft''s share of the deadline (0.3s) passed"
    )
    assert [d.node for d in error.decision.children] == ["draft"]


async def test_stages_within_their_shares_leave_the_last_its_time(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(flow(0.25)) as yard:
        response = await yard.complete("flow", "a question")
    assert response.text == "the answer"
    assert response.decision is not None
    assert [d.node for d in response.decision.children] == ["draft", "check", "answer"]


async def test_a_stage_share_lets_a_slow_stage_take_more(yard_of: Callable[[str], Yard]) -> None:
    # 0.4 s of 0.9: too long for a third, within the 0.6 it is given; the check then has
    # half of what is left (0.25 s) for its 0.2 s.
    async with yard_of(flow(0.4, share="0.6")) as yard:
        response = await yard.complete("flow", "a question")
    assert response.text == "the answer"


def test_a_share_on_the_last_stage_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    text = flow(0.1).replace('"Write: {previous}"}', '"Write: {previous}", share: 0.5}')
    error = config_error(text)
    assert "stages[2] is the last stage" in str(error) and "drop its share" in str(error)
