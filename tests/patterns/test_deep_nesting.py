"""A cascade whose first stage is an ensemble (with a judge) whose member is a router whose
route is a pipeline, each with a deadline of its own, and a fault at each level: every level's
record says what happened there, every node costs what its children do, the ledger bills each
model what its calls cost, and errors name the node and the stage that failed."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.errors import ModelError
from modelyard.streaming import collect
from modelyard.types import ChatResponse, Decision, user
from tests.cost.test_abandoned_per_model import by_model, ledger_rows
from tests.patterns.test_composition_faults import shape, unbalanced

PRICE = "price: {input: 1000000, output: 1000000}"
"""$1 a token each way: failed calls that reached their provider cost their input."""

REPLIES = {
    "drafter": '"draft: B"',
    "writer": '"B"',
    "m1": '"B"',
    "m3": '"C"',
    "judge": '"1"',
    "big": '"The big model says B"',
}

SYSTEMS = """
systems:
  top:
    type: cascade
    deadline: 2.0
    stages:
      - model:
          type: ensemble
          name: panel
          deadline: 1.2
          members:
            - type: router
              name: desk
              deadline: 0.9
              rules: [{route: long, keywords: [explain]}]
              default: quick
              routes:
                quick: m1
                long:
                  type: pipeline
                  name: drafting
                  deadline: 0.8
                  stages:
                    - {name: draft, model: drafter, share: 0.5}
                    - {name: write, model: writer, input: "Write: {previous}"}
            - m1
            - m3
          normalise: choice
          combine: judge
          judge: judge
        threshold: 0.6
        estimator: {type: confidence}
      - model: big
"""


def config(faults: dict[str, str]) -> str:
    models = "".join(
        f"  {name}:\n    local: {{type: fake, default: {faults.get(name, reply)}}}\n    {PRICE}\n"
        for name, reply in REPLIES.items()
    )
    return "models:\n" + models + SYSTEMS


def node(decision: Decision, name: str) -> Decision:
    """The one record of the node `name` in the tree (not the cascade stage named for it)."""
    found = [d for d in decision.walk() if d.node == name and d.kind != "stage"]
    assert len(found) == 1, [d.node for d in decision.walk()]
    return found[0]


async def ask(
    write_config: Callable[[str], Path], faults: dict[str, str], streamed: bool
) -> tuple[ChatResponse | ModelError, Decision, dict[str, float], float]:
    """One request to `top` ("explain", so the router takes the pipeline): the answer or error,
    its record, the ledger's spend per model, and the seconds it took."""
    return await ask_text(write_config, config(faults), streamed)


async def ask_text(
    write_config: Callable[[str], Path], text: str, streamed: bool
) -> tuple[ChatResponse | ModelError, Decision, dict[str, float], float]:
    """As `ask`, with the config's text."""
    path = write_config(text, "streamed.yaml" if streamed else "config.yaml")  # own ledger
    outcome: ChatResponse | ModelError
    async with modelyard.load(path) as yard:
        request = user("explain: which letter?")
        started = time.perf_counter()  # the request's time, not the config's loading
        try:
            if streamed:
                outcome = await collect(yard.get("top").stream(request))
            else:
                outcome = await yard.get("top").complete(request)
        except ModelError as exc:
            outcome = exc
        seconds = time.perf_counter() - started
    record = outcome.decision
    assert record is not None
    return outcome, record, by_model(await ledger_rows(path)), seconds


def check_books(
    outcome: ChatResponse | ModelError, record: Decision, ledger: dict[str, float]
) -> None:
    """Every level costs its children; the calls, the record and the ledger agree, per model."""
    assert unbalanced(record) == []
    assert record.cost == pytest.approx(outcome.cost)
    calls = [d for d in record.walk() if not d.children and d.kind != "stage"]
    per_model: dict[str, float] = {}
    for call in calls:
        if call.cost and not call.details.get("not_asked"):
            per_model[call.node] = per_model.get(call.node, 0.0) + call.cost
    assert ledger == pytest.approx(per_model)
    assert sum(ledger.values()) == pytest.approx(outcome.cost)


STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])


