"""Patterns nested four deep (router > pipeline > cascade > ensemble with a judge), a fault at
each depth: whole and streamed agree, every node's cost is its children's, the calls add up to
the total, and nothing outlives the request's deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from modelyard.errors import ModelError
from modelyard.streaming import collect
from modelyard.types import ChatResponse, Decision, user
from modelyard.yard import Yard

PRICE = "price: {input: 1000000, output: 1000000}"
"""$1 a token each way: failed calls that reached their provider cost their input."""

REPLIES = {
    "m1": '"A"',
    "m2": '"B"',
    "m3": '"C"',
    "judge": '"2"',
    "checker": '"yes"',
    "big": '"The big model says B"',
    "writer": '"Final: polished answer"',
}

SYSTEMS = """
systems:
  top:
    type: router
    rules: [{route: chat, keywords: [hello]}]
    default: hard
    routes:
      chat: writer
      hard:
        type: pipeline
        name: solve-and-write
        stages:
          - name: solve
            model:
              type: cascade
              name: careful
              stages:
                - model:
                    type: ensemble
                    name: panel
                    members: [m1, m2, m3]
                    normalise: choice
                    combine: judge
                    judge: judge
                  threshold: 0.5
                  estimator: {type: verifier, model: checker}
                - model: big
          - {name: write, model: writer, input: "Write up: {previous}"}
"""

FAULTS = {
    "none": {},
    "a member is rate limited": {"m1": "{error: rate_limited, retry_after: 3}"},
    "every member fails": {
        "m1": "{error: rate_limited}",
        "m2": "{error: unavailable}",
        "m3": "{error: timeout}",
    },
    "a member hangs past the deadline": {"m3": '{text: "C", latency: 5}'},
    "the judge fails": {"judge": "{error: unavailable}"},
    "the judge's pick is unreadable": {"judge": '"I cannot decide"'},
    "the judge hangs past the deadline": {"judge": '{text: "1", latency: 5}'},
    "the verifier fails": {"checker": "{error: overloaded}"},
    "the verifier's verdict is unreadable": {"checker": '"hmm, maybe"'},
    "the last stage fails": {"big": "{error: unavailable}"},
    "the last stage hangs past the deadline": {"big": '{text: "late", latency: 5}'},
    "every answerer of the cascade fails": {
        "m1": "{error: unavailable}",
        "m2": "{error: unavailable}",
        "m3": "{error: unavailable}",
        "big": "{error: unavailable}",
    },
    "the pipeline's last stage fails": {"writer": "{error: rate_limited}"},
    "the pipeline's last stage hangs past the deadline": {"writer": '{text: "x", latency: 5}'},
}

DEADLINE = 1.0


def config(faults: dict[str, str]) -> str:
    models = "".join(
        f"  {name}:\n    local: {{type: fake, default: {faults.get(name, reply)}}}\n    {PRICE}\n"
        for name, reply in REPLIES.items()
    )
    return "models:\n" + models + SYSTEMS


def shape(decision: Decision) -> tuple[object, ...]:
    """The record without its timings and wording: who ran, what was chosen, what it cost."""
    return (
        decision.node,
        decision.kind,
        decision.chosen,
        round(decision.cost, 9),
        decision.error is not None,
        tuple(shape(c) for c in decision.children),
    )


def unbalanced(decision: Decision) -> list[str]:
    """Nodes whose cost is not their children's."""
    out = []
    if decision.children and sum(c.cost for c in decision.children) != pytest.approx(decision.cost):
        out.append(decision.node)
    for child in decision.children:
        out.extend(unbalanced(child))
    return out


async def outcome(yard: Yard, streamed: bool) -> tuple[object, float, Decision, float]:
    """(answer text or error class, cost, record, seconds taken) of one request to `top`."""
    started = time.perf_counter()
    request = user("which letter?", deadline=time.monotonic() + DEADLINE)
    try:
        if streamed:
            response: ChatResponse = await collect(yard.get("top").stream(request))
        else:
            response = await yard.get("top").complete(request)
    except ModelError as exc:
        assert exc.decision is not None
        return type(exc).__name__, exc.cost, exc.decision, time.perf_counter() - started
    assert response.decision is not None
    return response.text, response.cost, response.decision, time.perf_counter() - started


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_fault_at_any_depth_is_answered_or_reported_the_same_whole_or_streamed(
    fault: str, yard_of: Callable[[str], Yard]
) -> None:
    async with yard_of(config(FAULTS[fault])) as yard:
        whole = await outcome(yard, streamed=False)
        streamed = await outcome(yard, streamed=True)
    for _, cost, record, seconds in (whole, streamed):
        assert seconds < DEADLINE + 0.2
        assert record.cost == pytest.approx(cost)
        calls = [d for d in record.walk() if not d.children and d.kind != "stage"]
        assert sum(d.cost for d in calls) == pytest.approx(cost)
        assert unbalanced(record) == []
    assert whole[0] == streamed[0]
    assert whole[1] == pytest.approx(streamed[1])
    assert shape(whole[2]) == shape(streamed[2])
