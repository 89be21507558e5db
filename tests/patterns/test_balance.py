"""Balance: spreading requests over equivalent members, failing over among them, skipping the
ones that cannot take a request, and its config."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable

import pytest

from modelyard.config.loader import Loc
from modelyard.cost.bounds import cost_bound
from modelyard.demo.summary import trace
from modelyard.diagram import layout, to_svg
from modelyard.errors import (
    BadRequestError,
    ConfigError,
    ModelTimeoutError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.patterns.balance import BalanceModel
from modelyard.patterns.balancing import Balancer, Cooldown
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.breaker import BreakerModel, BreakerPolicy, CircuitBreaker
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.resilience.retry import RetryModel, RetryPolicy
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from modelyard.topology import edges
from modelyard.types import Decision, user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE
from tests.resilience.scripted import Sleeps, fails, scripted


def _members(*names: str, **replies: Reply | str) -> list[ScriptedModel]:
    return [scripted(n, default=replies.get(n, f"from {n}")) for n in names]


# --- strategies ------------------------------------------------------------------------------


def test_weighted_draws_in_proportion_to_the_weights() -> None:
    balancer = Balancer(["a", "b", "c"], "weighted", weights=[1, 2, 7], seed=11)
    firsts = Counter(balancer.order([0, 1, 2]).order[0] for _ in range(20_000))
    assert firsts[0] / 20_000 == pytest.approx(0.1, abs=0.01)
    assert firsts[1] / 20_000 == pytest.approx(0.2, abs=0.01)
    assert firsts[2] / 20_000 == pytest.approx(0.7, abs=0.01)


def test_weighted_draws_are_the_same_under_the_same_seed() -> None:
    def draws(seed: int) -> list[tuple[int, ...]]:
        balancer = Balancer(["a", "b", "c"], "weighted", seed=seed)
        return [balancer.order([0, 1, 2]).order for _ in range(50)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_a_member_weighted_zero_is_only_a_last_resort() -> None:
    balancer = Balancer(["a", "b"], "weighted", weights=[0, 1], seed=1)
    assert all(balancer.order([0, 1]).order == (1, 0) for _ in range(200))
    assert balancer.order([0]).order == (0,)


async def test_round_robin_takes_each_member_in_turn() -> None:
    model = BalanceModel("pool", _members("a", "b", "c"), strategy="round_robin")
    answered = [(await model.complete(user("x"))).model for _ in range(7)]
    assert answered == ["a", "b", "c", "a", "b", "c", "a"]


async def test_least_busy_spreads_concurrent_requests_over_slow_members() -> None:
    members = [scripted(n, default=Reply(text=n, latency=0.2)) for n in ("a", "b", "c")]
    model = BalanceModel("pool", members, strategy="least_busy")
    responses = await asyncio.gather(*(model.complete(user("x")) for _ in range(6)))
    assert Counter(r.model for r in responses) == {"a": 2, "b": 2, "c": 2}
    last = responses[-1].decision
    assert last is not None and last.scores[last.chosen or ""] == 1.0
    assert "had 1 request(s) in flight" in last.reason
    assert [r.in_flight for r in model.balancer.records] == [0, 0, 0]


async def test_least_busy_avoids_a_member_still_busy_with_a_slow_request() -> None:
    slow = scripted("slow", Reply(text="late", latency=0.3), default="slow again")
    quick = scripted("quick", default="quick")
    model = BalanceModel("pool", [slow, quick], strategy="least_busy")
    first = asyncio.ensure_future(model.complete(user("x")))
    await asyncio.sleep(0)  # the first request is now out at `slow`
    later = [(await model.complete(user("x"))).model for _ in range(3)]
    assert (await first).model == "slow"
    assert later == ["quick", "quick", "quick"]


def test_fastest_prefers_the_lowest_latency_estimate() -> None:
    balancer = Balancer(["a", "b", "c"], "fastest", explore=0.0)
    for i, seconds in enumerate((0.5, 0.1, 0.3)):
        balancer.records[i].observe(seconds)
    pick = balancer.order([0, 1, 2])
    assert pick.order == (1, 2, 0)
    assert pick.scores == {"a": 500.0, "b": 100.0, "c": 300.0}
    assert pick.reason == "fastest: b had the lowest latency (100 ms)"


def test_fastest_explores_another_member_now_and_then() -> None:
    balancer = Balancer(["a", "b", "c"], "fastest", explore=0.2, seed=5)
    for i, seconds in enumerate((0.5, 0.1, 0.3)):
        balancer.records[i].observe(seconds)
    firsts = Counter(balancer.order([0, 1, 2]).order[0] for _ in range(5_000))
    assert firsts[1] / 5_000 == pytest.approx(0.8, abs=0.02)
    assert firsts[0] > 0 and firsts[2] > 0  # the slow ones are measured again


def test_a_failing_member_stops_looking_fast() -> None:
    balancer = Balancer(["a", "b"], "fastest", explore=0.0)
    balancer.records[0].observe(0.01)
    balancer.records[1].observe(0.2)
    for _ in range(5):
        balancer.records[0].failed(0.001)  # fails at once: an outage, not speed
    assert balancer.order([0, 1]).order[0] == 1


async def test_fastest_measures_every_member_then_keeps_to_the_fastest() -> None:
    slow = scripted("slow", default=Reply(text="slow", latency=0.05))
    quick = scripted("quick", default="quick")
    model = BalanceModel("pool", [slow, quick], strategy="fastest", explore=0.0)
    answered = [(await model.complete(user("x"))).model for _ in range(5)]
    assert answered == ["slow", "quick", "quick", "quick", "quick"]


# --- failover --------------------------------------------------------------------------------


async def test_an_outage_moves_on_to_another_member_and_the_record_says_so() -> None:
    members = _members("a", "b", a=fails("unavailable"))
    model = BalanceModel("pool", members, strategy="round_robin")
    response = await model.complete(user("x"))
    assert response.model == "b"
    decision = response.decision
    assert decision is not None and decision.kind == "balance" and decision.chosen == "b"
    assert [c.node for c in decision.children] == ["a", "b"]
    assert decision.reason == "round_robin: a's turn; 1 member(s) failed before b answered"
    assert decision.details == {"strategy": "round_robin"}
    hand_over = trace(decision).fallbacks[0]  # the demo's report counts it as a hand-over
    assert (hand_over.label, hand_over.why) == ("pool: a → b", "scripted unavailable")


async def test_every_member_is_tried_once_then_the_first_error_is_reported() -> None:
    members = _members("a", "b", "c", a=fails("unavailable"), b=fails("timeout"), c=fails("server"))
    model = BalanceModel("pool", members, strategy="round_robin")
    with pytest.raises(UnavailableError) as caught:
        await model.complete(user("x"))
    assert [len(m.calls) for m in members] == [1, 1, 1]
    assert caught.value.path == ("pool", "a")
    decision = caught.value.decision
    assert decision is not None and decision.kind == "balance"
    assert decision.reason.startswith("round_robin: a's turn; 3 member(s) failed (a, b, c)")


async def test_a_bad_request_propagates_without_trying_another_member() -> None:
    members = _members("a", "b", a=fails("bad_request"))
    with pytest.raises(BadRequestError):
        await BalanceModel("pool", members, strategy="round_robin").complete(user("x"))
    assert members[1].calls == []


async def test_a_silent_member_leaves_time_for_another_within_the_deadline() -> None:
    silent = scripted("silent", default=Reply(text="too late", latency=30))
    quick = scripted("quick", default="in time")
    model = BalanceModel("pool", [silent, quick], strategy="round_robin")
    response = await model.complete(user("x").with_budget(0.4))
    assert response.text == "in time"
    decision = response.decision
    assert decision is not None
    assert decision.children[0].error is not None and "timeout" in decision.children[0].error


async def test_when_the_deadline_passes_no_further_member_is_tried() -> None:
    members = [scripted(n, default=Reply(text=n, latency=30)) for n in ("a", "b", "c")]
    model = BalanceModel("pool", members, strategy="round_robin", share=1.0)
    with pytest.raises(ModelTimeoutError):
        await model.complete(user("x").with_budget(0.2))
    assert [len(m.calls) for m in members] == [1, 0, 0]


# --- members left out ------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def _broken_circuit(clock: Clock) -> tuple[BreakerModel, ScriptedModel]:
    inner = scripted("a", fails("unavailable"), default="a is back")
    policy = BreakerPolicy(failure_rate=0.5, min_calls=1, window=30, open_for=15)
    breaker = CircuitBreaker("model:a", policy, MemoryStore(), clock=clock)
    guarded = BreakerModel(inner, [breaker])
    with pytest.raises(UnavailableError):
        await guarded.complete(user("x"))  # the one failure that opens it
    return guarded, inner


async def test_a_member_whose_circuit_is_open_is_skipped_without_calling_it() -> None:
    clock = Clock()
    guarded, inner = await _broken_circuit(clock)
    model = BalanceModel("pool", [guarded, scripted("b")], strategy="round_robin")
    responses = [await model.complete(user("x")) for _ in range(4)]
    assert {r.model for r in responses} == {"b"}
    assert len(inner.calls) == 1  # only the call that opened it
    decision = responses[0].decision
    assert decision is not None
    assert decision.details["skipped"] == {"a": "circuit model:a is open (next probe in 15.0s)"}
    assert [c.node for c in decision.children] == ["b"]


async def test_a_half_open_circuit_lets_the_balancer_send_its_probe() -> None:
    clock = Clock()
    guarded, _ = await _broken_circuit(clock)
    model = BalanceModel("pool", [guarded, scripted("b")], strategy="round_robin")
    clock.now += 16  # open_for passed: the next call is the probe
    response = await model.complete(user("x"))
    assert response.model == "a" and response.text == "a is back"


class CountingStore(MemoryStore):
    """Counts the reads of circuit states."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += key.endswith(":state")
        return await super().get(key)


