"""The one place each model's resilience wrappers are stacked from config.

Outermost to innermost:

    fallback ─► retry ─► breaker ─► rate limit ─► meter ─► adapter (RemoteModel, local model)

- fallback outside retry: a model is given its retries before traffic moves on, and a
  fallback member brings its own stack.
- breaker inside retry: every failed try counts towards the failure rate, and once the circuit
  opens the next try fails fast (`circuit_open` is not retryable), so the fallback takes over
  at once instead of after the whole backoff.
- rate limit inside them: retries queue like any other call, so retrying cannot push us past
  a limit; and the breaker does not count our own queueing as the provider's failure.
- the meter (`cost.metering.Metered`) innermost, on every model whatever its config: each call
  that reaches the adapter, each retry's included, is counted once at what it was billed, so
  what a branch cancelled later had spent is still billed.

Retry and breaker settings come from the provider and are overridden per model; a circuit is
per model, or one per provider with `breaker: {per: provider}`. Limits set on a provider
count all its models together, and a model's own limits apply on top. A hot reload keeps
circuits, limiters and retry budgets whose settings did not change; a provider whose endpoint
or credentials changed (`endpoint_of`) gets closed circuits and forgets what its old endpoint
said of its quota (its rpm and tpm windows count our own sending, and stay).

Defaults. A hosted model gets, even when the config says nothing: 2 retries with full-jitter
backoff from 0.5 s (Retry-After honoured up to 60 s), under a provider retry budget of 20 % of
requests plus 10 per 10 s; a circuit of its own (opens at 50 % failures over 30 s with at
least 5 calls, probes after 15 s); and a limiter that learns from the provider's rate-limit
headers and 429s. Local and fake models get nothing unless configured: they fail
deterministically, and retrying them would only hide that. `retry: {attempts: 0}`,
`breaker: {enabled: false}` and `limits: {learn: false}` turn the defaults off (on the
provider or per model), leaving the adapter in its meter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from modelyard.config.loader import Loc
from modelyard.config.resilience import BreakerSpec, LimitsSpec, RetryBudgetSpec, RetrySpec
from modelyard.config.schema import ModelSpec, ProviderSpec
from modelyard.cost.metering import Metered
from modelyard.model import Model, ModelInfo
from modelyard.observability.attempts import TracedTries
from modelyard.providers.local_basic import DisabledModel
from modelyard.resilience.breaker import BreakerModel, BreakerPolicy, CircuitBreaker
from modelyard.resilience.deadline import DeadlineModel
from modelyard.resilience.fallback import FallbackModel
from modelyard.resilience.health import HealthRegistry
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.resilience.retry import RetryBudget, RetryModel, RetryPolicy
from modelyard.state.base import StateStore
from modelyard.state.memory import MemoryStore
from modelyard.suggest import did_you_mean

if TYPE_CHECKING:
    from modelyard.config.build import BuildContext
    from modelyard.config.resources import Resources

Substitute = Callable[[str, ModelInfo, ProviderSpec], Model | None]
"""Builds a stand-in for a hosted model (name, info, provider), or None for the real one."""


class Resilience:
    """What one build's resilience stacks share: the state store, the provider-wide circuits,
    limiters and retry budgets, and the health registry. `time_scale` multiplies every
    configured duration and `substitute` replaces hosted adapters: both for `modelyard drill`.
    """

    def __init__(
        self,
        *,
        store: StateStore | None = None,
        time_scale: float = 1.0,
        substitute: Substitute | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.store = store or MemoryStore()
        self.time_scale = time_scale
        self.substitute = substitute
        self.resources = resources
        """What outlives this build (a hot reload's next one): limiters are kept there."""
        self.health = HealthRegistry()
        self._limiters: dict[str, Limiter] = {}
        self._budgets: dict[str, RetryBudget] = {}

    def breaker(self, scope: str, spec: BreakerSpec, endpoint: str = "") -> CircuitBreaker:
        """The circuit of `scope` calling `endpoint` (`endpoint_of`), made on first use."""
        existing = self.health.get(scope)
        if existing is not None:
            return existing
        policy = BreakerPolicy.from_spec(spec, self.time_scale)
        return self.health.add(CircuitBreaker(scope, policy, self.store, endpoint=endpoint))

    def limiter(self, scope: str, spec: LimitsSpec | None, endpoint: str = "") -> Limiter:
        """The limiter of `scope` calling `endpoint` (`endpoint_of`), made on first use."""
        if scope not in self._limiters:
            limits = RateLimits.from_spec(spec, self.time_scale)

            def make() -> Limiter:
                return Limiter(scope, limits, self.store)

            if self.resources is None:
                self._limiters[scope] = make()
            else:
                # One limiter across hot reloads while its limits and endpoint stay the same:
                # calls still running on the old config keep holding their concurrency slots,
                # and a hold the provider asked for (Retry-After) is not forgotten. Another
                # endpoint or key is another quota: what the old one said does not hold it.
                key = f"limiter|{scope}|{limits!r}|{id(self.store)}|{endpoint}"
                self._limiters[scope] = self.resources.service(key, make)
        return self._limiters[scope]

    def budget(self, key: str, spec: RetryBudgetSpec) -> RetryBudget:
        """The retry budget of `key` (a provider, or a local model), made on first use."""
        if key not in self._budgets:
            self._budgets[key] = RetryBudget(key, spec, self.store, time_scale=self.time_scale)
        return self._budgets[key]

    def with_deadline(self, model: Model, seconds: float | None) -> Model:
        """`model` under a node's `deadline:`, if it has one."""
        if seconds is None:
            return model
        return DeadlineModel(model, seconds * self.time_scale)


def wrap_model(context: BuildContext, name: str, spec: ModelSpec, leaf: Model) -> Model:
    """`leaf` (the adapter or local model) inside its meter and the retry, breaker and limit
    wrappers its config asks for (fallbacks are added by `add_model_fallbacks` once all models
    exist)."""
    parts: Resilience = context.resilience
    loc: Loc = ("models", name)
    provider = context.loaded.config.providers[spec.provider] if spec.provider else None
    _check_limits(context, loc, spec, provider)
    _check_breaker(context, loc, spec, provider)
    model: Model = Metered(leaf)
    limiters: list[Limiter] = []
    provider_limits = provider.limits if provider is not None else None
    at = endpoint_of(provider)
    if provider_limits is not None and provider_limits.limits_anything:
        limiters.append(parts.limiter(f"provider:{spec.provider}", provider_limits, at))
    learns = provider is not None and (spec.limits or provider_limits or LimitsSpec()).learn
    learner = None
    # A model's own circuit and limits also change with its id (another upstream model).
    own_at = endpoint_of(provider, spec.id)
    if learns or (spec.limits is not None and spec.limits.limits_anything):
        own = parts.limiter(f"model:{name}", spec.limits, own_at)
        limiters.append(own)
        if learns:
            learner = own
            listeners = getattr(leaf, "rate_limit_listeners", None)
            if isinstance(listeners, list):
                listeners.append(own.learn)
    if limiters:
        model = RateLimitModel(model, limiters, learner=learner)
    breaker = spec.breaker or (provider.breaker if provider is not None else None)
    if breaker is None and provider is not None:
        breaker = BreakerSpec()
    if breaker is not None and breaker.enabled:
        per_provider = breaker.per == "provider"
        scope = f"provider:{spec.provider}" if per_provider else f"model:{name}"
        model = BreakerModel(model, [parts.breaker(scope, breaker, at if per_provider else own_at)])
    retry = spec.retry or (provider.retry if provider is not None else None)
    if retry is None and provider is not None:
        retry = RetrySpec()
    if retry is not None and retry.attempts > 0:
        budget = _budget(context, loc, name, spec, provider)
        policy = RetryPolicy.from_spec(retry, parts.time_scale)
        model = RetryModel(model, policy, budget=budget, tries=_traced_tries(context, model))
    return model


def _traced_tries(context: BuildContext, model: Model) -> TracedTries | None:
    """Each try of `model` in a span of its own, under the model's, when the config traces."""
    # Imported here: the operations' wiring imports this module.
    from modelyard.config.build_operations import tracing

    traces = tracing(context)
    return TracedTries(model, traces) if traces is not None else None


def endpoint_of(provider: ProviderSpec | None, model_id: str | None = None) -> str:
    """A digest of where a provider's calls go and with which credentials (its wire, base URL,
    key, auth, headers and query; with `model_id`, that model's): what a circuit and a learned
    limit are about. Empty for a local model. A digest, so no secret reaches the state store."""
    if provider is None:
        return ""
    key = provider.api_key.get_secret_value() if provider.api_key is not None else ""
    parts = [
        provider.type,
        provider.base_url or "",
        key,
        provider.auth.model_dump_json() if provider.auth is not None else "",
        orjson.dumps(provider.headers, option=orjson.OPT_SORT_KEYS).decode(),
        orjson.dumps(provider.query, option=orjson.OPT_SORT_KEYS).decode(),
        model_id or "",
    ]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


def _budget(
    context: BuildContext, loc: Loc, name: str, spec: ModelSpec, provider: ProviderSpec | None
) -> RetryBudget:
    parts: Resilience = context.resilience
    if provider is None:
        budget = spec.retry.budget if spec.retry is not None else RetryBudgetSpec()
        return parts.budget(f"model:{name}", budget)
    if spec.retry is not None and "budget" in spec.retry.model_fields_set:
        raise context.error(
            (*loc, "retry", "budget"),
            f"the retry budget is shared by all models of provider {spec.provider!r}; "
            f"set it under providers.{spec.provider}.retry.budget",
        )
    budget = provider.retry.budget if provider.retry is not None else RetryBudgetSpec()
    return parts.budget(f"provider:{spec.provider}", budget)


def _calls_per_window(limits: list[LimitsSpec | None], window: float) -> float | None:
    rpms = [lim.rpm for lim in limits if lim is not None and lim.rpm is not None]
    return min(rpms) * window / 60.0 if rpms else None


def _check_breaker(
    context: BuildContext, loc: Loc, spec: ModelSpec, provider: ProviderSpec | None
) -> None:
    """Refuse circuits that cannot work: per-provider on a model, or one that can never open
    or never close under the model's rpm limits."""
    limits = [spec.limits, provider.limits if provider is not None else None]
    candidates: list[tuple[BreakerSpec | None, Loc]] = [(spec.breaker, (*loc, "breaker"))]
    if spec.breaker is not None and spec.breaker.per == "provider":
        raise context.error(
            (*loc, "breaker", "per"),
            "a model's breaker guards that model; set 'per: provider' on the provider's breaker",
        )
    if provider is not None:
        candidates.append((provider.breaker, ("providers", str(spec.provider), "breaker")))
    for breaker, where in candidates:
        if breaker is None or not breaker.enabled:
            continue
        fit = _calls_per_window(limits, breaker.window)
        if fit is None:
            continue
        if breaker.probes > fit:
            raise context.error(
                (*where, "probes"),
                f"the circuit can never close: {breaker.probes} probes in a row must pass "
                f"within its {breaker.window:g}s window, but the rpm limit lets only "
                f"{fit:g} calls through in that time",
            )
        if breaker.min_calls > fit:
            raise context.error(
                (*where, "min_calls"),
                f"the circuit can never open: it needs {breaker.min_calls} calls in its "
                f"{breaker.window:g}s window, but the rpm limit lets only {fit:g} through",
            )


def _check_limits(
    context: BuildContext, loc: Loc, spec: ModelSpec, provider: ProviderSpec | None
) -> None:
    """Refuse a tpm limit that a request with the model's default output could never fit."""
    candidates: list[tuple[LimitsSpec | None, Loc]] = [(spec.limits, (*loc, "limits"))]
    if provider is not None:
        candidates.append((provider.limits, ("providers", str(spec.provider), "limits")))
    for limits, where in candidates:
        if limits is not None and limits.tpm is not None and limits.tpm < spec.max_output_tokens:
            raise context.error(
                (*where, "tpm"),
                f"tpm {limits.tpm} is below the max_output_tokens {spec.max_output_tokens} "
                f"of model {loc[-1]!r}: a request without max_tokens could never be sent; "
                f"raise tpm or lower max_output_tokens",
            )


def add_model_fallbacks(context: BuildContext, seal: Callable[[str, Model], Model]) -> None:
    """Wrap each model that lists `fallbacks:` in a fallback chain, in dependency order, so a
    fallback brings its own fallbacks (as `seal` finished them: a model falling back to B gets
    B's chain with its cache and span); refuses unknown names, repeats and cycles."""
    specs = context.loaded.config.models
    for name, spec in specs.items():
        seen: set[str] = set()
        for i, other in enumerate(spec.fallbacks):
            loc: Loc = ("models", name, "fallbacks", i)
            if other not in specs:
                hint = (
                    "; it is a system: use a fallback system to fall back to systems"
                    if other in context.loaded.config.systems
                    else did_you_mean(other, sorted(specs), listed="defined models")
                )
                raise context.error(loc, f"unknown model {other!r}{hint}")
            if other in seen:
                raise context.error(loc, f"{other!r} appears twice in the fallbacks")
            seen.add(other)
    done: set[str] = set()

    def wrap(name: str, trail: list[str]) -> None:
        if name in done:
            return
        for i, other in enumerate(specs[name].fallbacks):
            if other in trail or other == name:
                cycle = " -> ".join([*trail[trail.index(other) :], other])
                raise context.error(
                    ("models", name, "fallbacks", i),
                    f"fallbacks form a cycle: {cycle}; a model cannot fall back to itself",
                )
            wrap(other, [*trail, other])
        fallbacks = specs[name].fallbacks
        if fallbacks:
            primary = context.models[name]
            if isinstance(primary, DisabledModel):
                context.notes.append(
                    f"model {name!r} is disabled; its fallbacks ({', '.join(fallbacks)}) "
                    "answer for it"
                )
            chain = [primary, *(context.models[f] for f in fallbacks)]
            context.models[name] = seal(name, FallbackModel(name, chain, info=primary.info))
        done.add(name)

    for name in specs:
        wrap(name, [name])
