"""Patterns nested three deep: the answer, who answered, the total cost and the whole record."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.errors import ConfigError, ModelTimeoutError, UnavailableError
from modelyard.streaming import collect
from modelyard.types import Decision, user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, dollars

CONFIG = f"""
models:
  a:
    local: {{type: fake, answers: {{"easy": "B"}}, default: "B"}}
    {PRICE}
  b:
    local: {{type: fake, answers: {{"easy": "B"}}, default: "The answer is B"}}
    {PRICE}
  c:
    local: {{type: fake, answers: {{"easy": "(B)"}}, default: "C"}}
    {PRICE}
  drafter:
    local: {{type: fake, default: "draft text"}}
    {PRICE}
  polisher:
    local: {{type: fake, default: "Polished final answer"}}
    {PRICE}
  clf:
    local: {{type: fake, default: {{text: "quiz", confidence: 0.9}}}}
systems:
  top:
    type: router
    default: hard
    rules: [{{route: chat, keywords: [hello]}}]
    routes:
      chat: drafter
      hard:
        type: cascade
        name: careful
        stages:
          - model: {{type: ensemble, name: panel, members: [a, b, c], normalise: choice}}
            threshold: 0.9
            estimator: {{type: confidence}}
          - model:
              type: pipeline
              name: writeup
              stages:
                - {{model: drafter}}
                - {{model: polisher, input: "Polish: {{previous}}"}}
  desk:
    type: specialist
    classifier: clf
    generalist: drafter
    specialists:
      quiz:
        type: cascade
        stages:
          - model: {{type: ensemble, members: [a, c], normalise: choice}}
            threshold: 1.0
            estimator: {{type: confidence}}
          - {{model: b}}