async def test_circuits_are_not_read_from_the_store_on_every_request() -> None:
    store = CountingStore()
    policy = BreakerPolicy()
    members = [
        BreakerModel(scripted(n), [CircuitBreaker(f"model:{n}", policy, store)]) for n in "abc"
    ]
    model = BalanceModel("pool", members, strategy="round_robin")
    for _ in range(30):
        await model.complete(user("x"))
    # Each request's member reads its own circuit to be admitted (30); the balancer read each
    # member's once (3), not on every request (90 more).
    assert store.reads == 33


@pytest.mark.parametrize(
    ("retry_after", "rest"),
    [(30.0, r"(29\.\d|30\.0)"), (None, r"(4\.\d|5\.0)")],
    ids=["its-retry-after", "else-the-cooldown"],
)
async def test_a_429_rests_the_member(retry_after: float | None, rest: str) -> None:
    # Without Retry-After it used to only move on: the next request asked it again.
    limited = scripted("a", fails("rate_limited", retry_after=retry_after), default="a again")
    model = BalanceModel("pool", [limited, scripted("b")], strategy="round_robin")
    responses = [await model.complete(user("x")) for _ in range(4)]
    assert [r.model for r in responses] == ["b", "b", "b", "b"]
    assert len(limited.calls) == 1
    skipped = responses[1].decision.details["skipped"]  # type: ignore[union-attr]
    assert re.fullmatch(rf"cooling down for {rest}s after a 429", skipped["a"])


