"""An ensemble's judge or fuser under a deadline: it keeps `combiner_share` of the time, the
members being cut at the rest; with no time left at all it is not asked and the vote decides,
and the record says which."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from modelyard.errors import ConfigError
from modelyard.model import ModelInfo
from modelyard.patterns.ensemble import EnsembleModel
from modelyard.patterns.normalise import choice
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.streaming import collect
from modelyard.types import user
from modelyard.yard import Yard
from tests.patterns.conftest import dollars
from tests.patterns.test_ensemble import MODELS

JUDGED = (
    MODELS
    + """
systems:
  panel:
    type: ensemble
    deadline: 0.8
    members: [a, b, slow]
    normalise: choice
    combine: JUDGE
"""
)


def judged(combine: str) -> str:
    setting = "judge\n    judge: judge" if combine == "judge" else "fuse\n    fuser: fuser"
    return JUDGED.replace("JUDGE", setting)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_judge_keeps_its_share_of_the_deadline_when_a_member_runs_late(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # `slow` takes 2 s: it held the members until the ensemble's deadline, and the judge, asked
    # with no time left, failed at once and the vote decided. It is cut at 75 % of the time.
    async with yard_of(judged("judge")) as yard:
        started = time.perf_counter()
        request = user("which one?")
        panel = yard.get("panel")
        response = await (collect(panel.stream(request)) if streamed else panel.complete(request))
    assert time.perf_counter() - started < 0.8
    assert response.decision is not None
    assert response.decision.reason == "judge picked answer 2"
    assert (response.text, response.model) == ("The answer is B", "b")
    children = {d.node: d for d in response.decision.children}
    assert "the members' share of the deadline (the judge keeps 25%) passed" in str(
        children["slow"].error
    )
    assert children["judge"].error is None
    assert response.cost == pytest.approx(
        dollars("B") + dollars("The answer is B") + dollars("Answer 2 is best")
    )


async def test_a_fuser_keeps_its_share_of_the_deadline(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(judged("fuse")) as yard:
        response = await yard.complete("panel", "which one?")
    assert (response.text, response.model) == ("B, because of friction", "fuser")
    assert response.decision is not None and response.decision.reason == "fuser merged 2 answers"


async def test_the_share_is_configurable(yard_of: Callable[[str], Yard]) -> None:
    text = judged("judge").replace("combine: judge", "combine: judge\n    combiner_share: 0.5")
    async with yard_of(text) as yard:
        started = time.perf_counter()
        response = await yard.complete("panel", "which one?")
    assert time.perf_counter() - started < 0.6  # members cut at 0.4 s
    assert response.decision is not None
    slow = next(d for d in response.decision.children if d.node == "slow")
    assert "(the judge keeps 50%)" in str(slow.error)


def test_a_share_without_a_judge_or_fuser_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    text = judged("judge").replace("combine: judge\n    judge: judge", "combiner_share: 0.5")
    error = config_error(text)
    assert "combiner_share" in str(error) and "'vote'" in str(error)


def _model(name: str, text: str) -> ScriptedModel:
    return ScriptedModel(info=ModelInfo(name=name, kind="model"), default=Reply(text=text))


@pytest.mark.parametrize("combine", ["judge", "fuse"])
async def test_with_no_time_left_the_combiner_is_not_asked_and_the_vote_decides(
    combine: str,
) -> None:
    # The members answer at once; the time left when they have is none (the deadline is
    # reached as the judge would be asked). A call past its deadline could only fail.
    combiner = _model("combiner", "Answer 2")
    panel = EnsembleModel(
        "panel",
        [_model("m1", "A"), _model("m2", "A")],
        normalise=choice,
        combine=combine,  # type: ignore[arg-type]
        combiner=combiner,
    )
    ask_members = panel.gather

    async def then_time_runs_out(request):  # type: ignore[no-untyped-def]
        outcomes = await ask_members(request)
        await asyncio.sleep(0.06)  # past the ensemble's own deadline too
        return outcomes

    panel.gather = then_time_runs_out  # type: ignore[method-assign]
    response = await panel.complete(user("which?", deadline=time.monotonic() + 0.05))
    assert response.model == "m1" and not combiner.calls
    assert response.decision is not None
    role = "judge" if combine == "judge" else "fuser"
    assert response.decision.reason.startswith(f"no time left for the {role}; vote instead")
    skipped = response.decision.children[-1]
    assert (skipped.node, skipped.details) == ("combiner", {"not_asked": True})
