"""The only wiring: a validated config becomes a graph of Models.

Leaves (hosted and local models) are built once each, wrapped in the resilience stack their
config asks for; systems are built from their node specs by the builder registered for each
spec type. Expensive resources (HTTP pools, loaded local models) live in `Resources`
(`resources.py`), which a gateway keeps across hot reloads so an unchanged model is not loaded
twice. The builders of local models are in `build_local.py`, of patterns in `build_patterns.py`
(the router's in `build_router.py`), of budgets, caches and the ledger in `build_operations.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.config.loader import LoadedConfig, Loc, dotted
from modelyard.config.nodes import FallbackSpec, NodeSpec
from modelyard.config.references import check_references, disabled_providers
from modelyard.config.resources import Resources
from modelyard.config.schema import EmbedderSpec, ModelSpec, ProviderSpec
from modelyard.config.secrets import inline_key_warnings
from modelyard.cost.alerts import AlertHub
from modelyard.cost.ledger import Ledger
from modelyard.cost.prices import Price
from modelyard.errors import ConfigError
from modelyard.functions import FunctionThreads
from modelyard.model import Capabilities, Embedder, Model, ModelInfo
from modelyard.providers.http import HttpClient, Timeouts
from modelyard.providers.local_basic import DisabledModel
from modelyard.providers.pinning import alias_warnings
from modelyard.providers.registry import WIRES, embedding_wire_format, wire_format
from modelyard.providers.remote import Endpoint, RemoteEmbedder, RemoteModel
from modelyard.resilience.health import HealthRegistry
from modelyard.resilience.stack import Resilience, wrap_model
from modelyard.suggest import did_you_mean

NodeBuilder = Callable[[Any, "BuildContext", Loc, str], Model]
"""Builds the Model for one pattern spec: (spec, context, where in the file, node name)."""

LocalBuilder = Callable[[Any, "BuildContext", Loc, ModelInfo], Model]
LocalEmbedderBuilder = Callable[[Any, "BuildContext", Loc, ModelInfo], Embedder]

NODE_BUILDERS: dict[type, NodeBuilder] = {}
LOCAL_BUILDERS: dict[type, LocalBuilder] = {}
LOCAL_EMBEDDER_BUILDERS: dict[type, LocalEmbedderBuilder] = {}


def node_builder(spec_type: type) -> Callable[[NodeBuilder], NodeBuilder]:
    """Register the builder of a pattern spec type."""

    def register(function: NodeBuilder) -> NodeBuilder:
        NODE_BUILDERS[spec_type] = function
        return function

    return register


@dataclass
class BuildContext:
    """What a builder may use: the config, shared resources, and the Models built so far."""

    loaded: LoadedConfig
    resources: Resources
    disabled_providers: dict[str, str]
    models: dict[str, Model] = field(default_factory=dict)
    embedders: dict[str, Embedder] = field(default_factory=dict)
    systems: dict[str, Model] = field(default_factory=dict)
    entries: dict[str, Model] = field(default_factory=dict)
    """What a caller reaches by name (the yard, the gateway): each system or model with the
    per-request layer (spend accounting) around it; the graph itself holds the bare nodes."""
    embedder_entries: dict[str, Embedder] = field(default_factory=dict)
    """Each embedder as a caller reaches it by name: with its budgets and spend accounting
    (`embedders` holds the bare ones, which the nodes using them call)."""
    in_requests: dict[str, Embedder] = field(default_factory=dict)
    """The embedders nodes call inside a chat request where they differ from the bare ones:
    with their span, when the config traces (`embedder` hands these out)."""
    notes: list[str] = field(default_factory=list)
    """Things worth telling the user once (a stage skipped, a disabled provider)."""
    cached: set[str] = field(default_factory=set)
    """The systems and models whose own answers the response cache serves."""
    resilience: Resilience = field(default_factory=Resilience)
    alerts: AlertHub | None = None
    """Where this config's alerts go (log, webhook, ledger), once its operations are built."""
    ledger: Ledger | None = None
    """The config's spend ledger, if it keeps one, once its operations are built."""

    def error(self, loc: Loc, message: str) -> ConfigError:
        """A ConfigError at `loc`."""
        return self.loaded.error(loc, message)

    read: list[Path] = field(default_factory=list)
    """The files the build reads (data files, recordings, weights, a factory's files), each
    noted before it is opened: a refused build's missing ones are its `ConfigError.missing`."""

    def path(self, value: str) -> Path:
        """A file the config names for the build to read, relative to the config file's
        directory (noted in `read`)."""
        return self.reads(self.loaded.local_path(value))

    def reads(self, path: Path) -> Path:
        """`path`, noted in `read` as a file the build reads."""
        self.read.append(path)
        return path

    def function_threads(self) -> FunctionThreads:
        """The threads users' synchronous functions run in (`functions.threads`), one pool for
        every generation of a reloaded config that asks for as many."""
        size = self.loaded.config.functions.threads
        threads: FunctionThreads = self.resources.service(
            f"functions|{size}", lambda: FunctionThreads(size)
        )
        return threads

    def node(self, spec: NodeSpec, loc: Loc, name: str | None = None) -> Model:
        """The Model for a node spec: a named model or system, or a pattern built in place."""
        if isinstance(spec, str):
            return self.named(spec, loc)
        builder = NODE_BUILDERS.get(type(spec))
        if builder is None:
            raise self.error(loc, f"no builder for node type {type(spec).__name__}")
        node_name = spec.name or name or dotted(loc).removeprefix("systems.")
        # Every pattern, not only a fallback: a member that ignores the deadline (a local
        # function that hangs) must not hold the node past its own `deadline:`.
        return self.resilience.with_deadline(builder(spec, self, loc, node_name), spec.deadline)

    def named(self, name: str, loc: Loc) -> Model:
        """The model or system called `name`, building a system on first use."""
        if name in self.models:
            return self.models[name]
        if name in self.systems:
            return self.systems[name]
        if name in self.loaded.config.systems:
            system = self.node(self.loaded.config.systems[name], ("systems", name), name)
            self.systems[name] = system
            return system
        known = sorted({*self.loaded.config.systems, *self.loaded.config.models})
        raise self.error(loc, f"unknown model or system {name!r}{did_you_mean(name, known)}")

    def embedder(self, name: str, loc: Loc) -> Embedder:
        """The embedder called `name`."""
        if name not in self.embedders:
            listed = "defined embedders"
            config = self.loaded.config
            if name in config.models or name in config.systems:
                kind = "model" if name in config.models else "system"
                names = ", ".join(sorted(self.embedders)) or "none"
                raise self.error(
                    loc,
                    f"{name!r} is a {kind}, not an embedder (a vector for each text, under "
                    f"embedders:); {listed}: {names}",
                )
            hint = did_you_mean(name, sorted(self.embedders), listed=listed)
            raise self.error(loc, f"unknown embedder {name!r}{hint}")
        return self.in_requests.get(name, self.embedders[name])