async def test_when_every_member_cools_down_the_caller_learns_when_to_come_back() -> None:
    members = [
        scripted("a", fails("rate_limited", retry_after=30)),
        scripted("b", fails("rate_limited", retry_after=10)),
    ]
    model = BalanceModel("pool", members, strategy="round_robin")
    with pytest.raises(RateLimitedError) as first:
        await model.complete(user("x"))
    assert first.value.code == "all_rate_limited"
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert caught.value.code == "all_cooling_down"
    assert caught.value.retry_after == pytest.approx(10, abs=0.5)
    assert "a: cooling down for" in caught.value.message
    assert [len(m.calls) for m in members] == [1, 1]
    assert caught.value.decision is not None and caught.value.decision.kind == "balance"


async def test_a_cooldown_of_0_only_moves_on_after_a_429_without_retry_after() -> None:
    limited = scripted("a", fails("rate_limited"), default="a again")
    members = [limited, scripted("b")]
    model = BalanceModel("pool", members, strategy="round_robin", cooldown=Cooldown(seconds=0))
    assert (await model.complete(user("x"))).model == "b"
    assert (await model.complete(user("x"))).model == "b"  # b's turn
    assert (await model.complete(user("x"))).model == "a"  # not cooled down


async def test_a_429_saying_retry_after_0_does_not_rest_the_member() -> None:
    # "Retry-After: 0" says come back now; it was read as no header and rested for 5 s.
    limited = scripted("a", fails("rate_limited", retry_after=0), default="a again")
    model = BalanceModel("pool", [limited, scripted("b")], strategy="round_robin")
    assert (await model.complete(user("x"))).model == "b"
    assert (await model.complete(user("x"))).model == "b"  # b's turn
    assert (await model.complete(user("x"))).model == "a"


