"""Library embedding calls (`Yard.embed`) are charged to the budgets and recorded in the ledger,
and held to the config's default deadline, as a chat request is; the embedders inside a chat
request are not charged twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import modelyard
from modelyard.cost import reports
from modelyard.cost.budgets import BudgetGuard
from modelyard.cost.embedding import AccountedEmbedder
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.cost.ledger_postgres import PostgresLedgerFile
from modelyard.cost.prices import estimate_tokens
from modelyard.errors import BudgetExceededError, ConfigError, ModelTimeoutError, UnavailableError
from modelyard.streaming import collect
from modelyard.types import ChatResponse
from tests.fakes.openai_server import FakeOpenAI, tokens
from tests.fakes.server import Fault
from tests.state.conftest import POSTGRES_URL, fresh_tables

TEXTS = ["hello world", "a second text"]
TOKENS = sum(len(tokens(t)) for t in TEXTS)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key="sk-upstream-secret-0123456789")
    with fake.running():
        yield fake


CHEAP = """
models:
  cheap: {local: {type: fake, default: "an answer"}, price: {input: 1.0, output: 1.0}}
systems:
"""
"""A priced local model, and the heading of the systems that follow."""


def hosted(fake: FakeOpenAI, extra: str) -> str:
    """A config with `emb` at $1,000 per million input tokens on the fake upstream."""
    return f"""
providers:
  up: {{type: openai, base_url: "{fake.url}/v1", api_key: sk-upstream-secret-0123456789}}
embedders:
  emb: {{provider: up, id: text-embedding-3-small, price: {{input: 1000}}}}
  hash: {{local: {{type: hashing}}}}
{extra}"""


async def spend(path: Path) -> list[tuple[object, ...]]:
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query(
        "SELECT system, model, key_id, tags, cost, input_tokens, error FROM spend ORDER BY id"
    )
    await ledger.aclose()
    return rows


async def test_yard_embed_is_recorded_in_the_ledger_with_its_tokens_and_cost(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    path = write_config(hosted(upstream, ""))
    async with modelyard.load(path) as yard:
        paid = await yard.embed("emb", TEXTS, key_id="k1", tags=["team:a"])
        free = await yard.embed("hash", "hello")
    assert paid.cost == pytest.approx(TOKENS * 1000 / 1e6)
    assert await spend(path) == [
        ("emb", "emb", "k1", '["team:a"]', paid.cost, TOKENS, None),
        ("hash", "hash", None, "[]", 0.0, free.usage.input_tokens, None),
    ]


async def test_yard_embed_is_refused_by_a_model_budget_naming_the_embedder(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    # The worst case of TEXTS is $0.04 (its UTF-8 bytes and framing), each call costs $0.005.
    budget = "budgets:\n  - {name: emb-cap, scope: model, selector: emb, limit: 0.058}\n"
    path = write_config(hosted(upstream, budget))
    async with modelyard.load(path) as yard:
        answered = [await yard.embed("emb", TEXTS) for _ in range(4)]
        with pytest.raises(BudgetExceededError) as caught:
            await yard.embed("emb", TEXTS)
        await yard.embed("hash", TEXTS)  # another embedder: not this budget's
    assert caught.value.code == "emb-cap"
    assert sum(r.cost for r in answered) <= 0.058
    rows = await spend(path)
    assert [(r[1], r[6]) for r in rows[4:]] == [("(none)", "budget_exceeded"), ("hash", None)]


async def test_yard_embed_is_cut_at_the_default_deadline_and_costs_its_texts(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    # The provider would wait 5 s; the config's deadline cuts the call first.
    text = hosted(upstream, "default_deadline: 0.3\n").replace(
        "api_key: sk-upstream", "timeouts: {total: 5}, api_key: sk-upstream"
    )
    path = write_config(text)
    upstream.push(Fault(hang=True))
    async with modelyard.load(path) as yard:
        with pytest.raises(ModelTimeoutError) as caught:
            await yard.embed("emb", TEXTS)
    assert caught.value.code == "deadline"
    # The provider had the texts: their estimated tokens are billed, and charged as such.
    estimated = sum(estimate_tokens(t) for t in TEXTS) * 1000 / 1e6
    assert caught.value.cost == pytest.approx(estimated)
    assert [(r[1], r[4], r[6]) for r in await spend(path)] == [
        ("emb", pytest.approx(estimated), "timeout")
    ]


@pytest.mark.parametrize(
    ("budget", "chat_too"),
    [("scope: total", True), ("scope: model, selector: emb", False)],
    ids=["total", "model"],
)
async def test_a_downgrading_budget_refuses_an_embedding_call_and_says_so(
    write_config: Callable[[str], Path],
    upstream: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    budget: str,
    chat_too: bool,
) -> None:
    extra = f"""
