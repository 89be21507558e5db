"""Budgets, caches and the ledger as a config builds them: through `modelyard.load`."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.cache import ResponseCache
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.errors import BudgetExceededError, ConfigError, UnavailableError
from modelyard.types import user
from tests.cost.helpers import TIERS


def config(extra: str) -> str:
    return TIERS + extra


async def test_a_system_budget_blocks_once_its_cap_would_be_passed(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        config("budgets:\n  - {name: p, scope: system, selector: premium, limit: 0.05}\n")
    )
    async with modelyard.load(path) as yard:
        await yard.complete("premium", "hi", max_tokens=1000)
        with pytest.raises(BudgetExceededError) as caught:
            await yard.complete("premium", "hi", max_tokens=1000)
        await yard.complete("budget", "hi", max_tokens=1000)
    assert caught.value.code == "p"


async def test_a_model_answered_by_its_fallback_charges_the_total_budget_what_it_spent(
    write_config: Callable[[str], Path],
) -> None:
    # `broken` fails and its model-level fallback `dear` answers: the total budget must count
    # dear's spend, so the second such request no longer fits.
    broken = "  broken:\n    local: {type: fake, default: {error: unavailable}}\n"
    broken += "    fallbacks: [dear]\nembedders:"
    text = TIERS.replace("embedders:", broken, 1)
    path = write_config(text + "budgets:\n  - {name: all, scope: total, limit: 0.05}\n")
    async with modelyard.load(path) as yard:
        first = await yard.complete("broken", "hi", max_tokens=1000)
        with pytest.raises(BudgetExceededError):
            await yard.complete("broken", "hi", max_tokens=1000)
    assert first.model == "dear" and first.cost > 0.025


async def test_a_cached_model_with_fallbacks_caches_its_fallbacks_answer(
    write_config: Callable[[str], Path],
) -> None:
    # `broken` is down and `dear` answers for it: asked again, `broken` (a cache target) is
    # served from the cache, not paid for again.
    broken = "  broken:\n    local: {type: fake, default: {error: unavailable}}\n"
    broken += "    fallbacks: [dear]\nembedders:"
    text = TIERS.replace("embedders:", broken, 1)
    path = write_config(text + "cache: {targets: [broken]}\n")
    async with modelyard.load(path) as yard:
        first = await yard.complete("broken", "hi", max_tokens=1000)
        again = await yard.complete("broken", "hi", max_tokens=1000)
    assert first.model == "dear" and first.cost > 0
    assert again.cost == 0 and again.decision is not None and again.decision.kind == "cache"


def response_cache(yard: modelyard.Yard) -> ResponseCache:
    (cache,) = [s for s in yard.resources.services.values() if isinstance(s, ResponseCache)]
    return cache


async def test_a_primary_with_fallbacks_that_answers_is_cached_once(
    write_config: Callable[[str], Path],
) -> None:
    steady = "  steady:\n    local: {type: fake, default: steady answer}\n"
    steady += "    fallbacks: [dear]\nembedders:"
    text = TIERS.replace("embedders:", steady, 1)
    path = write_config(text + "cache: {targets: [steady, dear]}\n")
    async with modelyard.load(path) as yard:
        first = await yard.complete("steady", "hi")
        again = await yard.complete("steady", "hi")
        stats = await response_cache(yard).backend.stats()
    assert first.text == again.text == "steady answer"
    assert again.cost == 0 and again.decision is not None and again.decision.kind == "cache"
    assert stats.entries == 1


async def test_a_model_reached_as_another_models_fallback_brings_its_chains_cache(
    write_config: Callable[[str], Path],
) -> None:
    # first -> second -> dear: first and second are down, dear answers. Asked next by name,
    # second (a cache target) is served what its chain answered when first fell back to it.
    chain = "  first:\n    local: {type: fake, default: {error: unavailable}}\n"
    chain += "    fallbacks: [second]\n"
    chain += "  second:\n    local: {type: fake, default: {error: unavailable}}\n"
    chain += "    fallbacks: [dear]\nembedders:"
    text = TIERS.replace("embedders:", chain, 1)
    path = write_config(text + "cache: {targets: [second]}\n")
    async with modelyard.load(path) as yard:
        first = await yard.complete("first", "hi", max_tokens=1000)
        second = await yard.complete("second", "hi", max_tokens=1000)
    assert first.model == "dear" and first.cost > 0
    assert second.cost == 0 and second.decision is not None and second.decision.kind == "cache"


async def test_a_downgrade_to_a_dearer_model_is_reserved_by_the_system_around_it(
    write_config: Callable[[str], Path],
) -> None:
    # cheap's own budget sends it to dear. The system around cheap reserved the total budget
    # for cheap's worst case only, so dear's answer passed the cap; it is refused up front now.
    text = config(
        "  around: {type: fallback, chain: [cheap]}\n"
        "budgets:\n"
        "  - {name: cheap-cap, scope: model, selector: cheap, limit: 0.0000001,"
        " action: downgrade, downgrade_to: dear}\n"
        "  - {name: all, scope: total, limit: 0.02}\n"
    )
    async with modelyard.load(write_config(text)) as yard:
        with pytest.raises(BudgetExceededError) as caught:
            await yard.complete("around", "hi", max_tokens=1000)
    assert caught.value.code == "all"


async def test_downgrades_that_go_round_in_a_circle_are_bounded_and_refused(
    write_config: Callable[[str], Path],
) -> None:
    text = config(
        "  around: {type: fallback, chain: [cheap]}\n"
        "budgets:\n"
        "  - {name: c, scope: model, selector: cheap, limit: 0.0000001,"
        " action: downgrade, downgrade_to: dear}\n"
        "  - {name: d, scope: model, selector: dear, limit: 0.0000001,"
        " action: downgrade, downgrade_to: cheap}\n"
        "  - {name: all, scope: total, limit: 100}\n"
    )
    async with modelyard.load(write_config(text)) as yard:
        with pytest.raises(BudgetExceededError):
            await yard.complete("around", "hi", max_tokens=10)


async def test_downgrade_routes_to_the_cheaper_system_through_the_config(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        config(
            "budgets:\n  - {name: p, scope: system, selector: premium, limit: 0.00001,"
            " action: downgrade, downgrade_to: budget}\n"
        )
    )
    async with modelyard.load(path) as yard:
        response = await yard.complete("premium", "hi", max_tokens=100)
    assert response.text == "cheap answer"
    assert response.decision is not None and response.decision.chosen == "budget"


async def test_spend_survives_a_restart_with_the_sqlite_default(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(config("budgets:\n  - {name: all, scope: total, limit: 0.05}\n"))
    async with modelyard.load(path) as yard:
        await yard.complete("premium", "hi", max_tokens=1000)
    async with modelyard.load(path) as yard:
        with pytest.raises(BudgetExceededError):
            await yard.complete("premium", "hi", max_tokens=1000)
    assert (path.parent / ".modelyard" / path.name / "state.db").exists()


async def test_configs_sharing_a_folder_keep_their_own_spend(tmp_path: Path) -> None:
    """prod.yaml beside staging.yaml: staging's traffic must not spend prod's budget."""
    text = config("budgets:\n  - {name: all, scope: total, limit: 0.05}\n")
    prod, staging = tmp_path / "prod.yaml", tmp_path / "staging.yaml"
    prod.write_text(text)
    staging.write_text(text)
    async with modelyard.load(staging) as yard:
        await yard.complete("premium", "hi", max_tokens=1000)
        with pytest.raises(BudgetExceededError):
            await yard.complete("premium", "hi", max_tokens=1000)
    async with modelyard.load(prod) as yard:
        await yard.complete("premium", "hi", max_tokens=1000)
    assert {p.parent.name for p in (tmp_path / ".modelyard").glob("*/state.db")} == {
        "prod.yaml",
        "staging.yaml",
    }


async def test_the_ledger_records_every_request_by_system_model_and_key(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(config("cache: {}\n"))
    async with modelyard.load(path) as yard:
        first = await yard.complete("premium", "hi", key_id="k1")
        await yard.complete("premium", "hi", key_id="k1")
        await yard.complete("dear", "direct")
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query(
        "SELECT system, model, key_id, cost, saved, cached FROM spend ORDER BY id"
    )
    await ledger.aclose()
    assert rows[0] == ("premium", "dear", "k1", first.cost, 0.0, 0)
    assert rows[1] == ("premium", "dear", "k1", 0.0, first.cost, 1)
    assert rows[2][:3] == ("dear", "dear", None)


async def test_the_cache_serves_a_repeat_and_a_semantic_near_duplicate(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        config("cache:\n  semantic: {embedder: hash, systems: [premium], threshold: 0.8}\n")
    )
    async with modelyard.load(path) as yard:
        await yard.complete("premium", "What is the capital of France?", temperature=0)
        again = await yard.complete("premium", "what is the capital of France", temperature=0)
        other = await yard.complete("premium", "How do I bake bread?", temperature=0)
    assert again.cost == 0 and again.decision is not None and again.decision.kind == "cache"
    assert other.cost > 0


async def test_redis_unreachable_with_fail_closed_refuses_requests_clearly(
    write_config: Callable[[str], Path],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write_config(
        config(
            f'state: {{backend: redis, url: "redis://127.0.0.1:{port}/0", timeout: 0.3}}\n'
            "budgets:\n  - {name: all, scope: total, limit: 1}\n"
        )
    )
    async with modelyard.load(path) as yard:
        with pytest.raises(UnavailableError) as caught:
            await yard.complete("premium", "hi")
        assert yard.resources.state is not None
        assert yard.resources.state.health().mode == "refusing"
    assert "unreachable" in str(caught.value) and "fail_closed" in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "where", "what"),
    [
        (
            "budgets:\n  - {name: a, scope: total, limit: 1, alert_at: [0.5, 1.5]}\n",
            "budgets[0].alert_at",
            "(0, 1]",
        ),
        (
            "budgets:\n  - {name: a, scope: total, limit: 1, window: fixed, start: 2026-01-01}\n",
            "budgets[0]",
            "'start' and 'end'",
        ),
        (
            "budgets:\n  - {name: a, scope: total, limit: 1, action: downgrade,"
            " downgrade_to: nowhere}\n",
            "budgets[0].downgrade_to",
            "unknown system or model 'nowhere'",
        ),
        (
            "budgets:\n  - {name: a, scope: model, selector: gpt-9, limit: 1}\n",
            "budgets[0].selector",
            "unknown model 'gpt-9'",
        ),
        ("budgets:\n  - {name: a, scope: key, limit: 1}\n", "budgets[0]", "needs 'selector'"),
        (
            "cache:\n  semantic: {embedder: nope, systems: [premium]}\n",
            "cache.semantic.embedder",
            "unknown embedder 'nope'",
        ),
        ("state: {backend: redis}\n", "state", "needs 'url'"),
        (
            "cache:\n  targets: [premum]\n",
            "cache.targets[0]",
            "unknown system or model 'premum'; did you mean 'premium'? known: ",
        ),
        (
            "cache:\n  semantic: {embedder: e, systems: [premum]}\n",
            "cache.semantic.systems[0]",
            "unknown system or model 'premum'; did you mean 'premium'? known: ",
        ),
        (
            "gateway:\n  capture: {targets: [premum]}\n",
            "gateway.capture.targets[0]",
            "unknown system or model 'premum'; did you mean 'premium'? known: ",
        ),
    ],
)
def test_bad_operations_config_names_the_place(
    write_config: Callable[[str], Path], extra: str, where: str, what: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(config(extra)))
    assert where in str(caught.value) and what in str(caught.value)


def test_cost_wrappers_do_not_show_as_extra_nodes(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        config("cache: {}\nbudgets:\n  - {name: p, scope: system, selector: premium, limit: 1}\n")
    )
    yard = modelyard.load(path)
    system = yard.systems["premium"]
    assert [child.name for child in system.children] == ["dear"]
    assert system.describe()["budgets"] == "p" and system.describe()["cache"] == "exact"


async def test_state_ledger_and_cache_outlive_a_reload_on_the_same_resources(
    write_config: Callable[[str], Path],
) -> None:
    from modelyard.config.resources import Resources

    path = write_config(config("cache: {}\nbudgets:\n  - {name: all, scope: total, limit: 1}\n"))
    resources = Resources()
    first = modelyard.load(path, resources=resources)
    store = resources.state
    await first.complete("premium", "hi")
    second = modelyard.load(path, resources=resources)
    again = await second.complete("premium", "hi")
    assert resources.state is store
    assert again.decision is not None and again.decision.kind == "cache"
    await second.aclose()


async def test_a_stream_through_a_system_is_recorded_once(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(config(""))
    async with modelyard.load(path) as yard:
        chunks = [c async for c in yard.stream("premium", "hi")]
    assert chunks[-1].response is not None
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query("SELECT system, model FROM spend")
    await ledger.aclose()
    assert rows == [("premium", "dear")]


async def test_a_cached_answer_cut_short_costs_nothing(write_config: Callable[[str], Path]) -> None:
    path = write_config(config("cache: {}\n"))
    async with modelyard.load(path) as yard:
        paid = await yard.complete("premium", "hi")
        chunks = yard.get("premium").stream(user("hi"))
        await anext(chunks)  # the replay of the cached answer, left after its first chunk
        await chunks.aclose()  # type: ignore[attr-defined]
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query("SELECT model, cost, error FROM spend ORDER BY id")
    await ledger.aclose()
    assert rows[0][1] == paid.cost > 0
    assert rows[-1] == ("dear", 0.0, "client_closed")
