"""Config for running systems in production: state, budgets, caching, alerts, the spend ledger,
traces.

`Config` inherits these sections, so operational settings sit at the top level of the file.
Names these sections refer to (models, systems, embedders) are checked when the config is built
(`config/build_operations.py`), where the whole file is known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from modelyard.config.base import AtLeast, Spec
from modelyard.config.gateway import GatewaySpec
from modelyard.functions import DEFAULT_THREADS, MAX_THREADS

StateBackend = Literal["memory", "sqlite", "redis", "postgres"]
BudgetScope = Literal["model", "system", "key", "tag", "total"]
BudgetWindow = Literal["minute", "hour", "day", "month", "fixed"]
BudgetAction = Literal["block", "downgrade", "alert_only"]


def _http_url(value: str) -> str:
    # The URL itself is never echoed: webhook URLs carry their secret (Slack, ?token=).
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ValueError("is not a valid URL (not shown: it may hold a secret)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError(
            "must be an http:// or https:// URL with a host and no spaces "
            "(not shown: it may hold a secret)"
        )
    return value


class StateSpec(Spec):
    """Where budgets, rate limits and circuit breakers keep their counters."""

    backend: StateBackend = "sqlite"
    """`sqlite` (default: in-process, persisted so a restart loses no spend), `memory` (nothing
    persisted), `redis` or `postgres` (shared by several gateway processes)."""
    path: str = ".modelyard/{config}/state.db"
    """The SQLite file, relative to the config file (`{config}`: its file name). With `redis`
    or `postgres`, its folder keeps what a replica stopped while the store was down still owes
    it (`state-handover-*.json`), until the next start on this config hands it over."""
    url: str | None = None
    """`redis://host:6379/0` or `postgresql://user@host/db` for the shared backends."""
    prefix: str = "modelyard:"
    """Prepended to every key, so several deployments can share one Redis."""
    timeout: PositiveFloat = 1.0
    """Seconds to wait for the shared backend before it counts as unreachable: for each
    operation, also while it waits its turn (in PostgreSQL, requests charging the same budget
    counter take its lock one after another), so keep it above that wait at peak load."""
    on_unavailable: Literal["fail_closed", "local"] = "fail_closed"
    """When the shared backend is unreachable: refuse requests, or enforce limits in this process
    alone (a warning is logged and the health check shows it); what it counted reaches the
    backend when it is back, or, stopped before that, at the next start on this config."""
    retry_interval: PositiveFloat = 5.0
    """Seconds between attempts to reach a backend that was down."""
    hold_lease: float = Field(default=120.0, ge=10.0, le=86400.0)
    """Seconds a budget reservation stays held without its process renewing it (every quarter
    of this, as long as its request runs): what a process killed outright had reserved is
    given back by the next sweep of any replica this long after it died. Shorter returns it
    sooner; longer rides out longer store outages and stalled processes."""

    @model_validator(mode="after")
    def _url_for_shared(self) -> StateSpec:
        schemes = {"redis": ("redis://", "rediss://", "unix://"), "postgres": ("postgres",)}
        if self.backend in schemes:
            if not self.url:
                raise ValueError(f"the {self.backend} backend needs 'url'")
            if not self.url.startswith(schemes[self.backend]):
                raise ValueError(
                    f"url for the {self.backend} backend must start with "
                    f"{' or '.join(schemes[self.backend])}"
                )
            try:
                urlsplit(self.url).port  # noqa: B018 (raises on a port that is not a number)
            except ValueError as exc:
                raise ValueError(f"url for the {self.backend} backend: {exc}") from None
        return self


class BudgetSpec(Spec):
    """A spending cap in USD over a window, for one scope, and what to do when it is reached."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    scope: BudgetScope
    selector: str | None = None
    """Which model, system, key or tag (e.g. `customer:acme`); `*` gives each one its own cap.
    A model budget may name an embedder (its calls by name are charged to it). Not used with
    scope `total`."""
    window: BudgetWindow = "day"
    """Calendar windows in UTC (`minute`, `hour`, `day`, `month`), or `fixed` from `start` to
    `end`."""
    start: datetime | None = None
    end: datetime | None = None
    limit: PositiveFloat
    """USD."""
    action: BudgetAction = "block"
    """At the limit: `block` (BudgetExceededError), `downgrade` (to the system `downgrade_to`),
    or `alert_only` (let it through and alert)."""
    downgrade_to: str | None = None
    alert_at: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    """Fractions of the limit at which an alert fires, once per window each."""

    @field_validator("alert_at")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        for fraction in value:
            if not 0 < fraction <= 1:
                raise ValueError(f"alert thresholds must be in (0, 1], got {fraction}")
        return sorted(set(value))

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BudgetSpec:
        if self.scope == "total":
            if self.selector is not None:
                raise ValueError("a total budget has no selector")
        elif not self.selector:
            raise ValueError(
                f"a {self.scope} budget needs 'selector': the {self.scope} it caps, "
                "or '*' for a separate cap per " + self.scope
            )
        if self.window == "fixed":
            if self.start is None or self.end is None:
                raise ValueError("a fixed window needs 'start' and 'end'")
            if self.end <= self.start:
                raise ValueError("'end' must be after 'start'")
        elif self.start is not None or self.end is not None:
            raise ValueError(f"'start' and 'end' are only for window: fixed, not {self.window}")
        if self.action == "downgrade" and not self.downgrade_to:
            raise ValueError("action downgrade needs 'downgrade_to': the cheaper system to use")
        if self.action != "downgrade" and self.downgrade_to:
            raise ValueError("'downgrade_to' is only used with action: downgrade")
        return self


