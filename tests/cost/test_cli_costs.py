"""`modelyard costs` and `modelyard cache stats|clear` on a config that has served requests."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import modelyard
from modelyard.cli import app
from modelyard.config.loader import load_config
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget
from modelyard.cost.budget_leases import LeaseKeeper
from modelyard.cost.prices import usd
from modelyard.state.factory import make_store
from modelyard.types import user

CONFIG = """
models:
  dear:
    local: {type: fake, default: "an answer"}
    price: {input: 10.0, output: 30.0}
systems:
  support: {type: fallback, chain: [dear]}
cache: {backend: sqlite}
budgets:
  - {name: daily, scope: total, limit: 1.0, alert_at: [0.00001]}
"""


def served(write_config: Callable[[str], Path]) -> Path:
    path = write_config(CONFIG)

    async def serve() -> None:
        async with modelyard.load(path) as yard:
            await yard.complete("support", "hello", key_id="team-a")
            await yard.complete("support", "hello", key_id="team-a")

    asyncio.run(serve())
    return path


def test_costs_shows_spend_budgets_alerts_and_cost_per_accuracy_point(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = served(write_config)
    results = tmp_path / "eval.json"
    results.write_text(json.dumps({"systems": {"support": {"accuracy": 0.8}}}))
    result = CliRunner().invoke(
        app, ["costs", str(path), "--eval", str(results)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "spend by system",
        "support",
        "team-a",
        "daily",
        "budget_threshold",
        "$ / accuracy pt",
    ):
        assert expected in result.output


def test_cache_stats_then_clear(write_config: Callable[[str], Path]) -> None:
    path = served(write_config)
    runner = CliRunner()
    stats = runner.invoke(app, ["cache", "stats", str(path)], env={"COLUMNS": "200"})
    assert "1 entries" in stats.output and "1 hits / 1 misses" in stats.output
    cleared = runner.invoke(app, ["cache", "clear", str(path)])
    assert "cleared 1 entries" in cleared.output
    after = runner.invoke(app, ["cache", "stats", str(path)], env={"COLUMNS": "200"})
    assert "0 entries" in after.output


@pytest.mark.parametrize("command", ["stats", "clear"])
def test_cache_commands_refuse_a_memory_cache_they_cannot_reach(
    write_config: Callable[[str], Path], command: str
) -> None:
    """A memory cache lives inside each serving process: a CLI that reported "0 entries" or
    "cleared 0 entries" of a fresh one of its own would leave a bad cached answer served."""
    path = write_config(CONFIG.replace("backend: sqlite", "backend: memory"))
    result = CliRunner().invoke(app, ["cache", command, str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "memory" in result.output and "entries" not in result.output


def test_costs_reads_what_eval_and_compare_write_and_refuses_anything_else(
    tmp_path: Path,
) -> None:
    from modelyard.cost.reports import load_accuracy
    from modelyard.errors import ConfigError

    evaluated = tmp_path / "eval.json"
    evaluated.write_text(
        json.dumps({"report": {"system": "support", "accuracy": 0.6}, "items": []})
    )
    compared = tmp_path / "compare.json"
    compared.write_text(
        json.dumps([{"name": "support", "accuracy": 0.7}, {"name": "dear", "accuracy": 0.5}])
    )
    assert load_accuracy(evaluated) == {"support": 0.6}
    assert load_accuracy(compared) == {"support": 0.7, "dear": 0.5}
    for junk in ('{"report": {"system": "x", "accuracy": [1]}}', "[1, 2]", '{"x": 7}', "not json"):
        bad = tmp_path / "bad.json"
        bad.write_text(junk)
        with pytest.raises(ConfigError, match=r"bad\.json"):
            load_accuracy(bad)


@pytest.mark.redis
def test_deployments_with_their_own_state_prefix_on_one_redis_keep_their_caches_apart(
    write_config: Callable[[str], Path],
) -> None:
    """prod.yaml and staging.yaml share a Redis, each under its own `state.prefix` (as the
    README says to): clearing staging's cache must not empty prod's."""
    from modelyard.state.redis import RedisStore
    from tests.state.conftest import REDIS_URL, unique_prefix

    prefixes = {name: unique_prefix() for name in ("prod", "staging")}
    paths = {
        name: write_config(
            CONFIG.replace(
                "cache: {backend: sqlite}", f"cache: {{backend: redis, url: '{REDIS_URL}'}}"
            )
            + f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n",
            name=f"{name}.yaml",
        )
        for name, prefix in prefixes.items()
    }

    async def serve(path: Path) -> None:
        async with modelyard.load(path) as yard:
            await yard.complete("support", "hello")

    try:
        for path in paths.values():
            asyncio.run(serve(path))
        runner = CliRunner()
        cleared = runner.invoke(app, ["cache", "clear", str(paths["staging"])])
        assert "cleared 1 entries" in cleared.output, cleared.output
        prod = runner.invoke(app, ["cache", "stats", str(paths["prod"])], env={"COLUMNS": "200"})
        assert "1 entries" in prod.output, prod.output
    finally:

        async def clean() -> None:
            for prefix in prefixes.values():
                store = RedisStore(REDIS_URL, prefix=prefix)
                await store.clear_prefix()
                await store.aclose()

        asyncio.run(clean())


def test_a_spend_below_a_millionth_of_a_dollar_does_not_read_as_zero(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        CONFIG.replace("{input: 10.0, output: 30.0}", "{input: 0.01, output: 0.02}")
    )

    async def serve() -> None:
        async with modelyard.load(path) as yard:
            await yard.complete("support", "hi")

    asyncio.run(serve())
    result = CliRunner().invoke(app, ["costs", str(path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "dear" in line)
    assert row.split("│")[4].strip() == "1.1e-07"  # its cost, not 0.000000


def test_usd_keeps_six_decimals_and_shows_what_they_would_hide() -> None:
    assert usd(0.0123456) == "0.012346" and usd(0) == "0.000000"
    assert usd(3.21e-8) == "3.21e-08" and usd(-3.21e-8) == "-3.21e-08"


def test_costs_gives_back_what_a_process_killed_outright_had_reserved(
    write_config: Callable[[str], Path],
) -> None:
    path = served(write_config)
    loaded = load_config(path)
    budget = Budget.from_spec(loaded.config.budgets[0])

    async def die_holding() -> None:
        store = make_store(loaded.config.state, loaded.base_dir)
        book = BudgetBook(store, leases=LeaseKeeper(store, seconds=0.01))
        assert await book.reserve(book.holds([budget], user("hi"), "support", 0.5)) is None
        await book.leases.aclose()  # killed: nothing renews it, nothing settles it
        await store.aclose()
        await asyncio.sleep(0.05)

    asyncio.run(die_holding())
    result = CliRunner().invoke(app, ["costs", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "gave back $0.500000 reserved by 1 request(s) never settled" in result.output
    row = next(line for line in result.output.splitlines() if "│ daily" in line)
    assert row.split("│")[5].strip() == "0.000000"  # reserved: nothing is left over


def test_costs_counts_each_request_made_without_a_gateway_once(
    write_config: Callable[[str], Path],
) -> None:
    """A library or CLI request has no gateway request id. The ledger had keyed it by its
    answer's id instead, which a cache hit repeats and a local model numbers from 0 again in
    each process: `modelyard costs` counted the demo's 120 tickets as 93 requests."""
    from modelyard.cost.ledger import SqliteLedgerFile
    from modelyard.cost.reports import spend_by

    path = served(write_config)  # two requests, the second answered from the cache

    async def once_more() -> None:  # a new yard, as a new process: its fake counts from 0
        async with modelyard.load(path) as yard:
            await yard.complete("support", "hello again", key_id="team-a")

    asyncio.run(once_more())

    async def requests() -> dict[str, int]:
        ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
        try:
            return {line.name: line.requests for line in await spend_by(ledger, "system", days=1)}
        finally:
            await ledger.aclose()

    assert asyncio.run(requests()) == {"support": 3}