async def test_a_lone_member_is_not_rested_without_a_retry_after() -> None:
    # Nothing else could take its requests: resting it would only refuse them.
    limited = scripted("a", fails("rate_limited"), default="a again")
    model = BalanceModel("pool", [limited])
    with pytest.raises(RateLimitedError):
        await model.complete(user("x"))
    assert (await model.complete(user("x"))).text == "a again"


async def test_failures_in_a_row_within_the_window_rest_the_member() -> None:
    flaky = scripted("a", *[fails("unavailable")] * 3, default="a again")
    cooldown = Cooldown(seconds=20, failures=3, within=60)
    model = BalanceModel("pool", [flaky, scripted("b")], strategy="round_robin", cooldown=cooldown)
    answered = [(await model.complete(user("x"))).model for _ in range(8)]
    # a fails on its turns (1st, 3rd, 5th request); after the third it rests.
    assert answered == ["b"] * 8
    assert len(flaky.calls) == 3
    skipped = (await model.complete(user("x"))).decision.details["skipped"]  # type: ignore[union-attr]
    assert re.fullmatch(r"cooling down for (19\.\d|20\.0)s after 3 failures in a row", skipped["a"])


async def test_a_success_or_a_stale_failure_breaks_the_run() -> None:
    clock = [100.0]
    flaky = scripted(
        "a", fails("unavailable"), "fine", fails("unavailable"), default=fails("unavailable")
    )
    model = BalanceModel(
        "pool",
        [flaky, scripted("b")],
        strategy="round_robin",
        cooldown=Cooldown(seconds=20, failures=2, within=60),
        clock=lambda: clock[0],
    )
    for _ in range(6):  # a on every other request: failed, fine (the run ends), failed
        await model.complete(user("x"))
    clock[0] += 61  # the next failure comes too late to make a run with the last
    for _ in range(2):
        await model.complete(user("x"))
    assert len(flaky.calls) == 4  # not rested
    for _ in range(2):  # its fifth call fails again, in time: two in a row
        await model.complete(user("x"))
    assert [(await model.complete(user("x"))).model for _ in range(4)] == ["b"] * 4
    assert len(flaky.calls) == 5


def _retrying(member: ScriptedModel, sleeps: Sleeps) -> RetryModel:
    """`member` inside a hosted model's retry layer (2 retries), sleeping on `sleeps`."""
    return RetryModel(member, RetryPolicy(attempts=2, jitter="none"), sleep=sleeps)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_429_moves_on_at_once_past_the_members_own_retries(streamed: bool) -> None:
    # The member's retry layer retried the 429 on the same deployment (backing off first)
    # before the balancer could move on to the free one, as LiteLLM's Router does not.
    limited = scripted("a", fails("rate_limited"), default="a again")
    sleeps = Sleeps()
    members = [_retrying(limited, sleeps), scripted("b")]
    model = BalanceModel("pool", members, strategy="round_robin")
    request = user("x")
    response = await (collect(model.stream(request)) if streamed else model.complete(request))
    assert response.model == "b"
    assert (len(limited.calls), sleeps.waits) == (1, [])
    assert response.decision is not None
    assert [(c.node, c.error is not None) for c in response.decision.children] == [
        ("a", True),
        ("b", False),
    ]