def _capabilities(spec: ModelSpec, base: Capabilities) -> Capabilities:
    declared = spec.capabilities

    def pick(name: str) -> bool:
        value = getattr(declared, name)
        return getattr(base, name) if value is None else bool(value)

    return Capabilities(
        context_window=spec.context_window,
        max_output_tokens=spec.max_output_tokens,
        streaming=pick("streaming"),
        tools=pick("tools"),
        vision=pick("vision"),
        json_schema=pick("json_schema"),
        logprobs=pick("logprobs"),
        prefill=pick("prefill"),
        reasoning=pick("reasoning"),
        system_messages=pick("system_messages"),
        choices=base.choices,
    )


def _price(spec: ModelSpec | EmbedderSpec) -> Price:
    if spec.price is None:
        return Price()
    price = Price(
        input=spec.price.input,
        output=spec.price.output,
        cached_input=spec.price.cached_input,
        cache_write=spec.price.cache_write,
        cache_write_1h=spec.price.cache_write_1h,
    )
    tier = spec.price.above
    if tier is None:
        return price
    return price.with_tier(
        tokens=tier.tokens,
        input=tier.input,
        output=tier.output,
        cached_input=tier.cached_input,
        cache_write=tier.cache_write,
        cache_write_1h=tier.cache_write_1h,
    )


def _timeouts(provider: ProviderSpec, override: Any) -> Timeouts:
    spec = override or provider.timeouts
    return Timeouts(
        connect=spec.connect, total=spec.total, first_token=spec.first_token, stall=spec.stall
    )


