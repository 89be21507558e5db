"""Wiring of the operational sections: budgets, caches, the spend ledger, alerts and traces.

`build()` calls `apply_operations` once the models exist. It wraps each model, chains the
model-level `fallbacks:` of the wrapped models (so a fallback still meets its own budgets, cache
and span), then builds each system (inner systems first, so an outer one holds the wrapped
inner one) and wraps it, outer to inner: `Traced` (a span per call, when the config traces) →
`Cached` (serves hits) → `BudgetGuard` (reserves, settles) → the node itself. What callers
reach by name (`BuildContext.entries`) adds `Accounted` (bills and records the request's
spend) around that, once per request rather than at every layer of a graph. Stateful services
(state store, ledger, cache, alerts, tracing) are made once per spec in `Resources`, so they
outlive hot reloads. An embedder callers reach by name (`BuildContext.embedder_entries`) is
wrapped once, in `AccountedEmbedder` (its model, key, tag and total budgets and its spend in the
ledger) and, when the config traces, `TracedEmbedder` around that; the nodes calling one inside
a chat request get it with its span alone (`trace_embedders`), its cost being the request's.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterator
from pathlib import Path

from modelyard.config.answers import AnswerVersions
from modelyard.config.build import BuildContext
from modelyard.config.loader import Loc, config_relative
from modelyard.config.operations import CacheSpec, LedgerSpec, OperationsSpec
from modelyard.config.references import node_refs
from modelyard.cost.accounting import Accounted
from modelyard.cost.alerts import AlertHub, Webhook
from modelyard.cost.anomaly import AnomalyDetector
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget
from modelyard.cost.budget_leases import lease_keeper
from modelyard.cost.budgets import BudgetGuard
from modelyard.cost.cache import Cached, ResponseCache, SemanticPolicy
from modelyard.cost.cache_keys import identity
from modelyard.cost.cache_store import CacheBackend, MemoryCache, SqliteCache
from modelyard.cost.embedding import AccountedEmbedder
from modelyard.cost.ledger import Ledger, LedgerFile, SqliteLedgerFile
from modelyard.errors import ConfigError
from modelyard.model import Embedder, Model
from modelyard.observability.tracing import Traced, TracedEmbedder, Tracing, traced_embedder
from modelyard.providers.local_basic import DisabledModel
from modelyard.resilience.stack import add_model_fallbacks
from modelyard.state.base import StateStore
from modelyard.state.factory import shared_store
from modelyard.suggest import did_you_mean


def state_store(context: BuildContext) -> StateStore:
    """The config's state store, made once per spec and kept in `Resources`."""
    return shared_store(context.loaded.config.state, context.loaded.base_dir, context.resources)


def budget_book(context: BuildContext, alerts: AlertHub | None) -> BudgetBook:
    """The config's budget ledger, on its state store, with this process's lease keeper."""
    store = state_store(context)
    keeper = lease_keeper(store, context.loaded.config.state.hold_lease, context.resources)
    return BudgetBook(store, alerts=alerts, leases=keeper)


def ledger_file(spec: LedgerSpec, base_dir: Path) -> LedgerFile:
    """Where the ledger `spec` describes is kept (also what `modelyard costs` reads)."""
    if spec.backend == "postgres":
        from modelyard.cost.ledger_outbox import OutboxLedgerFile
        from modelyard.cost.ledger_postgres import PostgresLedgerFile

        assert spec.url is not None
        # Rows wait on the host until the database takes them (a process killed meanwhile
        # leaves them to the next one), in the folder of `path`, which this backend leaves unused.
        outbox = config_relative(spec.path, base_dir).with_name("ledger-outbox.db")
        return OutboxLedgerFile(
            PostgresLedgerFile(spec.url, table_prefix=spec.table_prefix),
            SqliteLedgerFile(outbox),
            batch_size=spec.batch_size,
            retry_every=spec.flush_interval,
        )
    return SqliteLedgerFile(config_relative(spec.path, base_dir))