async def test_the_last_member_left_retries_its_429_as_usual() -> None:
    limited = scripted("a", fails("rate_limited"), default="a again")
    sleeps = Sleeps()
    members = [scripted("b", default=fails("unavailable")), _retrying(limited, sleeps)]
    model = BalanceModel("pool", members, strategy="round_robin")
    response = await model.complete(user("x"))
    assert (response.model, len(limited.calls), sleeps.waits) == ("a", 2, [0.5])
    assert not limited.calls[0].fails_over_on_429


# --- streams ---------------------------------------------------------------------------------


async def test_a_stream_fails_over_before_its_first_content() -> None:
    members = _members("a", "b", a=fails("unavailable"))
    model = BalanceModel("pool", members, strategy="round_robin")
    chunks = [chunk async for chunk in model.stream(user("x"))]
    assert "".join(c.text for c in chunks if c.response is None) == "from b"
    final = chunks[-1].response
    assert final is not None and final.decision is not None
    assert final.decision.kind == "balance" and final.decision.chosen == "b"
    assert [r.in_flight for r in model.balancer.records] == [0, 0]


async def test_a_stream_that_broke_after_content_is_not_spliced() -> None:
    broken = scripted("a", default=Reply(text="one two three", cut_after=2))
    model = BalanceModel("pool", [broken, scripted("b")], strategy="round_robin")
    with pytest.raises(StreamInterruptedError) as caught:
        await collect(model.stream(user("x")))
    assert caught.value.decision is not None and caught.value.decision.kind == "balance"


# --- the graph -------------------------------------------------------------------------------


def test_worst_case_cost_capabilities_describe_and_roles() -> None:
    a = scripted("a", context_window=8_000)
    b = scripted("b", context_window=16_000)
    model = BalanceModel("pool", [a, b], weights=[1, 3])
    request = user("hello there", max_tokens=10)
    assert cost_bound(model, request) == cost_bound(a, request) + cost_bound(b, request)
    assert model.info.capabilities.context_window == 8_000
    assert model.describe() == {"kind": "balance", "strategy": "weighted", "weights": "a 1, b 3"}
    assert [(e.child.name, e.role) for e in edges(model)] == [("a", "weight 1"), ("b", "weight 3")]
    assert "balance" in to_svg(layout(model))


# --- config ----------------------------------------------------------------------------------

MODELS = f"""
models:
  east: {{local: {{type: fake, default: "from east"}}, {PRICE}}}
  west: {{local: {{type: fake, default: "from west"}}, {PRICE}}}
  down: {{local: {{type: fake, default: {{error: unavailable}}}}, {PRICE}}}
  small: {{local: {{type: fake, default: {{text: "unsure", confidence: 0.1}}}}, {PRICE}}}
"""


async def test_a_system_of_type_balance(yard_of: Callable[[str], Yard]) -> None:
    text = MODELS + "systems:\n  pool: {type: balance, members: [down, east, west], seed: 1}\n"
    async with yard_of(text) as yard:
        answered = Counter([(await yard.complete("pool", "hi")).model for _ in range(60)])
    assert set(answered) == {"east", "west"} and min(answered.values()) > 15


async def test_a_balance_rests_members_as_its_cooldown_says(yard_of: Callable[[str], Yard]) -> None:
    node = (
        "{type: balance, members: [down, east], strategy: round_robin, "
        "cooldown: {seconds: 30, failures: 2, within: 10}}"
    )
    async with yard_of(MODELS + f"systems:\n  pool: {node}\n") as yard:
        for _ in range(4):  # down fails on the first and third: two in a row
            await yard.complete("pool", "hi")
        fifth = await yard.complete("pool", "hi")  # down's turn, resting
    pools = [d for d in fifth.decision.walk() if d.kind == "balance"]  # type: ignore[union-attr]
    skipped = pools[0].details["skipped"]
    assert re.fullmatch(
        r"cooling down for (29\.\d|30\.0)s after 2 failures in a row", skipped["down"]
    )


