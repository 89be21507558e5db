"""The stack built from config: defaults, shorthand fallbacks, deadlines, and bad input refused
at load with the node named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.config.build import Built, build
from modelyard.config.loader import load_config
from modelyard.config.schema import ProviderSpec
from modelyard.cost.metering import Metered
from modelyard.errors import ConfigError, ModelTimeoutError
from modelyard.model import Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.breaker import BreakerModel
from modelyard.resilience.deadline import DeadlineModel
from modelyard.resilience.fallback import FallbackModel
from modelyard.resilience.ratelimit import RateLimitModel
from modelyard.resilience.retry import RetryModel
from modelyard.resilience.stack import Resilience
from modelyard.streaming import collect
from modelyard.types import user

HOSTED = """
providers:
  acme: {type: openai, api_key: sk-test-123456}
models:
  big:
    provider: acme
    id: big-1
    price: {input: 1, output: 2}
  small:
    provider: acme
    id: small-1
    price: {input: 1, output: 2}
    fallbacks: [big]
  canned:
    local: {type: fake, default: "canned"}
"""

Write = Callable[[str], Path]


def built(path: Path, replies: dict[str, Reply] | None = None) -> Built:
    """Build with every hosted model replaced by a scripted one (no network)."""

    def substitute(name: str, info: ModelInfo, provider: ProviderSpec) -> Model:
        reply = (replies or {}).get(name, Reply(text=f"from {name}"))
        return ScriptedModel(info=info, default=reply)

    return build(load_config(path), resilience=Resilience(substitute=substitute))


def layers(model: Model) -> list[type]:
    out = []
    while True:
        out.append(type(model))
        inner = getattr(model, "inner", None)
        if inner is None:
            return out
        model = inner


def test_hosted_models_get_retry_breaker_and_limits_by_default(write_config: Write) -> None:
    models = built(write_config(HOSTED)).models
    assert layers(models["big"]) == [
        RetryModel,
        BreakerModel,
        RateLimitModel,
        Metered,
        ScriptedModel,
    ]
    assert layers(models["canned"]) == [Metered, ScriptedModel]


def test_defaults_can_be_turned_off(write_config: Write) -> None:
    text = HOSTED.replace(
        "id: big-1", "id: big-1\n    retry: {attempts: 0}\n    breaker: {enabled: false}"
    )
    assert layers(built(write_config(text)).models["big"]) == [
        RateLimitModel,
        Metered,
        ScriptedModel,
    ]


def test_local_models_get_what_is_configured(write_config: Write) -> None:
    text = HOSTED.replace(
        'local: {type: fake, default: "canned"}',
        'local: {type: fake, default: "canned"}\n    retry: {attempts: 1}',
    )
    assert layers(built(write_config(text)).models["canned"]) == [
        RetryModel,
        Metered,
        ScriptedModel,
    ]


async def test_fallbacks_shorthand_answers_from_the_fallback(write_config: Write) -> None:
    text = HOSTED.replace("id: small-1", "id: small-1\n    retry: {attempts: 0}")
    models = built(write_config(text), {"small": Reply(error="unavailable")}).models
    small = models["small"]
    assert isinstance(small, FallbackModel)
    response = await small.complete(user("x"))
    assert response.model == "big" and response.text == "from big"


def test_health_registry_holds_each_hosted_models_circuit(write_config: Write) -> None:
    health = built(write_config(HOSTED)).health
    assert {b.scope for b in health} == {"model:big", "model:small"}


def test_provider_breaker_settings_apply_to_each_model(write_config: Write) -> None:
    text = HOSTED.replace(
        "api_key: sk-test-123456}", "api_key: sk-test-123456, breaker: {probes: 3}}"
    )
    health = built(write_config(text)).health
    assert {b.scope for b in health} == {"model:big", "model:small"}
    assert all(b.policy.probes == 3 for b in health)


def test_per_provider_breaker_is_one_circuit_for_all_its_models(write_config: Write) -> None:
    text = HOSTED.replace(
        "api_key: sk-test-123456}", "api_key: sk-test-123456, breaker: {per: provider}}"
    )
    result = built(write_config(text))
    assert {b.scope for b in result.health} == {"provider:acme"}
    big, small = result.models["big"], result.models["small"]
    assert isinstance(small, FallbackModel)
    guards = [m for m in (big.inner, small.chain[0].inner) if isinstance(m, BreakerModel)]
    assert guards[0].breakers[0] is guards[1].breakers[0]


def test_provider_settings_can_turn_every_default_off(write_config: Write) -> None:
    bare = "retry: {attempts: 0}, breaker: {enabled: false}, limits: {learn: false}"
    text = HOSTED.replace("api_key: sk-test-123456}", f"api_key: sk-test-123456, {bare}}}")
    assert layers(built(write_config(text)).models["big"]) == [Metered, ScriptedModel]


async def test_a_node_deadline_abandons_a_slow_member(write_config: Write) -> None:
    text = """
models:
  slow:
    local: {type: fake, default: {text: late, latency: 1.0}}
systems:
  quick: {type: fallback, chain: [slow], deadline: 0.05}
