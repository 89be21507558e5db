"""An ensemble's judge or fuser under a deadline: it keeps `combiner_share` of the time, the
members still out at the rest being cut once the quorum has answered (fewer in, they run on);
with no time left at all it is not asked and the vote decides, and the record says which."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from modelyard.errors import ConfigError, NoAnswerError
from modelyard.model import Model, ModelInfo
from modelyard.patterns.ensemble import EnsembleModel
from modelyard.patterns.normalise import choice
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.deadline import DeadlineModel
from modelyard.streaming import collect
from modelyard.types import ChatRequest, ChatResponse, user
from modelyard.yard import Yard
from tests.patterns.conftest import ask, dollars
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
        response = await ask(yard, "panel", streamed)
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


LATE = (
    MODELS
    + """
  late_a:
    local: {type: fake, default: {text: "B", latency: 0.4}}
  late_b:
    local: {type: fake, default: {text: "The answer is B", latency: 0.4}}
  late_c:
    local: {type: fake, default: {text: "C", latency: 0.4}}
  slow_judge:
    local: {type: fake, default: {text: "Answer 3 is best", latency: 1.0}}
systems:
  panel:
    type: ensemble
    deadline: 0.5
    members: MEMBERS
    normalise: choice
    combine: judge
    judge: JUDGE
    quorum: QUORUM