def test_costs_shows_each_keys_own_budget_and_names_the_keys(
    write_config: Callable[[str], Path],
) -> None:
    # A key made with `keys create --budget` is capped by its own monthly budget: `costs` is
    # where an operator sees how much of it is used (keys list shows only the limit), and the
    # spend by key says whose each key is.
    from modelyard.gateway.keys import SqliteKeyStore

    path = write_config(CONFIG)
    loaded = load_config(path)

    async def serve() -> None:
        store = SqliteKeyStore(loaded.local_path(loaded.config.gateway.keys_db))
        _, key = await store.create("alice", budget=2.0)
        await store.aclose()
        async with modelyard.load(path) as yard:
            await yard.complete("support", "hello", key_id=key.id)
        state = make_store(loaded.config.state, loaded.base_dir)
        book = BudgetBook(state)
        own = Budget(name="virtual-key", scope="key", selector=key.id, window="month", limit=2)
        holds = book.holds([own], user("hi", key_id=key.id), "support", 0.5)
        assert await book.reserve(holds) is None
        await book.settle(holds, 0.3)
        await book.leases.aclose()
        await state.aclose()

    asyncio.run(serve())
    result = CliRunner().invoke(app, ["costs", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if "virtual-key" in line]
    assert "(alice)" in row and "0.300000" in row and "15%" in row
    assert any(
        "(alice)" in line and "│" in line for line in result.output.split("budgets")[0].splitlines()
    )


def test_costs_says_when_nothing_was_spent_in_the_days_asked(
    write_config: Callable[[str], Path],
) -> None:
    """A ledger whose rows are all older than --days had printed no spend table and no word
    about it; --days 0 printed none either, and is refused."""
    path = served(write_config)
    ledger = path.parent / ".modelyard" / path.name / "ledger.db"
    with sqlite3.connect(ledger) as conn:
        conn.execute("UPDATE spend SET day = '2000-01-01'")
    result = CliRunner().invoke(app, ["costs", str(path), "--days", "3"])
    assert result.exit_code == 0, result.output
    assert "no spend in the last 3 day(s)" in result.output
    assert "budgets (current window)" in result.output  # the rest of the report still follows
    refused = CliRunner().invoke(app, ["costs", str(path), "--days", "0"])
    assert refused.exit_code == 2 and "--days" in refused.output


def test_costs_closes_every_lease_keeper_it_makes(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A keeper listens for its store's recovery until closed: one left open outlives the
    # command's store (and a keeper holding settlements would drop them unsaid).
    made: list[LeaseKeeper] = []
    closed: list[LeaseKeeper] = []

    class Recorded(LeaseKeeper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        async def aclose(self) -> None:
            closed.append(self)
            await super().aclose()

    monkeypatch.setattr("modelyard.cli.costs.LeaseKeeper", Recorded)
    monkeypatch.setattr("modelyard.cost.budget_book.LeaseKeeper", Recorded)
    path = served(write_config)
    result = CliRunner().invoke(app, ["costs", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "budgets (current window)" in result.output
    assert made and closed == made


LIMITED = """
models:
  dear:
    local: {type: fake, default: "an answer"}
    price: {input: 10.0, output: 30.0}
    limits: {rpm: 1, when_limited: fail}
  cheap:
    local: {type: fake, default: "a cheap answer"}
    price: {input: 1.0, output: 3.0}
systems:
  support: {type: fallback, chain: [dear, cheap]}
  solo: {type: fallback, chain: [dear]}
budgets:
  - {name: tiny, scope: system, selector: solo, limit: 0.0000001}
"""


def _table(output: str, title: str) -> dict[str, list[str]]:
    """The rows of one table of `costs`' output, by name."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] and not line.startswith(("┏", "┃", "┡")):
            rows[cells[0]] = cells[1:]
    return rows


def test_calls_the_clients_own_rate_limit_refused_are_counted_as_refused_not_served(
    write_config: Callable[[str], Path],
) -> None:
    """The gateway's own rpm limit refused `dear` twice (the call never left, it cost
    nothing): `costs` counted those as requests `dear` served, with 0 errors. They are shown
    as refused, as a budget's refusal is (model `(none)`)."""
    path = write_config(LIMITED)

    async def serve() -> None:
        async with modelyard.load(path) as yard:
            await yard.complete("support", "hello")  # dear answers
            await yard.complete("support", "hello")  # dear refused, cheap answers
            with pytest.raises(modelyard.RateLimitedError):
                await yard.complete("dear", "hello")  # refused, nothing to fall back to
            with pytest.raises(modelyard.BudgetExceededError):
                await yard.complete("solo", "hello")  # the budget refuses: no model ran

    asyncio.run(serve())
    result = CliRunner().invoke(app, ["costs", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    by_model = _table(result.output, "spend by model")
    # requests, refused, cost, per item, saved, errors
    assert by_model["dear"][:2] == ["1", "2"], result.output
    assert by_model["dear"][-1] == "0", result.output
    assert by_model["cheap"][:2] == ["1", "0"], result.output
    assert by_model["(none)"][:2] == ["0", "1"], result.output
    by_system = _table(result.output, "spend by system")
    # every request a system was sent is one of its requests; those no call left for are
    # refused as well
    assert by_system["support"][:2] == ["2", "0"], result.output
    assert by_system["dear"][:2] == ["1", "1"], result.output
    assert by_system["solo"][:2] == ["1", "1"], result.output