@STREAMED
async def test_no_fault_the_pipeline_behind_the_router_wins_the_vote(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    outcome, record, ledger, _ = await ask(write_config, {}, streamed)
    assert isinstance(outcome, ChatResponse) and outcome.text == "B"
    assert (record.kind, record.chosen) == ("cascade", "panel")
    panel = node(record, "panel")
    assert panel.reason == "judge picked answer 1"
    assert node(record, "desk").chosen == "long"  # the route taken
    assert node(record, "drafting").reason == "2 stage(s) passed; stage 'write' answered"
    check_books(outcome, record, ledger)


@STREAMED
async def test_a_hanging_draft_is_cut_at_its_share_and_the_cascade_escalates(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    # The cascade's first stage has 1 s of 2, the members 0.75 s of that (the judge keeps a
    # quarter), and the pipeline's draft its share, half of what it was given: 0.375 s.
    outcome, record, ledger, seconds = await ask(
        write_config, {"drafter": '{text: "late", latency: 5}'}, streamed
    )
    assert seconds < 1.5
    assert isinstance(outcome, ChatResponse) and outcome.text == "The big model says B"
    drafting = node(record, "drafting")
    assert drafting.reason.startswith("stage 'draft' failed (timeout): stage 'draft''s share")
    assert "stage 'draft''s share of the deadline" in str(node(record, "desk").error)
    panel = node(record, "panel")
    # desk failed, m1 said B, m3 C: the judge picked m1, agreeing with 1 of 3.
    assert panel.reason == "judge picked answer 1"
    stage = next(d for d in record.children if d.node == "panel")
    assert stage.reason.startswith("escalated:") and stage.scores["confidence"] < 0.6
    assert record.chosen == "big"
    check_books(outcome, record, ledger)


@STREAMED
async def test_a_hanging_judge_leaves_the_vote_to_decide_within_the_stage(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    outcome, record, ledger, seconds = await ask(
        write_config, {"judge": '{text: "1", latency: 5}'}, streamed
    )
    assert seconds < 1.2  # the cascade's first stage and its grace
    assert isinstance(outcome, ChatResponse) and outcome.text == "B"
    panel = node(record, "panel")
    assert panel.reason == (
        "the deadline passed before the judge answered; vote instead: 'B' won with votes 2 of 3"
        " members"
    )
    assert record.chosen == "panel"
    check_books(outcome, record, ledger)


@STREAMED
async def test_a_hanging_member_is_cut_so_the_judge_still_judges(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    outcome, record, ledger, _ = await ask(
        write_config, {"m3": '{text: "C", latency: 5}'}, streamed
    )
    assert isinstance(outcome, ChatResponse) and outcome.text == "B"
    assert node(record, "panel").reason == "judge picked answer 1"
    assert "the members' share of the deadline" in str(node(record, "m3").error)
    assert record.chosen == "panel"
    check_books(outcome, record, ledger)


@STREAMED
async def test_when_every_level_fails_the_error_names_the_way_down(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    faults = {
        "writer": "{error: unavailable}",
        "m1": "{error: rate_limited}",
        "m3": "{error: unavailable}",
        "big": "{error: unavailable}",
    }
    outcome, record, ledger, _ = await ask(write_config, faults, streamed)
    assert isinstance(outcome, ModelError) and outcome.kind == "unavailable"
    assert outcome.path[0] == "top"
    assert record.reason == "last stage big failed (unavailable)"
    panel = node(record, "panel")
    assert panel.error is not None and "0 of 3 members gave a usable answer" in panel.error
    drafting = node(record, "drafting")
    assert drafting.reason == "stage 'write' failed (unavailable)"
    check_books(outcome, record, ledger)


@STREAMED
async def test_a_router_past_its_own_deadline_says_so_at_its_level(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    faults = {"writer": '{text: "B", latency: 5}', "m3": '"B"'}
    path_text = config(faults).replace("deadline: 0.9", "deadline: 0.3")
    outcome, record, ledger, seconds = await ask_text(write_config, path_text, streamed)
    assert seconds < 1.0
    assert isinstance(outcome, ChatResponse) and outcome.text == "B"  # m1, picked
    desk = node(record, "desk")
    assert desk.error is not None and "node desk's deadline (0.3s) passed" in desk.error
    drafting = node(record, "drafting").reason
    assert drafting.startswith("stage 'write' failed (timeout); the stages before it took 'draft' ")
    check_books(outcome, record, ledger)


@STREAMED
async def test_a_quorum_cancelling_the_pipeline_bills_its_draft_to_the_drafter(
    write_config: Callable[[str], Path], streamed: bool
) -> None:
    # m1 and m3 agree at once, which settles a vote of quorum 2: the router's pipeline is
    # cancelled while its writer thinks, after its draft was paid for.
    faults = {"m3": '"B"', "writer": '{text: "B", latency: 0.5}'}
    text = config(faults).replace(
        "combine: judge\n          judge: judge", "quorum: 2\n          wait: quorum"
    )
    outcome, record, ledger, seconds = await ask_text(write_config, text, streamed)
    assert seconds < 0.5
    assert isinstance(outcome, ChatResponse) and outcome.text == "B"
    desk = node(record, "desk")
    assert desk.reason == "cancelled: the outcome was already decided"
    # The draft it paid for, and the input of the writer's call it was waiting for.
    assert [d.node for d in desk.children] == ["drafter", "writer"]
    assert ledger["drafter"] == node(record, "drafter").cost > 0
    check_books(outcome, record, ledger)


FAULTS = {
    "the drafter fails": {"drafter": "{error: unavailable}"},
    "the drafter is rate limited": {"drafter": "{error: rate_limited, retry_after: 3}"},
    "the writer hangs": {"writer": '{text: "B", latency: 5}'},
    "the writer's answer is unreadable": {"writer": '"no idea"'},
    "every member fails": {
        "drafter": "{error: unavailable}",
        "m1": "{error: unavailable}",
        "m3": "{error: timeout}",
    },
    "every member hangs": {
        "drafter": '{text: "x", latency: 5}',
        "m1": '{text: "B", latency: 5}',
        "m3": '{text: "C", latency: 5}',
    },
    "the judge fails": {"judge": "{error: unavailable}"},
    "the last stage hangs": {"m3": '"A"', "big": '{text: "late", latency: 5}'},
    "the judge and the last stage hang": {
        "m3": '"A"',
        "judge": '{text: "1", latency: 5}',
        "big": '{text: "late", latency: 5}',
    },
}


def slowed(text: str, factor: float) -> str:
    """`text` with every deadline and latency `factor` times as long."""
    return re.sub(
        r"(deadline|latency): ([0-9.]+)", lambda m: f"{m[1]}: {float(m[2]) * factor:g}", text
    )


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_any_fault_is_answered_or_reported_the_same_whole_or_streamed(
    write_config: Callable[[str], Path], fault: str
) -> None:
    # Two requests must be cut alike: at twice the times, a level's cut is 0.5 s (not 0.25 s)
    # before the one around it, room for a loaded machine's event loop to fall behind.
    text = slowed(config(FAULTS[fault]), 2)
    whole = await ask_text(write_config, text, False)
    streamed = await ask_text(write_config, text, True)
    for outcome, record, ledger, seconds in (whole, streamed):
        assert seconds < 4.6  # the cascade's deadline, and the grace of each level
        check_books(outcome, record, ledger)
    texts = [
        o.text if isinstance(o, ChatResponse) else type(o).__name__ for o, *_ in (whole, streamed)
    ]
    assert texts[0] == texts[1]
    assert shape(whole[1]) == shape(streamed[1])


HANGS = {
    "the draft": (
        "{name: draft, model: drafter, share: 0.5}",
        "{name: draft, model: hanger, share: 0.5}",
    ),
    "the write-up": (
        '{name: write, model: writer, input: "Write: {previous}"}',
        '{name: write, model: hanger, input: "Write: {previous}"}',
    ),
    "a member": ("            - m3\n", "            - hanger\n"),
    "the judge": ("judge: judge", "judge: hanger"),
    "the last stage": ("- model: big", "- model: hanger"),
}


@pytest.mark.parametrize("where", list(HANGS))
async def test_a_local_function_that_hangs_at_any_level_is_cut_and_billed(
    write_config: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    # A function that ignores every deadline (it sleeps 5 s), priced at its input.
    (tmp_path / "hangs_deep.py").write_text(
        "import asyncio\nasync def hang(request):\n    await asyncio.sleep(5)\n    return '1'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    old, new = HANGS[where]
    disagree = {"m1": '"C"', "m3": '"A"'} if where == "the last stage" else {}  # escalate
    text = config(disagree).replace(old, new)
    text = text.replace(
        "models:\n",
        "models:\n  hanger:\n    local: {type: callable, function: 'hangs_deep:hang'}\n"
        "    price: {input: 1000000, output: 0}\n",
        1,
    )
    for streamed in (False, True):
        outcome, record, ledger, seconds = await ask_text(write_config, text, streamed)
        assert seconds < 2.3, (where, streamed)
        check_books(outcome, record, ledger)
        cut = [d for d in record.walk() if d.node == "hanger"]
        assert cut and all(d.cost > 0 for d in cut), cut
