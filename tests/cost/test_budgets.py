"""Budgets: reserve the worst case, settle the real cost, never pass a cap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.alerts import Alert, AlertHub
from modelyard.cost.bounds import cost_bound, partial_cost
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget, period_of
from modelyard.cost.prices import Price, bound_input_tokens, estimate_input_tokens
from modelyard.errors import BudgetExceededError, ModelError, UnavailableError
from modelyard.model import Capabilities, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.fallback import FallbackModel
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from modelyard.types import ToolCall, Usage
from tests.cost.helpers import SpyBook, full_usage, guard, priced, question, worst


def total(limit: float, **fields: object) -> Budget:
    return Budget(name="total", scope="total", limit=limit, **fields)  # type: ignore[arg-type]


async def run_many(model, requests):  # type: ignore[no-untyped-def]
    return await asyncio.gather(*(model.complete(r) for r in requests), return_exceptions=True)


async def test_worst_case_is_reserved_and_released_after_the_call() -> None:
    store = MemoryStore()
    book = BudgetBook(store)
    model = guard(priced(latency=0.05), book, total(1.0))
    request = question()
    task = asyncio.create_task(model.complete(request))
    await asyncio.sleep(0.02)
    period = period_of("day", datetime.now(UTC))
    assert period is not None
    used_key = f"budget:total:all:{period.id}"
    assert await store.counter(used_key) == pytest.approx(worst(request))
    response = await task
    assert await store.counter(used_key) == pytest.approx(response.cost)
    assert response.cost < worst(request)


GEMINI_PRO = Price(input=1.25, output=10.0).with_tier(tokens=200_000, input=2.5, output=15.0)
"""Gemini 2.5 Pro: a prompt above 200k tokens is billed whole at $2.50 / $15."""


def long_context_model(used: Usage) -> ScriptedModel:
    return ScriptedModel(
        info=ModelInfo(
            name="m",
            kind="fake",
            price=GEMINI_PRO,
            capabilities=Capabilities(max_output_tokens=100),
        ),
        default=Reply(text="ok", latency=0.05, usage=used),
    )


async def test_a_long_request_reserves_and_settles_at_the_long_context_tier() -> None:
    store = MemoryStore()
    book = BudgetBook(store)
    used = Usage(input_tokens=250_000, output_tokens=100)
    model = guard(long_context_model(used), book, total(5.0))
    request = question("x" * 300_000, max_tokens=100)
    task = asyncio.create_task(model.complete(request))
    await asyncio.sleep(0.02)
    period = period_of("day", datetime.now(UTC))
    assert period is not None
    used_key = f"budget:total:all:{period.id}"
    tier_worst = (bound_input_tokens(request) * 2.5 + 100 * 15.0) / 1e6
    assert await store.counter(used_key) == pytest.approx(tier_worst)
    response = await task
    assert response.cost == pytest.approx((250_000 * 2.5 + 100 * 15.0) / 1e6)
    assert await store.counter(used_key) == pytest.approx(response.cost)


async def test_a_long_request_whose_tier_would_pass_the_budget_is_refused() -> None:
    # At the base rates its worst case (~$0.38) fits $0.50; at the tier's (~$0.75) it does not,
    # and a 250k-token prompt is billed ~$0.63: admitting it would overspend the budget.
    book = BudgetBook(MemoryStore())
    used = Usage(input_tokens=250_000, output_tokens=100)
    model = guard(long_context_model(used), book, total(0.5))
    with pytest.raises(BudgetExceededError):
        await model.complete(question("x" * 300_000, max_tokens=100))


async def test_200_concurrent_requests_admit_exactly_what_fits_when_cost_is_worst() -> None:
    request = question()
    cost = worst(request)
    inner = priced(latency=0.001)
    inner.default = Reply(text="ok", latency=0.002, usage=full_usage(request))
    book = SpyBook(MemoryStore())
    model = guard(inner, book, total(10.5 * cost))
    results = await run_many(model, [request] * 200)
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(answered) == 10 and len(refused) == 190
    assert sum(r.cost for r in answered) <= 10.5 * cost


async def test_200_concurrent_requests_never_pass_the_cap_and_refuse_only_when_needed() -> None:
    rng = random.Random(7)
    requests = [question(max_tokens=rng.randint(10, 100)) for _ in range(200)]
    inner = priced(text="a short answer", latency=0.003)
    book = SpyBook(MemoryStore())
    cap = 0.002
    model = guard(inner, book, total(cap))
    results = await run_many(model, requests)
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert sum(r.cost for r in answered) <= cap
    status = await book.status(total(cap), "all")
    assert status is not None and status.spent <= cap and status.reserved == pytest.approx(0)
    assert book.refusals, "the cap is small enough that some requests must be refused"
    for refusal in book.refusals:
        assert refusal.used + refusal.hold.amount > cap
    # Once everything has settled, a request is admitted exactly when its worst case fits.
    smallest = min(requests, key=worst)
    if worst(smallest) <= cap - status.spent:
        await model.complete(smallest)
    else:
        with pytest.raises(BudgetExceededError):
            await model.complete(smallest)


async def test_a_failed_call_settles_its_error_cost_and_releases_the_rest() -> None:
    store = MemoryStore()
    book = BudgetBook(store)
    model = guard(priced(error="unavailable"), book, total(1.0))
    with pytest.raises(UnavailableError):
        await model.complete(question())
    status = await book.status(total(1.0), "all")
    assert status is not None and status.spent == 0 and status.reserved == 0


async def test_a_cancelled_call_releases_its_reservation_down_to_the_input_estimate() -> None:
    book = BudgetBook(MemoryStore())
    model = guard(priced(latency=1.0), book, total(1.0))
    request = question()
    task = asyncio.create_task(model.complete(request))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = await book.status(total(1.0), "all")
    assert status is not None and status.reserved == 0
    assert 0 < status.spent < worst(request) / 10


async def test_an_abandoned_stream_settles_what_it_had_produced() -> None:
    book = BudgetBook(MemoryStore())
    model = guard(priced(text="one two three four five six"), book, total(1.0))
    request = question()
    stream = model.stream(request)
    assert (await anext(stream)).text
    await stream.aclose()  # type: ignore[attr-defined]
    status = await book.status(total(1.0), "all")
    assert status is not None and status.reserved == 0
    assert 0 < status.spent < worst(request)


async def test_an_abandoned_stream_of_tool_calls_settles_the_arguments_it_had_produced() -> None:
    # The estimate counted only text: a stream of tool-call arguments cut short cost its input.
    book = BudgetBook(MemoryStore())
    call = ToolCall(id="c1", name="lookup", arguments='{"order": "' + "x" * 4000 + '"}')
    inner = priced(text="", tool_calls=(call,))
    model = guard(inner, book, total(1.0))
    request = question()
    stream = model.stream(request)
    while not (await anext(stream)).tool_calls:  # the call's arguments, then the caller leaves
        pass
    await stream.aclose()  # type: ignore[attr-defined]
    status = await book.status(total(1.0), "all")
    assert status is not None
    assert status.spent >= partial_cost(inner, request, 4000) > partial_cost(inner, request)


async def test_a_finished_stream_settles_its_real_cost() -> None:
    book = BudgetBook(MemoryStore())
    model = guard(priced(text="streamed answer"), book, total(1.0))
    response = await collect(model.stream(question()))
    status = await book.status(total(1.0), "all")
    assert status is not None and status.spent == pytest.approx(response.cost)
    assert status.reserved == pytest.approx(0)


async def test_block_error_names_the_budget_and_the_amounts() -> None:
    book = BudgetBook(MemoryStore())
    model = guard(priced(), book, total(1e-9))
    with pytest.raises(BudgetExceededError) as caught:
        await model.complete(question())
    assert caught.value.code == "total" and "budget total (total, day" in str(caught.value)
    assert "may cost up to $" in str(caught.value)


async def test_a_refusal_by_settled_spend_says_it_lasts_until_the_window_ends() -> None:
    book = BudgetBook(MemoryStore())
    request = question()
    model = guard(priced(), book, total(3 * worst(request)))
    with pytest.raises(BudgetExceededError) as caught:
        for _ in range(100):  # one at a time: nothing is in flight when it refuses
            await model.complete(request)
    period = period_of("day", datetime.now(UTC))
    assert period is not None and caught.value.retry_after is not None
    assert caught.value.retry_after == pytest.approx(period.ends_in, abs=5)
    assert "what is spent leaves no room for it until the window ends in" in str(caught.value)


async def test_a_request_whose_worst_case_alone_passes_the_limit_is_told_no_wait_helps() -> None:
    # It was told to wait until the window ends (retry_after), where it can never pass.
    book = BudgetBook(MemoryStore())
    request = question()
    model = guard(priced(), book, total(0.5 * worst(request)))
    with pytest.raises(BudgetExceededError) as caught:
        await model.complete(request)
    assert caught.value.retry_after is None
    message = str(caught.value)
    assert "budget total (total, day" in message
    assert "this request alone may cost more than the budget's limit: no retry can fit" in message
    assert "lower max_tokens, or raise the limit" in message
    assert "until the window ends" not in message


async def test_a_refusal_by_requests_in_flight_says_a_retry_may_fit() -> None:
    book = BudgetBook(MemoryStore())
    request = question()
    model = guard(priced(latency=0.2), book, total(1.5 * worst(request)))
    first = asyncio.create_task(model.complete(request))
    await asyncio.sleep(0.05)  # its worst case is reserved
    with pytest.raises(BudgetExceededError) as caught:
        await model.complete(request)
    assert caught.value.retry_after is None  # no wait to name: it is given back as it ends
    assert "reserved by requests in flight, given back as they end" in str(caught.value)
    await first
    assert (await model.complete(request)).cost > 0  # and then it fits


async def test_a_model_over_its_budget_is_skipped_by_a_fallback() -> None:
    book = BudgetBook(MemoryStore())
    dear = guard(
        priced("dear"), book, Budget(name="dear-cap", scope="model", selector="dear", limit=1e-9)
    )
    cheap = priced("cheap", text="cheap answer")
    response = await FallbackModel("chain", [dear, cheap]).complete(question())
    assert response.text == "cheap answer"


@pytest.mark.parametrize("stream", [False, True])
async def test_downgrade_sends_the_request_to_the_named_cheaper_system(stream: bool) -> None:
    book = BudgetBook(MemoryStore())
    cheap = priced("cheap", text="cheap answer")
    premium_budget = Budget(
        name="premium-cap",
        scope="system",
        selector="premium",
        limit=1e-9,
        action="downgrade",
        downgrade_to="cheap",
    )
    premium = guard(priced("premium"), book, premium_budget, targets={"cheap": cheap})
    if stream:
        response = await collect(premium.stream(question()))
    else:
        response = await premium.complete(question())
    assert response.text == "cheap answer"
    decision = response.decision
    assert decision is not None and decision.kind == "budget" and decision.chosen == "cheap"
    # The record names the budget that sent it there, and why: what an auditor asks.
    assert decision.reason.startswith("budget premium-cap (system premium, day ")
    assert "reached" in decision.reason and decision.reason.endswith("downgraded to cheap")
    assert decision.details["budget"] == "premium-cap" and decision.threshold == 1e-9
    assert decision.details["worst_case"] > 1e-9


async def test_downgrade_loop_is_refused_not_followed_forever() -> None:
    book = BudgetBook(MemoryStore())
    targets: dict[str, object] = {}
    cap = Budget(name="all", scope="total", limit=1e-9, action="downgrade", downgrade_to="b")
    a = guard(priced("a"), book, cap, targets=targets)  # type: ignore[arg-type]
    b = guard(priced("b"), book, replace(cap, downgrade_to="a"), targets=targets)  # type: ignore[arg-type]
    targets.update(a=a, b=b)
    with pytest.raises(BudgetExceededError):
        await a.complete(question())


async def test_alert_only_lets_requests_through_and_alerts_once_at_the_limit() -> None:
    alerts: list[Alert] = []
    hub = AlertHub(log_alerts=False, recorder=alerts.append)
    book = BudgetBook(MemoryStore(), alerts=hub)
    model = guard(priced(), book, total(1e-6, action="alert_only", alert_at=(1.0,)))
    for _ in range(3):
        await model.complete(question())
    assert [a.kind for a in alerts] == ["budget_threshold"]
    assert "alert only" in alerts[0].message and "budget total" in alerts[0].where


async def test_threshold_alerts_fire_once_each_per_window() -> None:
    alerts: list[Alert] = []
    book = BudgetBook(MemoryStore(), alerts=AlertHub(log_alerts=False, recorder=alerts.append))
    request = question()
    inner = priced()
    inner.default = Reply(text="ok", usage=full_usage(request))
    model = guard(inner, book, total(4 * worst(request), alert_at=(0.5, 0.8, 1.0)))
    for _ in range(6):
        with contextlib.suppress(BudgetExceededError):
            await model.complete(request)
    kinds = [(a.kind, a.threshold) for a in alerts]
    assert [k for k, _ in kinds].count("budget_threshold") == 3
    assert [k for k, _ in kinds].count("budget_reached") == 1
    # A webhook routes alerts by budget without parsing their text: each one names it.
    assert all(a.details["budget"] == "total" and a.details["subject"] == "all" for a in alerts)


async def test_nothing_in_flight_reports_exactly_nothing_reserved() -> None:
    # Reserving and settling in floating point leaves residues (3.76e-19) that `costs` would
    # print as a reservation.
    book = BudgetBook(MemoryStore())
    cap = total(1.0)
    model = guard(priced(), book, cap)
    for n in range(1, 40):
        await model.complete(question("word " * n, max_tokens=n))
    status = await book.status(cap, "all")
    assert status is not None and status.spent > 0
    assert status.reserved == 0.0


async def test_a_limit_raised_mid_window_alerts_again_when_the_new_limit_is_reached() -> None:
    # An operator raises a budget (a hot reload) after its alert: the new limit's own alerts
    # must still come, not be taken for the old limit's, already sent this window.
    alerts: list[Alert] = []
    book = BudgetBook(MemoryStore(), alerts=AlertHub(log_alerts=False, recorder=alerts.append))
    request = question()
    inner = priced()
    inner.default = Reply(text="ok", usage=full_usage(request))
    for limit in (2.5 * worst(request), 5.5 * worst(request)):
        model = guard(inner, book, total(limit, alert_at=(0.5, 1.0)))
        for _ in range(6):
            with contextlib.suppress(BudgetExceededError):
                await model.complete(request)
    reached = [a.threshold for a in alerts if a.kind == "budget_reached"]
    assert reached == [pytest.approx(2.5 * worst(request)), pytest.approx(5.5 * worst(request))]
    halves = [a.threshold for a in alerts if a.kind == "budget_threshold" and a.threshold]
    assert pytest.approx(0.5 * 5.5 * worst(request)) in halves


async def test_a_limit_lowered_below_the_spend_alerts_its_thresholds_on_the_next_spend() -> None:
    # An operator lowers a budget mid-window (a hot reload: a new book on the same store) to
    # below what is spent: its 50 and 80 % were never crossed, the spend is past them already.
    # They alert on the next spend, once each, also after a further reload.
    alerts: list[Alert] = []
    hub = AlertHub(log_alerts=False, recorder=alerts.append)
    store = MemoryStore()
    request = question()
    inner = priced()
    inner.default = Reply(text="ok", usage=full_usage(request))
    cost = worst(request)
    before = guard(inner, BudgetBook(store, alerts=hub), total(100 * cost, alert_at=(0.5, 0.8)))
    for _ in range(5):
        await before.complete(request)
    assert alerts == []
    lowered = total(6 * cost, alert_at=(0.5, 0.8), action="alert_only")
    for _ in range(2):  # two reloads to the same lowered limit
        model = guard(inner, BudgetBook(store, alerts=hub), lowered)
        for _ in range(3):
            await model.complete(request)
    marks = [a.threshold for a in alerts if a.kind == "budget_threshold"]
    assert marks == [pytest.approx(3 * cost), pytest.approx(4.8 * cost)]


async def test_a_spend_past_its_thresholds_asks_the_store_about_each_alert_once() -> None:
    # Checking every threshold already passed must not cost a store call per settlement.
    flags: list[str] = []

    class Counting(MemoryStore):
        async def reserve(self, claims):  # type: ignore[no-untyped-def]
            flags.extend(c.key for c in claims if c.key.startswith("alert:"))
            return await super().reserve(claims)

    book = BudgetBook(Counting(), alerts=AlertHub(log_alerts=False))
    model = guard(priced(), book, total(1e-6, action="alert_only", alert_at=(0.5, 0.8)))
    for _ in range(5):
        await model.complete(question())
    assert len(flags) == 2


async def test_each_key_gets_its_own_cap_with_a_star_selector() -> None:
    book = BudgetBook(MemoryStore())
    request = question()
    inner = priced()
    inner.default = Reply(text="ok", usage=full_usage(request))
    per_key = Budget(name="per-key", scope="key", selector="*", limit=1.5 * worst(request))
    model = guard(inner, book, per_key)
    await model.complete(replace(request, key_id="a"))
    await model.complete(replace(request, key_id="b"))
    with pytest.raises(BudgetExceededError):
        await model.complete(replace(request, key_id="a"))
    await model.complete(replace(request, key_id=None))


async def test_tag_budget_charges_only_tagged_requests() -> None:
    book = BudgetBook(MemoryStore())
    model = guard(
        priced(), book, Budget(name="acme", scope="tag", selector="customer:acme", limit=1e-9)
    )
    await model.complete(question(tags=("customer:other",)))
    with pytest.raises(BudgetExceededError):
        await model.complete(question(tags=("customer:acme",)))


async def test_fixed_window_applies_only_between_start_and_end() -> None:
    window = {
        "window": "fixed",
        "start": datetime(2020, 1, 1, tzinfo=UTC),
        "end": datetime(2020, 2, 1, tzinfo=UTC),
    }
    book = BudgetBook(MemoryStore())
    model = guard(priced(), book, total(1e-9, **window))
    await model.complete(question())
    book.clock = lambda: datetime(2020, 1, 15, tzinfo=UTC)
    with pytest.raises(BudgetExceededError):
        await model.complete(question())


def test_calendar_windows_are_utc_and_end_at_the_next_boundary() -> None:
    now = datetime(2024, 2, 29, 23, 59, 30, tzinfo=UTC)
    month = period_of("month", now)
    day = period_of("day", now)
    minute = period_of("minute", now)
    assert month is not None and month.id == "2024-02" and month.ends_in == 30
    assert day is not None and day.id == "2024-02-29" and day.ends_in == 30
    assert minute is not None and minute.id == "2024-02-29T23:59" and minute.ends_in == 30


def test_system_bound_sums_every_model_a_fallback_may_call() -> None:
    a, b = priced("a"), priced("b")
    request = question()
    assert cost_bound(FallbackModel("chain", [a, b]), request) == pytest.approx(2 * worst(request))


def test_worst_case_bounds_input_by_bytes_not_the_chars_over_four_estimate() -> None:
    request = question("日本語の質問です" * 10, max_tokens=1)
    input_only = Price(input=1.0, output=0.0)
    assert input_only.worst_case(request, 100) * 1e6 >= len(request.prompt_text.encode("utf-8"))


def test_worst_case_bounds_a_prompt_written_whole_to_the_prompt_cache() -> None:
    # Anthropic bills cache writes above the input price: a prompt written whole to the cache
    # costs more than its input at the plain rate, and the bound must cover it.
    request = question("a long shared prefix " * 50, max_tokens=1)
    price = Price(input=3.0, output=0.0, cache_write=3.75)
    tokens = bound_input_tokens(request)
    written = Usage(input_tokens=tokens, cache_write_tokens=tokens)
    assert price.worst_case(request, 100) >= price.cost(written) > tokens * 3.0 / 1e6
    model = ScriptedModel(info=ModelInfo(name="m", kind="fake", price=price), default=Reply())
    assert partial_cost(model, request) == pytest.approx(
        estimate_input_tokens(request) * 3.75 / 1e6
    )


async def test_an_answer_is_returned_even_if_settling_fails_and_the_worst_case_stays_held() -> None:
    class SettleFails(MemoryStore):
        failing = True

        async def release(self, lease, changes):  # type: ignore[no-untyped-def]
            if self.failing:
                raise UnavailableError("store gone", code="state_unavailable")
            return await super().release(lease, changes)

    store = SettleFails()
    book = BudgetBook(store)
    request = question()
    response = await guard(priced(), book, total(1.0)).complete(request)
    assert response.text == "ok"
    status = await book.status(total(1.0), "all")
    assert status is not None and status.reserved == pytest.approx(worst(request))
    await book.leases.renew()  # the store is still gone: the settlement waits
    store.failing = False
    await book.leases.renew()
    status = await book.status(total(1.0), "all")
    assert status is not None and status.reserved == 0
    assert status.spent == pytest.approx(response.cost)


BOUNDED = """
models:
  writer:  # every sample differs, so the samples never agree and the cascade goes on
    local: {type: fake, script: %s, default: "%s"}
    price: {input: 0.0, output: 30.0}  # no slack from loosely bounded input to hide behind
    max_output_tokens: 60
  strong:
    local: {type: fake, default: "%s"}
    price: {input: 0.0, output: 60.0}
    max_output_tokens: 60
  checker:  # a helper writes up to its own maximum: the caller's max_tokens is not passed on
    local: {type: fake, default: "%s"}
    price: {input: 0.0, output: 5.0}
    max_output_tokens: 80