models:
  cheap: {{local: {{type: fake, default: "an answer"}}, price: {{input: 1.0, output: 1.0}}}}
budgets:
  - {{name: cap, {budget}, limit: 0.05, action: downgrade, downgrade_to: cheap}}
"""
    async with modelyard.load(write_config(hosted(upstream, extra))) as yard:
        with pytest.raises(BudgetExceededError) as caught:
            await yard.embed("emb", "x" * 100_000)  # its worst case alone passes the limit
    assert "this embedding call may cost up to" in caught.value.message
    assert "send fewer or shorter texts per call, or raise the limit" in caught.value.message
    assert caught.value.retry_after is None and caught.value.never_fits
    assert "an embedding call is refused, not downgraded to cheap: there is no other embedder" in (
        caught.value.message
    )
    (alert,) = [r.getMessage() for r in caplog.records if "budget_reached" in r.getMessage()]
    assert "embedding calls that could pass it are now refused" in alert
    assert "no other embedder" in alert and "max_tokens" not in alert
    assert "send fewer or shorter texts per call" in alert
    assert ("chat requests are downgraded to cheap" in alert) == chat_too


async def test_a_cancelled_embedding_call_costs_its_texts_only_if_the_provider_had_them(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    # One connection: the first call takes it and hangs there, the second waits for it.
    budget = "budgets:\n  - {name: emb-cap, scope: model, selector: emb, limit: 10}\n"
    text = hosted(upstream, budget).replace(
        "api_key: sk-upstream", "max_connections: 1, api_key: sk-upstream"
    )
    upstream.always(Fault(hang=True))
    async with modelyard.load(write_config(text)) as yard:
        sent = asyncio.create_task(yard.embed("emb", TEXTS))
        for _ in range(200):  # until the only connection is taken
            if upstream.requests:
                break
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(yard.embed("emb", TEXTS))
        await asyncio.sleep(0.05)
        for task in (waiting, sent):  # the waiting one first, before the connection is free
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        accounted = yard.embedder("emb")
        assert isinstance(accounted, AccountedEmbedder) and accounted.book is not None
        status = await accounted.book.status(accounted.budgets[0], "emb")
    assert len(upstream.requests) == 1
    # The texts the provider received are billed; the call that never left costs nothing.
    estimated = sum(estimate_tokens(t) for t in TEXTS) * 1000 / 1e6
    assert status is not None and status.reserved == pytest.approx(0.0, abs=1e-12)
    assert status.spent == pytest.approx(estimated)


def test_a_budget_naming_an_unknown_model_or_embedder_is_refused(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    budget = "budgets:\n  - {name: x, scope: model, selector: nope, limit: 1}\n"
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        modelyard.load(write_config(hosted(upstream, budget)))


SEMANTIC = (
    CHEAP
    + """  support: {type: fallback, chain: [cheap]}
cache: {backend: memory, exact: false, semantic: {embedder: emb, systems: [support]}}
"""
)
"""A system answered from a semantic cache alone, which embeds every question on `emb`."""


@pytest.mark.parametrize("stream", [False, True])
async def test_an_embedder_a_semantic_cache_calls_is_charged_with_its_chat_request_only(
    stream: bool, write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    path = write_config(hosted(upstream, SEMANTIC))
    async with modelyard.load(path) as yard:

        async def ask() -> ChatResponse:
            if stream:
                return await collect(yard.stream("support", "hello there", temperature=0))
            return await yard.complete("support", "hello there", temperature=0)

        answer = await ask()
        again = await ask()  # a semantic hit
    assert [r.path for r in upstream.requests] == ["/v1/embeddings"] * 2  # the cache's lookups
    # One request each, the lookup's embedding on the embedder's row (not as a call by name,
    # not on the model's): the miss's model answered, the hit's model was never called.
    rows = await spend(path)
    cost = {(i // 2, str(r[1])): r[4] for i, r in enumerate(rows)}  # (request, model): USD
    assert [(r[0], r[1]) for r in rows[:2]] == [("support", "emb"), ("support", "cheap")]
    assert sorted(cost) == [(0, "cheap"), (0, "emb"), (1, "cheap"), (1, "emb")]
    embedding = cost[0, "emb"]
    assert embedding > 0 and cost[1, "emb"] == pytest.approx(embedding)
    assert cost[0, "cheap"] == pytest.approx(answer.cost - embedding) and cost[1, "cheap"] == 0
    assert again.cost == pytest.approx(embedding)
    # The records say so too: each shows the embedding and costs what the request did.
    for response, kind in ((answer, "cache_miss"), (again, "cache")):
        decision = response.decision
        assert decision is not None and decision.kind == kind
        assert decision.cost == pytest.approx(response.cost)
        assert (decision.children[0].node, decision.children[0].kind) == ("emb", "embedder")
        assert decision.children[0].cost == pytest.approx(embedding)
    assert answer.decision is not None and answer.decision.reason.startswith("semantic cache miss")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Ledger tables no other test run uses, dropped afterwards."""
    async for name in fresh_tables(PostgresLedgerFile):
        yield name