"""
)


def late(members: str, judge: str = "judge", quorum: int = 1) -> str:
    text = LATE.replace("MEMBERS", members).replace("JUDGE", judge)
    return text.replace("QUORUM", str(quorum))


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_members_that_need_most_of_the_deadline_run_past_their_share(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # Each member takes 1.6 s of 2: none has answered at the members' share (1.5 s), so none
    # is cut there (they all were, and the request failed with NoAnswerError); the judge reads
    # them in what is left. Quorum 3: with 1 the first answer in cut the other two when a
    # loaded loop brought them in one by one. At 0.4 s of 0.5 a loop stalled half a second
    # (a loaded CI machine) found the deadline over before the members were sent.
    config = late("[late_a, late_b, late_c]", quorum=3)
    config = config.replace("deadline: 0.5", "deadline: 2.0").replace(
        "latency: 0.4", "latency: 1.6"
    )
    async with yard_of(config) as yard:
        response = await ask(yard, "panel", streamed)
    assert (response.text, response.model) == ("The answer is B", "late_b")
    decision = response.decision
    assert decision is not None
    assert decision.reason == (
        "judge picked answer 2; 0 of 3 members had answered at their share of the deadline"
        " (quorum is 3), so late_a, late_b, late_c ran past it"
    )
    members = decision.details["members"]
    assert [m.get("past_share") for m in members] == [True, True, True]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_members_past_their_share_leave_a_slow_judge_short_and_the_vote_decides(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # The members (0.4 s) answer past their share (10% of 0.9 s) with 0.5 s left: time enough
    # for a loaded machine to bring their answers in, not for the judge (1 s). The share ends
    # 0.3 s before they answer: at 40% (0.36 s) a loop held up 40 ms found the share over and
    # every answer in at once, and the record said none had run past it. Quorum 3, as above.
    text = late("[late_a, late_b, late_c]", judge="slow_judge", quorum=3)
    text = text.replace("deadline: 0.5", "deadline: 0.9\n    combiner_share: 0.9")
    async with yard_of(text) as yard:
        response = await ask(yard, "panel", streamed)
    assert (response.text, response.model) == ("B", "late_a")
    assert response.decision is not None
    reason = response.decision.reason
    assert reason.startswith(
        "the deadline passed before the judge answered; vote instead: 'B' won with votes 2 of 3"
        " members; 0 of 3"
    )
    assert reason.endswith("so late_a, late_b, late_c ran past it")


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_straggler_is_cut_once_the_quorum_is_in_past_the_share(
    yard_of: Callable[[str], Yard], streamed: bool
) -> None:
    # Quorum 2: at the share only `a` has answered, so the members run on; `late_b` answers at
    # 0.4 s, and `slow` (2 s) is cut then, leaving the judge the rest of the deadline: the
    # judge's pick shows it had that time (`slow` held to the deadline leaves it none, and the
    # vote decides), not a clock bound 0.1 s from the deadline that a loaded machine passed.
    async with yard_of(late("[a, late_b, slow]", quorum=2)) as yard:
        response = await ask(yard, "panel", streamed)
    decision = response.decision
    assert decision is not None
    assert decision.reason == (
        "judge picked answer 2; 1 of 3 members had answered at their share of the deadline"
        " (quorum is 2), so late_b, slow ran past it"
    )
    slow = next(d for d in decision.children if d.node == "slow")
    assert (
        "the members' share of the deadline (the judge keeps 25%) passed before the quorum"
        " answered; cut when it had"
    ) in str(slow.error)
    assert response.model == "late_b"


async def test_without_a_quorum_the_members_run_on_to_the_deadline(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(late("[a, slow]", quorum=2)) as yard:
        with pytest.raises(NoAnswerError) as caught:
            await yard.complete("panel", "which one?")
    decision = caught.value.decision
    assert decision is not None
    assert decision.reason.endswith(
        "1 of 2 members had answered at their share of the deadline (quorum is 2), so slow"
        " ran past it"
    )
    slow = next(d for d in decision.children if d.node == "slow")
    assert slow.latency_ms > 450  # the deadline, not the share (375 ms)


async def test_members_asked_in_turn_run_past_their_share_too(
    yard_of: Callable[[str], Yard],
) -> None:
    text = late("[late_a, late_b]").replace("quorum: 1", "quorum: 1\n    wait: in_turn")
    async with yard_of(text) as yard:
        response = await yard.complete("panel", "which one?")
    assert response.model == "late_a"
    assert response.decision is not None
    # One answer to pick from (the judge names a second: the vote decides); late_b not asked.
    assert response.decision.reason.endswith(
        "0 of 2 members had answered at their share of the deadline (quorum is 1), so late_a"
        " ran past it"
    )


class Deaf(Model):
    """A judge or fuser that ignores the deadline: it answers after 5 s, whole or streamed."""

    def __init__(self) -> None:
        self.info = ModelInfo(name="deaf", kind="model")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(5)
        raise AssertionError("should have been cut at the deadline")


@pytest.mark.parametrize(
    ("combine", "streamed"), [("judge", False), ("judge", True), ("fuse", False), ("fuse", True)]
)
async def test_a_combiner_that_ignores_the_deadline_is_cut_at_it_and_the_vote_decides(
    combine: str, streamed: bool
) -> None:
    # Only the node's deadline around the ensemble cut it, failing the whole request: the
    # vote, in long before, was lost.
    panel = EnsembleModel(
        "panel",
        [_model("m1", "A"), _model("m2", "A")],
        normalise=choice,
        combine=combine,  # type: ignore[arg-type]
        combiner=Deaf(),
    )
    node = DeadlineModel(panel, 0.3)  # as `deadline: 0.3` on the ensemble builds it
    started = time.perf_counter()
    request = user("which?")
    response = await (collect(node.stream(request)) if streamed else node.complete(request))
    assert time.perf_counter() - started < 0.5
    assert (response.text, response.model) == ("A", "m1")
    assert response.decision is not None
    role = "judge" if combine == "judge" else "fuser"
    assert response.decision.reason.startswith(
        f"the deadline passed before the {role} answered; vote instead: 'A' won"
    )
    cut = response.decision.children[-1]
    assert cut.node == "deaf"
    assert "the request's deadline passed while waiting for an answer" in (cut.error or "")


class BusyFirst(Model):
    """Works 0.4 s without yielding (a blocking client, a tokenizer) before it waits for an
    answer it never gets."""

    info = ModelInfo(name="busy", kind="model")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        time.sleep(0.4)  # noqa: ASYNC251 - the event loop held, as such a member holds it
        await asyncio.Event().wait()
        raise AssertionError("should have been cut")


async def test_the_members_share_ends_when_measured_whatever_a_member_does_first() -> None:
    # The share (0.6 s of 0.8) was timed from when its timer first ran, after each member's
    # first step: `busy` held the loop 0.4 s first, so the share ended at 1.0 s, past the
    # deadline; `busy` was cut at the deadline and the judge was not asked.
    judge = _model("judge", "Answer 1 is best")
    panel = EnsembleModel(
        "panel",
        [_model("a", "A"), BusyFirst()],
        normalise=choice,
        combine="judge",
        combiner=judge,
        deadline=0.8,
    )
    response = await panel.complete(user("which?"))
    assert response.decision is not None
    assert response.decision.reason == "judge picked answer 1"
    busy = next(d for d in response.decision.children if d.node == "busy")
    assert "the members' share of the deadline (the judge keeps 25%) passed" in str(busy.error)