systems:
  pipe:
    type: pipeline
    stages:
      - name: draft
        model: writer
        gates: [{type: checker, model: checker}]
        retries: 2
        escalate: strong
      - name: polish
        model: writer
        input: "Polish this: {previous} (asked: {input})"
  sampled:
    type: cascade
    stages:
      - {model: writer, threshold: 0.99, estimator: {type: samples, k: 5}}
      - {model: strong, estimator: {type: verifier, model: checker}, threshold: 0.5}
      - {model: strong}
  judged:
    type: ensemble
    members: [writer, strong]
    combine: judge
    judge: checker
"""


@pytest.mark.parametrize("max_tokens", [50, 5])
@pytest.mark.parametrize("system", ["pipe", "sampled", "judged"])
async def test_a_system_that_calls_models_many_times_never_spends_past_its_bound(
    write_config: Callable[[str], Path], system: str, max_tokens: int
) -> None:
    """Every retry, escalation, checker call, sample and verifier read of an answer is in the
    worst case budgets reserve: the gate here always fails and answers are as long as allowed."""
    long = " ".join(["word"] * 400)
    samples = [f"{i} {long}" for i in range(12)]
    text = BOUNDED % (json.dumps(samples), long, long, "no " + long)
    async with modelyard.load(write_config(text)) as yard:
        model = yard.get(system)
        request = question(max_tokens=max_tokens)
        try:
            spent = (await model.complete(request)).cost
        except ModelError as exc:  # the pipeline stops when even the escalation fails its gate
            spent = exc.cost
        assert 0 < spent <= cost_bound(model, request)


async def test_a_model_reached_as_another_models_fallback_still_meets_its_own_budget(
    write_config: Callable[[str], Path],
) -> None:
    # Asked directly, `pricey` is refused by its cap; reached through `broken`'s model-level
    # fallback it must be refused too, not answer past the cap.
    config = """
models:
  broken:
    local: {type: fake, default: {error: unavailable}}
    fallbacks: [pricey]
  pricey:
    local: {type: fake, default: "expensive answer"}
    price: {input: 1000, output: 1000}
budgets:
  - {name: pricey-cap, scope: model, selector: pricey, window: day, limit: 0.0001}
state: {backend: memory}
"""
    async with modelyard.load(write_config(config)) as yard:
        with pytest.raises(BudgetExceededError):
            await yard.complete("pricey", "hi")
        with pytest.raises(ModelError) as caught:
            await yard.complete("broken", "hi")
    decision = caught.value.decision
    assert decision is not None
    assert [d.error.split(":")[0] for d in decision.children if d.error] == [
        "unavailable",
        "budget_exceeded",
    ]