def tracing(context: BuildContext) -> Tracing | None:
    """Where the config's spans go, if it traces; made once per spec, so reloads keep it."""
    spec = context.loaded.config.tracing
    if spec is None:
        return None
    try:
        made: Tracing = context.resources.service(
            f"tracing|{spec.model_dump_json()}", lambda: Tracing(spec)
        )
    except ConfigError as exc:
        raise context.error(("tracing",), exc.message) from None
    return made


def trace_embedders(context: BuildContext) -> None:
    """When the config traces, the nodes that embed inside a request (a semantic cache or
    router, a classifier, a retriever, a learned estimator) call each embedder through its span,
    nested under the node's; callers reaching it by name get theirs from `embedder_entry`."""
    traces = tracing(context)
    if traces is not None:
        for name, embedder in context.embedders.items():
            context.in_requests[name] = traced_embedder(embedder, traces)


def ledger(context: BuildContext) -> Ledger | None:
    """The spend ledger, if enabled."""
    spec = context.loaded.config.ledger
    if not spec.enabled:
        return None
    key = f"ledger|{context.loaded.base_dir}|{spec.model_dump_json()}"
    made: Ledger = context.resources.service(
        key,
        lambda: Ledger(
            ledger_file(spec, context.loaded.base_dir),
            flush_interval=spec.flush_interval,
            batch_size=spec.batch_size,
            max_queue=spec.max_queue,
        ),
    )
    return made


def _alerts(context: BuildContext, spend: Ledger | None) -> AlertHub:
    spec = context.loaded.config.alerts
    hook = spec.webhook
    webhook = (
        Webhook(
            url=hook.url,
            retries=hook.retries,
            backoff=hook.backoff,
            timeout=hook.timeout,
            headers=hook.headers,
        )
        if hook is not None
        else None
    )
    key = f"alerts|{spec.model_dump_json()}|{id(spend)}"
    hub: AlertHub = context.resources.service(
        key,
        lambda: AlertHub(
            log_alerts=spec.log,
            webhook=webhook,
            recorder=spend.record_alert if spend is not None else None,
        ),
    )
    return hub


def _anomaly(context: BuildContext, hub: AlertHub) -> AnomalyDetector | None:
    spec = context.loaded.config.alerts.anomaly
    if spec is None:
        return None
    key = f"anomaly|{spec.model_dump_json()}|{id(hub)}"
    detector: AnomalyDetector = context.resources.service(
        key,
        lambda: _Closeable(
            AnomalyDetector(
                hub,
                window=spec.window,
                trailing=spec.trailing,
                cost_factor=spec.cost_factor,
                share_delta=spec.share_delta,
                min_requests=spec.min_requests,
            )
        ),
    ).detector
    return detector


class _Closeable:
    """Holds a service that has nothing to close, so `Resources` can treat all alike."""

    def __init__(self, detector: AnomalyDetector) -> None:
        self.detector = detector

    async def aclose(self) -> None:
        """Nothing to release."""


def _cache_backend(context: BuildContext, spec: CacheSpec) -> CacheBackend:
    if spec.backend == "memory":
        return MemoryCache(max_entries=spec.max_entries)
    if spec.backend == "sqlite":
        return SqliteCache(context.loaded.local_path(spec.path), max_entries=spec.max_entries)
    from modelyard.cost.cache_redis import RedisCache

    assert spec.url is not None
    return RedisCache(spec.url, prefix=cache_prefix(context, spec), max_entries=spec.max_entries)


def cache_prefix(context: BuildContext, spec: CacheSpec) -> str:
    """The Redis cache's key prefix: its own, else the state store's followed by `cache:`."""
    if spec.prefix is not None:
        return spec.prefix
    return context.loaded.config.state.prefix + "cache:"


def response_cache(context: BuildContext, spec: CacheSpec) -> ResponseCache:
    """The config's response cache, made once per spec (and prefix)."""
    key = f"cache|{context.loaded.base_dir}|{spec.model_dump_json()}|{cache_prefix(context, spec)}"
    cache: ResponseCache = context.resources.service(
        key,
        lambda: ResponseCache(
            _cache_backend(context, spec),
            ttl=spec.ttl,
            max_entry_bytes=spec.max_entry_bytes,
            exact=spec.exact,
            sampled=spec.sampled,
        ),
    )
    return cache