"""


def shape(decision: Decision) -> tuple[object, ...]:
    """(node, kind, chosen, cost, children...) — the record without timings."""
    return (
        decision.node,
        decision.kind,
        decision.chosen,
        decision.cost,
        *(shape(c) for c in decision.children),
    )


async def test_disagreeing_panel_escalates_to_the_pipeline(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await yard.complete("top", "which letter?")
    # panel: a "B" 1, b "The answer is B" 4, c "C" 1 -> agreement 2/3 < 0.9: escalate.
    # writeup: drafter "draft text" 3, polisher "Polished final answer" 6.
    assert (response.text, response.model) == ("Polished final answer", "polisher")
    assert response.cost == 6.0 + 3.0 + 6.0
    assert response.decision is not None
    assert shape(response.decision) == (
        "top", "router", "hard", 15.0,
        ("careful", "cascade", "writeup", 15.0,
            ("panel", "stage", None, 6.0,
                ("panel", "ensemble", "a", 6.0,
                    ("a", "model", "a", 1.0), ("b", "model", "b", 4.0), ("c", "model", "c", 1.0))),
            ("writeup", "stage", "writeup", 9.0,
                ("writeup", "pipeline", "polisher", 9.0,
                    ("drafter", "stage", "drafter", 3.0, ("drafter", "model", "drafter", 3.0)),
                    ("polisher", "stage", "polisher", 6.0,
                        ("polisher", "model", "polisher", 6.0))))),
    )  # fmt: skip
    cascade = response.decision.children[0]
    assert cascade.children[0].reason == "escalated: own confidence 0.667 < 0.9"
    assert cascade.children[0].threshold == 0.9


async def test_agreeing_panel_answers_at_the_first_stage(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await yard.complete("top", "easy")
    assert (response.text, response.model, response.cost) == ("B", "a", 3.0)
    assert response.confidence == 1.0
    assert response.decision is not None
    assert response.decision.children[0].reason == "panel accepted: own confidence 1.000 >= 0.9"


async def test_specialist_of_a_cascade_of_an_ensemble_streams(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(CONFIG) as yard:
        chunks = [c async for c in yard.get("desk").stream(user("which letter?"))]
    # a "B" and c "C" disagree (0.5 < 1.0): b answers, streamed live.
    assert [c.text for c in chunks if c.text] == ["The ", "answer ", "is ", "B"]
    final = chunks[-1].response
    assert final is not None
    assert (final.model, final.cost) == ("b", 1.0 + 1.0 + 4.0)
    assert final.decision is not None
    assert [d.node for d in final.decision.walk() if d.kind == "model"] == ["clf", "a", "c", "b"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_error_names_the_nodes_it_came_up_through(
    streamed: bool, yard_of: Callable[[str], Yard]
) -> None:
    # The error named the model that failed ("polisher: ..."), not where it sat: a model used
    # in several routes and stages left the caller guessing which one broke.
    text = CONFIG.replace('default: "Polished final answer"', "default: {error: unavailable}")
    for answer in ('"B"}', '"The answer is B"}', '"C"}'):  # no panel answer to fall back on
        text = text.replace(f"default: {answer}", "default: {error: rate_limited}}")
    async with yard_of(text) as yard:
        with pytest.raises(UnavailableError) as caught:
            if streamed:
                await collect(yard.get("top").stream(user("which letter?")))
            else:
                await yard.complete("top", "which letter?")
    assert caught.value.path == ("top", "careful", "writeup", "polisher")
    assert caught.value.where == "top > careful > writeup > polisher"
    assert str(caught.value).startswith("polisher: scripted unavailable")


async def test_rules_bypass_the_nested_patterns(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await collect(yard.get("top").stream(user("hello there")))
    assert (response.model, response.cost) == ("drafter", 3.0)


def test_a_cycle_through_a_nested_pattern_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    text = CONFIG.replace("generalist: drafter", "generalist: top").replace(
        "rules: [{route: chat, keywords: [hello]}]",
        "rules: [{route: chat, keywords: [hello]}]\n    classifier: {model: desk}",
    )
    text = text.replace("    classifier: {model: desk}", "")  # keep one policy; cycle via route
    text = text.replace("      chat: drafter", "      chat: desk")
    error = config_error(text)
    assert "cycle" in str(error)
    assert "top -> desk -> top" in str(error) or "desk -> top -> desk" in str(error)


def _hanger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """CONFIG with `hanger`, a local function that ignores the deadline (it sleeps 5 s)."""
    (tmp_path / "hangs_for_tests.py").write_text(
        "import asyncio\nasync def hang(request):\n    await asyncio.sleep(5)\n    return 'late'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return CONFIG.replace("models:\n", "models:\n  hanger:\n    local: {type: callable, "
                          "function: 'hangs_for_tests:hang'}\n", 1)  # fmt: skip


@pytest.mark.parametrize("kind", ["router", "pipeline", "specialist"])
async def test_every_pattern_keeps_its_deadline_when_a_member_hangs(
    kind: str, yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local function that ignores the deadline: only a fallback was abandoned at its own
    # `deadline:`; every other pattern waited the function out (5 s).
    config = _hanger(tmp_path, monkeypatch)
    bodies = {
        "router": "rules: [{route: x, keywords: [zzz]}]\n    routes: {x: a, h: hanger}\n"
        "    default: h",
        "pipeline": "stages: [{model: hanger}, {model: a}]",
        "specialist": "classifier: clf\n    specialists: {quiz: hanger}\n    generalist: a",
    }
    text = config + f"  slow:\n    type: {kind}\n    deadline: 0.3\n    {bodies[kind]}\n"
    async with yard_of(text) as yard:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError) as caught:
            await yard.complete("slow", "which letter?")
    assert time.perf_counter() - started < 1.0
    assert "node slow's deadline (0.3s) passed" in str(caught.value)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_pattern_cut_at_its_deadline_keeps_the_record_of_what_ran_before(
    streamed: bool,
    yard_of: Callable[[str], Yard],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The hanging function and the pipeline's deadline were both cut GRACE after it, and the
    # pipeline's cut came first: its error held no record and an estimate ($0 streamed) for
    # what the first stage had spent. The function is now cut at the deadline itself.
    text = _hanger(tmp_path, monkeypatch)
    text += "  slow:\n    type: pipeline\n    deadline: 0.3\n"
    text += "    stages: [{model: b}, {model: hanger}]\n"
    async with yard_of(text) as yard:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError) as caught:
            if streamed:
                await collect(yard.get("slow").stream(user("which letter?")))
            else:
                await yard.complete("slow", "which letter?")
    assert time.perf_counter() - started < 1.0
    assert "node slow's deadline (0.3s) passed" in str(caught.value)
    assert caught.value.cost == dollars("The answer is B")
    assert caught.value.decision is not None
    assert [d.node for d in caught.value.decision.children] == ["b", "hanger"]


def _priced_hanger_under(body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The hanging member priced ($1 per input token), and a system `slow` of `body` with a
    1 s deadline."""
    text = _hanger(tmp_path, monkeypatch).replace(
        "function: 'hangs_for_tests:hang'}\n",
        "function: 'hangs_for_tests:hang'}\n    price: {input: 1000000, output: 0}\n",
    )
    return text + f"  slow:\n    deadline: 1\n    {body}\n"