class SemanticCacheSpec(Spec):
    """Serve an answer to a question close enough to one answered before (opt-in per system)."""

    embedder: str
    """An embedder from `embedders:`."""
    systems: Annotated[
        list[str],
        AtLeast(1, "a semantic cache needs at least one system (or model) that may answer from it"),
    ]
    """The systems (or models) that may answer from the semantic cache."""
    threshold: float = Field(default=0.95, gt=0, le=1)
    """Cosine similarity at or above which a cached answer is served."""
    allow_tools: bool = False
    allow_multi_turn: bool = False
    allow_nonzero_temperature: bool = False
    """Requests that leave temperature unset count as non-zero (the provider's default)."""


class CacheSpec(Spec):
    """Response caching: exact (the full request) and, opt-in, semantic."""

    backend: Literal["memory", "sqlite", "redis"] = "memory"
    path: str = ".modelyard/{config}/cache.db"
    url: str | None = None
    prefix: str | None = None
    """Redis key prefix; unset: `state.prefix` followed by `cache:`, so deployments that share
    a Redis under their own state prefixes keep their caches (and `cache clear`) apart too."""
    ttl: PositiveFloat = 3600.0
    """Seconds an entry is served."""
    max_entries: PositiveInt = 10_000
    """Least recently used entries are evicted beyond this."""
    max_entry_bytes: PositiveInt = 1_000_000
    """Responses larger than this are not cached."""
    exact: bool = True
    sampled: bool = True
    """Whether requests sampled at a temperature above 0, or with none set (providers default
    to 1), are cached like any other: true (the default, as most gateways do) serves a repeated
    sampled request its first answer; false neither serves nor stores them, so a caller asking
    for variety gets a fresh answer each time. top_p is not looked at: at temperature 0 the
    choice is greedy whatever top_p. A request with temperature 0 is cached either way."""
    targets: list[str] | None = None
    """Systems and models whose answers are cached; unset: every system."""
    semantic: SemanticCacheSpec | None = None

    @model_validator(mode="after")
    def _url_for_redis(self) -> CacheSpec:
        if self.backend == "redis" and not (self.url or "").startswith(("redis://", "rediss://")):
            raise ValueError("the redis cache backend needs 'url': redis://host:port/db")
        return self

    @model_validator(mode="after")
    def _sampled_semantic(self) -> CacheSpec:
        if (
            not self.sampled
            and self.semantic is not None
            and self.semantic.allow_nonzero_temperature
        ):
            raise ValueError(
                "semantic.allow_nonzero_temperature: true contradicts sampled: false (sampled "
                "requests are never cached then); drop one of them"
            )
        return self


class WebhookSpec(Spec):
    """Alerts as JSON POSTs, retried with backoff."""

    url: str
    retries: int = Field(default=3, ge=0, le=10)
    backoff: PositiveFloat = 0.5
    """Seconds before the first retry; doubled each time."""
    timeout: PositiveFloat = 5.0
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value)


class AnomalySpec(Spec):
    """Alert when recent traffic moves far from its trailing window."""

    window: PositiveFloat = 300.0
    """Seconds of recent traffic."""
    trailing: PositiveFloat = 3600.0
    """Seconds of history before it that recent traffic is compared with."""
    cost_factor: float = Field(default=2.0, gt=1)
    """Alert when cost per item is this many times the trailing mean (or that fraction of it)."""
    share_delta: float = Field(default=0.3, gt=0, lt=1)
    """Alert when a model's share of a system's traffic moves by this much (0.3 = 30 points)."""
    min_requests: PositiveInt = 20
    """Requests needed in both windows before anything is compared."""

    @model_validator(mode="after")
    def _longer_history(self) -> AnomalySpec:
        if self.trailing <= self.window:
            raise ValueError("'trailing' must be longer than 'window'")
        return self