def _check_names(context: BuildContext, ops: OperationsSpec) -> None:
    config = context.loaded.config
    known = {"model": set(config.models), "system": set(config.systems)}
    every = known["model"] | known["system"]
    # A model budget may cap an embedder too (what it is charged to when called by name).
    known["model"] |= set(config.embedders)
    for i, budget in enumerate(ops.budgets):
        names, selector = known.get(budget.scope), budget.selector
        if names is not None and selector is not None and selector not in {*names, "*"}:
            raise context.error(
                ("budgets", i, "selector"),
                f"unknown {budget.scope} {selector!r}{did_you_mean(selector, sorted(names))}",
            )
        if budget.downgrade_to is not None and budget.downgrade_to not in every:
            raise context.error(
                ("budgets", i, "downgrade_to"),
                f"unknown system or model {budget.downgrade_to!r}"
                + did_you_mean(budget.downgrade_to, sorted(every)),
            )
    captured = ops.gateway.capture.targets if ops.gateway.capture is not None else None
    named: list[tuple[Loc, str]] = [
        (("gateway", "capture", "targets", i), name) for i, name in enumerate(captured or ())
    ]
    cache = ops.cache
    if cache is not None:
        named += [(("cache", "targets", i), name) for i, name in enumerate(cache.targets or ())]
    if cache is not None and cache.semantic is not None:
        named += [
            (("cache", "semantic", "systems", i), name)
            for i, name in enumerate(cache.semantic.systems)
        ]
    for loc, name in named:
        if name not in every:
            raise context.error(
                loc, f"unknown system or model {name!r}{did_you_mean(name, sorted(every))}"
            )
    if cache is not None and cache.semantic is not None:
        context.embedder(cache.semantic.embedder, ("cache", "semantic", "embedder"))


def _system_order(context: BuildContext) -> Iterator[str]:
    """System names, each after the systems it contains."""
    systems = context.loaded.config.systems
    done: set[str] = set()

    def visit(name: str) -> Iterator[str]:
        done.add(name)
        for ref, _ in node_refs(systems[name], ("systems", name)):
            if ref in systems and ref not in done:
                yield from visit(ref)
        yield name

    for name in systems:
        if name not in done:
            yield from visit(name)