def _endpoint(name: str, provider: ProviderSpec) -> Endpoint:
    defaults = WIRES[provider.type]
    headers = dict(provider.headers)
    query = dict(provider.query)
    secrets: tuple[str, ...] = ()
    if provider.api_key is not None:
        key = provider.api_key.get_secret_value()
        secrets = (key,)
        auth = provider.auth
        if auth is not None and auth.query:
            query[auth.query] = key
        elif auth is not None and auth.header:
            headers[auth.header] = auth.prefix + key
        elif defaults.auth_query:
            query[defaults.auth_query] = key
        elif defaults.auth_header:
            headers[defaults.auth_header] = defaults.auth_prefix + key
    return Endpoint(
        provider=name,
        base_url=provider.base_url or defaults.base_url,
        headers=headers,
        query=query,
        secrets=secrets,
    )


def _client(
    context: BuildContext, provider_name: str, provider: ProviderSpec, timeouts: Timeouts
) -> HttpClient:
    key = f"{provider_name}|{provider.max_connections}|{timeouts}"
    return context.resources.client(
        key, lambda: HttpClient(max_connections=provider.max_connections, timeouts=timeouts)
    )


def _build_model(context: BuildContext, name: str, spec: ModelSpec) -> Model:
    loc: Loc = ("models", name)
    if spec.local is not None:
        info = ModelInfo(
            name=name,
            kind=spec.local.type,
            model_id=spec.id or name,
            capabilities=_capabilities(spec, Capabilities(streaming=True)),
            price=_price(spec),
        )
        builder = LOCAL_BUILDERS.get(type(spec.local))
        if builder is None:
            raise context.error((*loc, "local"), f"no builder for local type {spec.local.type!r}")
        return wrap_model(context, name, spec, builder(spec.local, context, (*loc, "local"), info))
    assert spec.provider is not None
    provider = context.loaded.config.providers[spec.provider]
    info = ModelInfo(
        name=name,
        kind=provider.type,
        provider=spec.provider,
        model_id=spec.id,
        capabilities=_capabilities(spec, WIRES[provider.type].capabilities),
        price=_price(spec),
    )
    if spec.provider in context.disabled_providers:
        return DisabledModel(
            info, f"provider {spec.provider!r}: {context.disabled_providers[spec.provider]}"
        )
    substitute = context.resilience.substitute
    leaf = substitute(name, info, provider) if substitute is not None else None
    if leaf is None:
        timeouts = _timeouts(provider, spec.timeouts)
        leaf = RemoteModel(
            info,
            endpoint=_endpoint(spec.provider, provider),
            wire=wire_format(provider.type, max_tokens_field=provider.max_tokens_field),
            client=_client(context, spec.provider, provider, timeouts),
        )
    return wrap_model(context, name, spec, leaf)


def _build_embedder(context: BuildContext, name: str, spec: EmbedderSpec) -> Embedder:
    loc: Loc = ("embedders", name)
    price = _price(spec)
    if spec.local is not None:
        info = ModelInfo(name=name, kind=spec.local.type, model_id=name, price=price)
        builder = LOCAL_EMBEDDER_BUILDERS.get(type(spec.local))
        if builder is None:
            raise context.error((*loc, "local"), f"no builder for local type {spec.local.type!r}")
        return builder(spec.local, context, (*loc, "local"), info)
    assert spec.provider is not None
    provider = context.loaded.config.providers[spec.provider]
    wire = embedding_wire_format(provider.type)
    if wire is None:
        raise context.error((*loc, "provider"), f"{provider.type} providers have no embeddings API")
    if spec.provider in context.disabled_providers:
        raise context.error(
            (*loc, "provider"),
            f"embedder needs provider {spec.provider!r}, which is disabled: "
            f"{context.disabled_providers[spec.provider]}",
        )
    info = ModelInfo(
        name=name, kind=provider.type, provider=spec.provider, model_id=spec.id, price=price
    )
    timeouts = _timeouts(provider, spec.timeouts)
    return RemoteEmbedder(
        info,
        endpoint=_endpoint(spec.provider, provider),
        wire=wire,
        errors=wire_format(provider.type),
        client=_client(context, spec.provider, provider, timeouts),
    )


@dataclass(frozen=True, slots=True)
class Built:
    """Everything a config builds into."""

    loaded: LoadedConfig
    models: dict[str, Model]
    systems: dict[str, Model]
    embedders: dict[str, Embedder]
    notes: list[str]
    disabled: dict[str, str]
    entries: dict[str, Model]
    embedder_entries: dict[str, Embedder] = field(default_factory=dict)
    """What `Yard.embed` and the gateway call: each embedder with its budgets and ledger."""
    health: HealthRegistry = field(default_factory=HealthRegistry)
    """Every circuit this config built (`modelyard health`, the gateway's /readyz)."""
    warnings: list[str] = field(default_factory=list)
    """Things that work but deserve attention (a model id that is a movable alias)."""
    alerts: AlertHub | None = None
    """Where this config's alerts go: also the gateway's, for each virtual key's own budget."""
    ledger: Ledger | None = None
    """The config's spend ledger, if it keeps one: also where the gateway records a request a
    virtual key's own budget refused."""
    cached: frozenset[str] = frozenset()
    """The systems and models whose own answers the response cache serves (what the gateway's
    `x-modelyard-cache` header is sent for)."""