@pytest.mark.parametrize(
    "body",
    [
        "type: cascade\n    stages: [{model: hanger, threshold: 0.5, "
        "estimator: {type: confidence}}, {model: a}]",
        "type: fallback\n    chain: [hanger, a]",
    ],
)
async def test_a_member_that_hangs_is_cut_at_its_share_and_the_next_one_answers(
    body: str, yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a deadline an early stage (a fallback's member) gets half the time left. One that
    # ignored it held the whole pattern until its deadline, so the next one never answered.
    text = _hanger(tmp_path, monkeypatch) + f"  slow:\n    deadline: 1\n    {body}\n"
    async with yard_of(text) as yard:
        started = time.perf_counter()
        response = await yard.complete("slow", "which letter?")
    assert response.model == "a" and time.perf_counter() - started < 1.0
    assert response.decision is not None
    cut = [d for d in response.decision.walk() if d.node == "hanger"]
    assert cut and "deadline passed" in str(cut[0].error)  # cut at its share of the time


async def test_an_ensemble_member_that_hangs_is_cut_at_the_deadline_and_the_rest_decide(
    yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The two answers that came lost to the one that did not: the whole ensemble was abandoned
    # at its deadline, with what its members had cost.
    text = _hanger(tmp_path, monkeypatch)
    text += "  slow:\n    type: ensemble\n    deadline: 0.3\n    members: [a, b, hanger]\n"
    text += "    normalise: choice\n"
    async with yard_of(text) as yard:
        started = time.perf_counter()
        response = await yard.complete("slow", "which letter?")
    assert time.perf_counter() - started < 1.0
    assert response.text in ("B", "The answer is B") and response.cost > 0
    assert response.decision is not None
    assert "2 of 3 members; 1 failed" in str(response.decision.reason)


@pytest.mark.parametrize(
    "body",
    [
        "type: cascade\n    stages: [{model: hanger, threshold: 0.5, "
        "estimator: {type: confidence}}, {model: a}]",
        "type: fallback\n    chain: [hanger, a]",
    ],
)
async def test_a_priced_member_cut_at_its_share_counts_its_input(
    body: str, yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The abandoned call was sent: a provider bills its input, as a budget settles it.
    text = _priced_hanger_under(body, tmp_path, monkeypatch)
    async with yard_of(text) as yard:
        alone = await yard.complete("a", "which letter?")
        response = await yard.complete("slow", "which letter?")
    assert response.model == "a" and response.cost > alone.cost > 0


@pytest.mark.parametrize(
    "body",
    [
        "type: cascade\n    stages: [{model: hanger, threshold: 0.5, "
        "estimator: {type: confidence}}, {model: a}]",
        "type: fallback\n    chain: [hanger, a]",
        "type: ensemble\n    members: [a, hanger]\n    normalise: choice",
    ],
)
async def test_the_record_of_a_priced_member_cut_off_carries_its_cost(
    body: str, yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its record said $0 while the total counted its input: the calls in the record did not
    # add up to the response's cost, and the ledger billed the difference to the answerer.
    text = _priced_hanger_under(body, tmp_path, monkeypatch)
    async with yard_of(text) as yard:
        response = await yard.complete("slow", "which letter?")
    assert response.decision is not None
    calls = [d for d in response.decision.walk() if not d.children]
    cut = [d for d in calls if d.node == "hanger"]
    assert cut and cut[0].cost > 0
    assert sum(d.cost for d in calls) == pytest.approx(response.cost)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_local_function_that_hangs_is_cut_at_the_request_deadline(
    streamed: bool, yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a node `deadline:` the request's own (x-modelyard-timeout, `default_deadline`)
    # did not reach a function that hangs: the caller waited it out (5 s).
    async with yard_of(_hanger(tmp_path, monkeypatch)) as yard:
        started = time.perf_counter()
        deadline = time.monotonic() + 0.3
        with pytest.raises(ModelTimeoutError) as caught:
            if streamed:
                async for _ in yard.stream("hanger", "which letter?", deadline=deadline):
                    pass
            else:
                await yard.complete("hanger", "which letter?", deadline=deadline)
    assert time.perf_counter() - started < 1.0
    assert "the request's deadline passed" in str(caught.value)
    assert caught.value.model == "hanger"


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_cascade_past_its_deadline_streams_the_answer_it_holds(
    streamed: bool, yard_of: Callable[[str], Yard], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last stage hangs and is cut at the cascade's deadline, which then answers with its
    # first stage's answer below the threshold. Streamed, that answer's chunks come out just
    # after the deadline, and the node's deadline refused every chunk but the first: a 504.
    text = _hanger(tmp_path, monkeypatch)
    text += "  slow:\n    type: cascade\n    deadline: 0.3\n    stages:\n"
    text += "      - {model: a, threshold: 0.99, estimator: {type: confidence}}\n"
    text += "      - model: hanger\n"
    async with yard_of(text) as yard:
        started = time.perf_counter()
        request = user("which letter?")
        slow = yard.get("slow")
        response = await (collect(slow.stream(request)) if streamed else slow.complete(request))
    assert time.perf_counter() - started < 0.5
    assert response.model == "a"
    assert response.decision is not None
    assert response.decision.reason.startswith("last stage hanger failed (timeout)")