async def test_a_balance_in_a_cascade_stage_and_a_router_route(
    yard_of: Callable[[str], Yard],
) -> None:
    text = (
        MODELS
        + """
systems:
  front:
    type: router
    routes:
      pooled: {type: balance, name: pool, members: [down, east], strategy: round_robin}
      careful:
        type: cascade
        stages:
          - {model: small, threshold: 0.5, estimator: {type: confidence}}
          - model: {type: balance, name: big-pool, members: [west, east], strategy: round_robin}
    default: careful
    rules: [{route: pooled, keywords: [quick]}]
"""
    )
    async with yard_of(text) as yard:
        quick = await yard.complete("front", "quick one")
        careful = await yard.complete("front", "think hard")
    assert quick.text == "from east"
    assert careful.text == "from west"
    assert _kinds(quick.decision) == ["router", "balance", "model", "model"]
    assert "balance" in _kinds(careful.decision)
    pools = [d for d in careful.decision.walk() if d.kind == "balance"]  # type: ignore[union-attr]
    assert [(d.node, d.reason) for d in pools] == [("big-pool", "round_robin: west's turn")]


def _kinds(decision: Decision | None) -> list[str]:
    assert decision is not None
    return [d.kind for d in decision.walk()]


@pytest.mark.parametrize(
    ("node", "where", "message"),
    [
        (
            "{type: balance, members: []}",
            ("members",),
            "0 given; a balance needs at least one member",
        ),
        ("{type: balance, members: [east], strategy: random}", ("strategy",), "'round_robin'"),
        (
            "{type: balance, members: [east, west], weights: [1]}",
            (),
            "1 weights for 2 members; give one weight per member",
        ),
        (
            "{type: balance, members: [east, west], weights: [1, -2]}",
            ("weights", 1),
            "greater than or equal to 0",
        ),
        ("{type: balance, members: [east, west], weights: [0, 0]}", (), "every weight is 0"),
        (
            "{type: balance, members: [east, west], weights: [1, 2], strategy: least_busy}",
            (),
            "weights apply to strategy weighted",
        ),
        ("{type: balance, members: [east, west], explore: 0.2}", (), "explore applies"),
        (
            "{type: balance, members: [east, west], cooldown: {seconds: -1}}",
            ("cooldown", "seconds"),
            "greater than or equal to 0",
        ),
        (
            "{type: balance, members: [east, west], cooldown: {failures: 0}}",
            ("cooldown", "failures"),
            "greater than 0",
        ),
        (
            "{type: balance, members: [east, west], cooldown: {within: 30}}",
            ("cooldown",),
            "within applies to failures",
        ),
        ("{type: balance, members: [east, east]}", ("members", 1), "appears twice"),
        ("{type: balance, members: [east, nowhere]}", ("members", 1), "'nowhere'"),
    ],
)
def test_config_errors_say_what_is_wrong_and_where(
    config_error: Callable[[str], ConfigError], node: str, where: Loc, message: str
) -> None:
    error = config_error(MODELS + f"systems:\n  pool: {node}\n")
    assert message in error.message
    assert "systems.pool" + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in where
    ) in str(error)


async def test_the_gateways_own_rate_limit_rests_a_member_no_longer_than_it_says() -> None:
    # A member's client-side limit refusing (its concurrency slots busy, its queue full, a
    # request over its tpm) is not the provider's 429: it says when it has room (a busy
    # slot: none, as the next call to finish frees it), and the member was rested 5 s.
    limiter = Limiter("model:a", RateLimits(max_concurrency=1, when_limited="fail"), MemoryStore())
    a = scripted("a", default="a")
    model = BalanceModel(
        "pool", [RateLimitModel(a, [limiter]), scripted("b")], strategy="round_robin"
    )
    held = await limiter.acquire(user("x"), 0)  # a call of its own in flight elsewhere
    response = await model.complete(user("x"))
    assert response.model == "b"
    assert "client-side limit" in str(response.decision.children[0].error)  # type: ignore[union-attr]
    limiter.release(held)
    answered = [(await model.complete(user("x"))).model for _ in range(4)]
    assert answered.count("a") == 2