@pytest.mark.postgres
async def test_yard_embed_reaches_a_postgres_ledger_and_its_report_by_model(
    write_config: Callable[[str], Path], upstream: FakeOpenAI, prefix: str
) -> None:
    ledger = f"ledger: {{backend: postgres, url: '{POSTGRES_URL}', table_prefix: {prefix}}}\n"
    async with modelyard.load(write_config(hosted(upstream, ledger))) as yard:
        paid = await yard.embed("emb", TEXTS)
    file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
    try:
        (line,) = await reports.spend_by(file, "model", days=1)
        rows = await file.query("SELECT input_tokens FROM spend")
    finally:
        await file.aclose()
    assert (line.name, line.requests, line.cost) == ("emb", 1, pytest.approx(paid.cost))
    assert rows == [(TOKENS,)]


async def test_a_cancelled_call_is_in_the_ledger_at_what_its_budgets_were_settled_to(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    chat = "models:\n  mini: {provider: up, id: gpt-4o-mini-2024-07-18, price: {input: 1000}}\n"
    path = write_config(hosted(upstream, chat))
    upstream.push(Fault(hang=True), Fault(hang=True))
    async with modelyard.load(path) as yard:
        with pytest.raises(TimeoutError):  # the caller gives up; the provider had the request
            await asyncio.wait_for(yard.embed("emb", TEXTS), 0.3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(yard.complete("mini", "hello"), 0.3)
    rows = await spend(path)
    assert [(r[0], r[1], r[6]) for r in rows] == [
        ("emb", "emb", "client_closed"),
        ("mini", "mini", "client_closed"),
    ]
    assert all(isinstance(r[4], float) and r[4] > 0 for r in rows)  # the input, not nothing


async def test_a_request_failing_after_a_semantic_cache_miss_reports_the_lookups_cost(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    text = SEMANTIC.replace('default: "an answer"', "default: {error: unavailable}")
    path = write_config(hosted(upstream, text))
    async with modelyard.load(path) as yard:
        with pytest.raises(UnavailableError) as caught:
            await yard.complete("support", "hello there", temperature=0)
    error = caught.value
    decision = error.decision
    assert decision is not None and decision.kind == "cache_miss" and decision.error
    assert decision.children[0].node == "emb" and decision.children[0].cost > 0
    # Reported, not caught up at the top as spend no record shows.
    assert error.cost == pytest.approx(decision.children[0].cost)
    assert "abandoned_spend" not in decision.details
    rows = await spend(path)
    assert [(r[1], r[6]) for r in rows if r[4]] == [("emb", "unavailable")]


async def test_a_semantic_routers_examples_embedded_on_first_use_are_billed_to_that_request(
    write_config: Callable[[str], Path], upstream: FakeOpenAI
) -> None:
    # A hosted embedder cannot embed the examples when the config is built: the first request
    # does, and pays for it, as a classifier's first request pays for its examples.
    models = (
        CHEAP
        + """  front:
    type: router
    semantic: {embedder: emb, threshold: 0.5, examples: {chat: ["hello there", "hi friend"]}}
    routes: {chat: cheap}
    default: chat
budgets:
  - {name: all, scope: total, window: day, limit: 100}
"""
    )
    path = write_config(hosted(upstream, models))
    async with modelyard.load(path) as yard:
        first = await yard.complete("front", "hello there")
        second = await yard.complete("front", "hello there")
        guard = yard.built.systems["front"]
        assert isinstance(guard, BudgetGuard)
        status = await guard.book.status(guard.per_request[0], "all")
    sent = [r.json["input"] for r in upstream.requests if r.path == "/v1/embeddings"]
    billed = sum(len(tokens(t)) for texts in sent for t in texts) * 1000 / 1e6
    assert len(sent) == 3  # the examples once, then each question
    assert first.decision is not None and second.decision is not None
    leaves = [(d.node, d.reason) for d in first.decision.children]
    assert leaves[0] == ("emb", "embedded the routes' 2 examples (first use)")
    assert first.cost - second.cost == pytest.approx(4 * 1000 / 1e6)  # the examples' 4 tokens
    rows = await spend(path)
    assert sum(r[4] for r in rows if r[1] == "emb") == pytest.approx(billed)
    assert first.decision.cost == pytest.approx(first.cost)
    # The budget is charged what the ledger records: every embedding the provider billed.
    assert status is not None
    assert status.spent == pytest.approx(sum(r[4] for r in rows)) and status.spent > billed