class _Wrapping:
    """Wraps one node at a time with what the config asks for it."""

    def __init__(self, context: BuildContext) -> None:
        self.context = context
        ops = context.loaded.config
        self.spend = ledger(context)
        self.alerts = _alerts(context, self.spend)
        self.anomaly = _anomaly(context, self.alerts)
        self.budgets = [Budget.from_spec(spec) for spec in ops.budgets]
        self.per_request = [b for b in self.budgets if b.per_request]
        self.book = budget_book(context, self.alerts) if self.budgets else None
        self.targets = ChainMap(context.systems, context.models)
        cache = ops.cache
        self.cache = response_cache(context, cache) if cache is not None else None
        self.cached_names = set(cache.targets) if cache and cache.targets is not None else None
        self.tracing = tracing(context)
        self.versions = AnswerVersions(context.loaded)
        self.semantic: SemanticPolicy | None = None
        self.semantic_names: set[str] = set()
        if cache is not None and cache.semantic is not None:
            spec = cache.semantic
            self.semantic_names = set(spec.systems)
            self.semantic = SemanticPolicy(
                embedder=context.embedder(spec.embedder, ("cache", "semantic", "embedder")),
                threshold=spec.threshold,
                allow_tools=spec.allow_tools,
                allow_multi_turn=spec.allow_multi_turn,
                allow_nonzero_temperature=spec.allow_nonzero_temperature,
                space=self.versions.version(spec.embedder, "embedders"),
            )

    def entry(self, name: str, node: Model) -> Model:
        """`node` as callers reach it by name: with the request's spend recorded, and billed
        whole (`cost.metering`) even with no ledger to record it in. Its span, if traced, goes
        outside that, so the span's cost is what the request is billed: a branch cancelled on
        the way had spent more than the answer's record reports."""
        if isinstance(node, Traced) and self.tracing is not None:
            accounted = Accounted(node.inner, ledger=self.spend, anomaly=self.anomaly)
            version = self.context.loaded.version
            return Traced(accounted, self.tracing, system=node.system, config_version=version)
        return Accounted(node, ledger=self.spend, anomaly=self.anomaly)

    def embedder_entry(self, name: str, embedder: Embedder) -> Embedder:
        """`embedder` as callers reach it by name: charged to its model budgets and the key,
        tag and total budgets, with its spend recorded and its span."""
        budgets = [
            b
            for b in self.budgets
            if b.per_request or (b.scope == "model" and b.applies_to_node(name))
        ]
        if self.spend is not None or self.anomaly is not None or budgets:
            embedder = AccountedEmbedder(
                embedder, book=self.book, budgets=budgets, ledger=self.spend, anomaly=self.anomaly
            )
        if self.tracing is not None:  # outermost: a refusal is a span too
            embedder = TracedEmbedder(embedder, self.tracing)
        return embedder

    def wrap(
        self, name: str, node: Model, *, is_system: bool, chain: bool = False, cache: bool = True
    ) -> Model:
        """`node` with its span, cache (unless `cache` is False) and budget guard. A `chain` (a
        model with its `fallbacks:`) charges no model budget: each model in it carries its
        own."""
        wrapped = node
        if self.book is not None and (self.per_request or not chain):
            scope = "system" if is_system else "model"
            own = (
                []
                if chain
                else [b for b in self.budgets if b.scope == scope and b.applies_to_node(name)]
            )
            wrapped = BudgetGuard(
                wrapped,
                book=self.book,
                own=own,
                per_request=self.per_request,
                targets=self.targets,
            )
        if cache and self.cache is not None and self._cached(name, is_system):
            semantic = self.semantic if name in self.semantic_names else None
            # Keyed on what decides this node's answers, not on the file's text: a comment or a
            # budget edited keeps the cache, a `${VAR}` feeding a URL or a prompt does not.
            who = identity(node, self.versions.version(name))
            wrapped = Cached(wrapped, cache=self.cache, who=who, semantic=semantic)
            self.context.cached.add(name)
        if self.tracing is not None:  # outermost: a cache hit is a span too
            version = self.context.loaded.version
            wrapped = Traced(wrapped, self.tracing, system=is_system, config_version=version)
        return wrapped

    def _cached(self, name: str, is_system: bool) -> bool:
        if name in self.semantic_names:
            return True
        return is_system if self.cached_names is None else name in self.cached_names


def apply_operations(context: BuildContext) -> None:
    """Wrap every model, chain model-level fallbacks, then build and wrap every system (see the
    module docstring)."""
    config = context.loaded.config
    _check_names(context, config)
    wrapping = _Wrapping(context)
    context.alerts, context.ledger = wrapping.alerts, wrapping.spend
    for name, model in list(context.models.items()):
        if not isinstance(model, DisabledModel):  # spends nothing; build reports it as disabled
            # A model with fallbacks is reached only through its chain, whose cache covers it.
            cache = not config.models[name].fallbacks
            context.models[name] = wrapping.wrap(name, model, is_system=False, cache=cache)

    def seal(name: str, chain: Model) -> Model:
        # What the name reaches, and what a model falling back to it gets: the key, tag and
        # total budgets a request meets first are reserved here for the whole chain; a cache
        # and a span cover it whole.
        return wrapping.wrap(name, chain, is_system=False, chain=True)

    # Model-level fallbacks chain the wrapped models: a model reached as another's fallback
    # still meets its own budgets, cache and span.
    add_model_fallbacks(context, seal)
    for name, model in context.models.items():
        if not isinstance(model, DisabledModel):
            context.entries[name] = wrapping.entry(name, model)
    for name, embedder in context.embedders.items():
        context.embedder_entries[name] = wrapping.embedder_entry(name, embedder)
    for name in _system_order(context):
        loc: Loc = ("systems", name)
        system = context.node(config.systems[name], loc, name)
        context.systems[name] = wrapping.wrap(name, system, is_system=True)
        context.entries[name] = wrapping.entry(name, context.systems[name])