"""
    system = built(write_config(text)).systems["quick"]
    assert isinstance(system, DeadlineModel)
    with pytest.raises(ModelTimeoutError) as caught:
        await system.complete(user("x"))
    assert "deadline" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        ("retry: {attempts: 50}", "models.big.retry.attempts", "less than or equal to 10"),
        ("retry: {initial_backoff: -1}", "models.big.retry.initial_backoff", "greater than 0"),
        (
            "retry: {initial_backoff: 30, max_backoff: 5}",
            "models.big.retry",
            "must not exceed max_backoff",
        ),
        ("breaker: {failure_rate: 0}", "models.big.breaker.failure_rate", "greater than 0"),
        ("breaker: {probes: 500}", "models.big.breaker.probes", "less than or equal to 20"),
        ("breaker: {per: provider}", "models.big.breaker.per", "on the provider's breaker"),
        ("limits: {rpm: 0}", "models.big.limits.rpm", "greater than 0"),
        (
            "limits: {rpm: 2}\n    breaker: {probes: 3, window: 60}",
            "models.big.breaker.probes",
            "can never close",
        ),
        (
            "limits: {rpm: 6}\n    breaker: {min_calls: 5, window: 30}",
            "models.big.breaker.min_calls",
            "can never open",
        ),
        ("limits: {tpm: 1000}", "models.big.limits.tpm", "could never be sent"),
        ("fallbacks: [big]", "models.big.fallbacks[0]", "cycle"),
        ("fallbacks: [small]", "models.small.fallbacks[0]", "cycle: big -> small -> big"),
        ("fallbacks: [nope]", "models.big.fallbacks[0]", "unknown model 'nope'"),
    ],
)
def test_bad_resilience_config_is_refused_naming_the_node(
    write_config: Write, change: str, where: str, words: str
) -> None:
    text = HOSTED.replace("id: big-1", "id: big-1\n    " + change)
    with pytest.raises(ConfigError) as caught:
        built(write_config(text))
    message = str(caught.value)
    assert where in message and words in message
    assert caught.value.line is not None


@pytest.mark.parametrize(
    ("system", "words"),
    [
        ("{type: fallback, chain: [big, canned, big]}", "appears twice in the chain"),
        ("{type: fallback, chain: [big], on_error: {bogus: next}}", "unknown error kind 'bogus'"),
        ("{type: fallback, chain: [big], on_error: {timeout: []}}", "lists no nodes"),
        ("{type: fallback, chain: [big], on_error: {timeout: [ghost]}}", "unknown model or system"),
    ],
)
def test_bad_fallback_systems_are_refused(write_config: Write, system: str, words: str) -> None:
    text = HOSTED + f"systems:\n  main: {system}\n"
    with pytest.raises(ConfigError) as caught:
        built(write_config(text))
    assert "systems.main" in str(caught.value) and words in str(caught.value)


async def test_fallback_rules_from_config(write_config: Write) -> None:
    text = HOSTED + (
        "systems:\n"
        "  main:\n"
        "    type: fallback\n"
        "    chain: [big, small]\n"
        "    on_error: {'timeout|unavailable': [canned], content_filter: propagate}\n"
    )
    text = text.replace("sk-test-123456}", "sk-test-123456, retry: {initial_backoff: 0.001}}")
    result = built(write_config(text), {"big": Reply(error="timeout")})
    system = result.systems["main"]
    response = await system.complete(user("x"))
    assert response.model == "canned"


async def test_a_node_deadline_stops_a_stream_that_outlives_it(write_config: Write) -> None:
    text = """
models:
  slow:
    local: {type: fake, default: {text: late, latency: 1.0}}
systems:
  quick: {type: fallback, chain: [slow], deadline: 0.05}
"""
    system = built(write_config(text)).systems["quick"]
    with pytest.raises(ModelTimeoutError) as caught:
        await collect(system.stream(user("x")))
    assert caught.value.code == "deadline" and not caught.value.retryable


SLOW_ONE_AT_A_TIME = """
models:
  slow:
    local: {type: fake, default: {text: "ok", latency: 0.3}}
    limits: {max_concurrency: 1, max_wait: 5}
    price: {input: PRICE, output: 1}
"""


async def test_a_concurrency_limit_holds_across_a_reload_that_keeps_it(
    write_config: Write,
) -> None:
    # A hot reload builds the config again with the same resources (`LiveConfig`). A price
    # edited, the limit kept: requests still running on the old build hold their slots, and
    # measured through the gateway, a provider limited to 2 at once had 4 after a reload.
    from modelyard.config.resources import Resources

    resources = Resources()
    old = build(load_config(write_config(SLOW_ONE_AT_A_TIME.replace("PRICE", "1"))), resources)
    new = build(load_config(write_config(SLOW_ONE_AT_A_TIME.replace("PRICE", "2"))), resources)
    started = time.perf_counter()
    await asyncio.gather(
        old.models["slow"].complete(user("a")), new.models["slow"].complete(user("b"))
    )
    assert time.perf_counter() - started >= 0.55  # one after the other, not side by side