class AlertsSpec(Spec):
    """Where budget and anomaly alerts go."""

    log: bool = True
    webhook: WebhookSpec | None = None
    anomaly: AnomalySpec | None = Field(default_factory=AnomalySpec)
    """Set to null to turn anomaly detection off."""


class LedgerSpec(Spec):
    """The record of what every request spent, written in batches off the request path."""

    enabled: bool = True
    backend: Literal["sqlite", "postgres"] = "sqlite"
    """`sqlite`: a file per process (`path`); `postgres`: tables every replica writes (`url`),
    so `modelyard costs` shows all of their spend."""
    path: str = ".modelyard/{config}/ledger.db"
    """`sqlite`: the ledger's file. `postgres`: its folder holds `ledger-outbox.db`, where rows
    wait until the database takes them."""
    url: str | None = None
    """`postgresql://user@host/db` for the postgres backend."""
    table_prefix: str = Field(default="modelyard_", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    flush_interval: PositiveFloat = 1.0
    batch_size: PositiveInt = 500
    max_queue: PositiveInt = 100_000
    """Rows waiting to be written beyond this are dropped, with an error logged."""

    @model_validator(mode="after")
    def _url_for_postgres(self) -> LedgerSpec:
        if self.backend == "postgres" and not (self.url or "").startswith("postgres"):
            raise ValueError("the postgres ledger needs 'url': postgresql://user@host/db")
        return self


class TracingSpec(Spec):
    """OpenTelemetry traces: a span for each system and model call, with its decision.

    Needs the `otel` extra (`pip install 'modelyard[otel]'`). Messages are never recorded as
    such, but decision records quote pieces of them (a rules router's regex match, a semantic
    cache hit's matched question, an ensemble's votes), which `decisions` can leave out."""

    exporter: Literal["otlp", "console", "global"] = "otlp"
    """`otlp`: OTLP over HTTP (protobuf) to `endpoint`; `console`: JSON lines on stdout;
    `global`: the application's own tracer provider (a library user who set up OpenTelemetry)."""
    endpoint: str | None = None
    """The collector's traces URL, e.g. http://collector:4318/v1/traces. Unset: the standard
    $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / $OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every export (a collector's API key: use `${VAR}`)."""
    service_name: str = Field(default="modelyard", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces kept; a trace continued from a caller keeps the caller's choice."""
    timeout: PositiveFloat = 10.0
    """Seconds an export may take."""
    decisions: bool = False
    """Also put each decision's reason and a system's whole decision record on its span. They
    can quote prompts and answers (a regex rule's match, a semantic cache hit's matched
    question, an ensemble's votes), so they are off unless asked for; the request log has them
    either way."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _settings_the_exporter_reads(self) -> TracingSpec:
        if self.exporter != "otlp" and (self.endpoint or self.headers):
            raise ValueError(
                f"'endpoint' and 'headers' are for the otlp exporter, not {self.exporter}"
            )
        ignored = sorted({"service_name", "sample_ratio"} & self.model_fields_set)
        if self.exporter == "global" and ignored:
            raise ValueError(
                f"{' and '.join(repr(f) for f in ignored)}: the application's own tracer "
                "provider sets these with exporter global"
            )
        return self


class FunctionsSpec(Spec):
    """How users' synchronous Python functions (callable models, gates, estimators) run."""

    threads: Annotated[int, Field(json_schema_extra={"minimum": 1, "maximum": MAX_THREADS})] = (
        DEFAULT_THREADS
    )
    """Worker threads they run in, apart from the event loop's own (default 32): at most this
    many run at once, the rest wait their turn; a function abandoned at a deadline holds its
    thread until it returns."""

    @field_validator("threads")
    @classmethod
    def _workable(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"{value} given; users' functions need at least one thread to run in")
        if value > MAX_THREADS:
            raise ValueError(
                f"{value} given; at most {MAX_THREADS} (each thread holds its own stack: a "
                "function that waits on I/O is better written async)"
            )
        return value


class OperationsSpec(Spec):
    """The operational sections of a config file."""

    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    state: StateSpec = Field(default_factory=StateSpec)
    budgets: list[BudgetSpec] = Field(default_factory=list)
    cache: CacheSpec | None = None
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    ledger: LedgerSpec = Field(default_factory=LedgerSpec)
    tracing: TracingSpec | None = None
    functions: FunctionsSpec = Field(default_factory=FunctionsSpec)

    @field_validator("budgets")
    @classmethod
    def _unique_names(cls, value: list[BudgetSpec]) -> list[BudgetSpec]:
        seen: set[str] = set()
        for budget in value:
            if budget.name in seen:
                raise ValueError(f"two budgets are named {budget.name!r}; names must be unique")
            seen.add(budget.name)
        return value