def build(
    loaded: LoadedConfig, resources: Resources | None = None, resilience: Resilience | None = None
) -> Built:
    """Check cross-references and build every embedder, model and system.

    `resilience` replaces the default (the config's state store, real time, real providers).
    """
    context = _with_embedders(loaded, resources, resilience)
    try:
        return _build_nodes(context)
    except ConfigError as exc:
        exc.missing = tuple(dict.fromkeys(p for p in context.read if not p.exists()))
        raise


def _build_nodes(context: BuildContext) -> Built:
    from modelyard.config.build_operations import apply_operations, trace_embedders

    loaded = context.loaded
    trace_embedders(context)  # before the nodes that call them are built
    config = loaded.config
    for name, model_spec in config.models.items():
        context.models[name] = _build_model(context, name, model_spec)
    # Budgets, caches, ledger, traces: wraps models, chains their fallbacks, builds and wraps
    # systems.
    apply_operations(context)
    for name in config.systems:
        context.named(name, ("systems", name))
    disabled = {
        name: model.reason
        for name, model in context.models.items()
        if isinstance(model, DisabledModel)
    }
    return Built(
        loaded=loaded,
        models=context.models,
        systems=context.systems,
        embedders=context.embedders,
        notes=context.notes,
        disabled=disabled,
        entries={**context.models, **context.systems, **context.entries},
        embedder_entries={**context.embedders, **context.embedder_entries},
        health=context.resilience.health,
        warnings=[
            *alias_warnings({n: s.id for n, s in config.models.items() if s.provider and s.id}),
            *inline_key_warnings(loaded),
        ],
        alerts=context.alerts,
        ledger=context.ledger,
        cached=frozenset(context.cached),
    )


def build_embedders(
    loaded: LoadedConfig, resources: Resources | None = None
) -> dict[str, Embedder]:
    """Only the config's embedders: what `modelyard train` needs, so a config may name the
    artifact being trained before it exists."""
    return _with_embedders(loaded, resources, None).embedders


def _with_embedders(
    loaded: LoadedConfig, resources: Resources | None, resilience: Resilience | None
) -> BuildContext:
    from modelyard.state.factory import live_store

    check_references(loaded)
    context = BuildContext(
        loaded=loaded,
        resources=resources or Resources(),
        disabled_providers=disabled_providers(loaded),
    )
    context.resilience = resilience or Resilience(
        store=live_store(loaded.config.state, loaded.base_dir, context.resources),
        resources=context.resources,
    )
    for name, provider in context.disabled_providers.items():
        context.notes.append(f"provider {name!r} is disabled: {provider}")
    for name, embedder_spec in loaded.config.embedders.items():
        context.embedders[name] = _build_embedder(context, name, embedder_spec)
    return context


# --- the builder of the one pattern defined in this package -----------------------------------


@node_builder(FallbackSpec)
def _build_fallback(spec: FallbackSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    from modelyard.resilience.fallback import Action, FallbackModel

    for i, child in enumerate(spec.chain):
        if isinstance(child, str) and spec.chain.index(child) != i:
            raise context.error((*loc, "chain", i), f"{child!r} appears twice in the chain")
    chain = [context.node(child, (*loc, "chain", i)) for i, child in enumerate(spec.chain)]
    rules: dict[str, Action] = {}
    for key, action in spec.on_error.items():
        for kind in key.split("|"):
            rules[kind.strip()] = (
                action
                if isinstance(action, str)
                else tuple(
                    context.node(n, (*loc, "on_error", key, i)) for i, n in enumerate(action)
                )
            )
    return FallbackModel(
        name,
        chain,
        rules=rules,
        continue_streams=spec.continue_streams,
        share=spec.member_share,
    )


from modelyard.config import build_local as _build_local  # noqa: E402, F401  (registers builders)
from modelyard.config import build_patterns, build_router  # noqa: E402, F401  (registers builders)
from modelyard.evaluation import replay_build  # noqa: E402, F401  (registers `type: replay`)
