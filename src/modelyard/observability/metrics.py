"""Prometheus metrics for the gateway: requests, errors, latency, tokens and cost by system,
model and provider (an embeddings call counts under its embedder's name as both system and
model). One registry per gateway (no process-global state), except under `serve --workers N`,
whose workers keep their counts in files of one folder that every scrape adds up."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from modelyard.cost.accounting import NO_MODEL, billed_models, called
from modelyard.errors import ERROR_KINDS, ModelError
from modelyard.types import ChatResponse, Decision, EmbeddingResponse, Usage

CONTENT_TYPE = CONTENT_TYPE_LATEST

SHARED_METRICS = "PROMETHEUS_MULTIPROC_DIR"
"""The folder where the worker processes of one `serve` keep their counts: prometheus_client's
multiprocess mode, which it chooses when it is imported, so it is set before the workers start
(`share_between_workers`)."""


def share_between_workers() -> str:
    """Make a fresh folder for the counts of the workers about to start, and name it in this
    process's environment, which they inherit. Fresh, so a folder left by an earlier run
    (or named by the environment) never adds its counts to this one's."""
    folder = tempfile.mkdtemp(prefix="modelyard-metrics-")
    os.environ[SHARED_METRICS] = folder
    return folder


@dataclass(frozen=True, slots=True)
class _AnsweredSeries:
    requests: Any
    latency: Any
    input_tokens: Any
    output_tokens: Any
    cost: Any


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelyard_requests",
            "Requests answered, by system, answering model, provider and HTTP status.",
            ("system", "model", "provider", "status"),
            registry=self.registry,
        )
        self.errors = Counter(
            "modelyard_errors",
            "Requests that failed, by system and error kind.",
            ("system", "kind"),
            registry=self.registry,
        )
        self.call_errors = Counter(
            "modelyard_model_errors",
            "Model calls that failed, by system, model and error kind, those a retry or a"
            " fallback covered (in requests that were answered) included.",
            ("system", "model", "kind"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelyard_request_seconds",
            "Time from request received to last byte sent, by system.",
            ("system",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "modelyard_tokens",
            "Tokens, by system, model and direction (input/output): every billed call's, under"
            " the model that made it.",
            ("system", "model", "direction"),
            registry=self.registry,
        )
        self.refusals = Counter(
            "modelyard_refused",
            "Requests refused: by the gateway before any system ran (bad key, unknown model,"
            " bad request, a key's own limits), or by a budget (a key's own or a configured"
            " one, named in budget), by route, HTTP status and error code.",
            ("route", "status", "code", "budget"),
            registry=self.registry,
        )
        self.state_store = _StoreHealth()
        self.registry.register(self.state_store)
        self._shared = os.environ.get(SHARED_METRICS)
        """The folder the workers of this gateway count in, when it has several."""
        self.cost = Counter(
            "modelyard_cost_usd",
            "USD spent, by system and the model billed, as the spend ledger splits it (a"
            " fallback's billed failed try under its own model; failed requests' cost too).",
            ("system", "model"),
            registry=self.registry,
        )
        self.cache_saved = Counter(
            "modelyard_cache_saved_usd",
            "USD the response cache saved (what its hits cost when first answered), by system;"
            ' hits are the requests counted under provider="cache".',
            ("system",),
            registry=self.registry,
        )
        self._answered: dict[tuple[str, str, str], _AnsweredSeries] = {}
        """The labelled series of each (system, model, provider), looked up once: `labels()`
        takes a lock and builds a key on every call."""
        self._costs: dict[tuple[str, str], Any] = {}
        """The cost series of each (system, model) billed besides the one that answered."""
        self._tokens: dict[tuple[str, str], tuple[Any, Any]] = {}
        """The input and output token series of each (system, model) split out of a request."""

    def answered(
        self,
        system: str,
        response: ChatResponse | EmbeddingResponse,
        provider: str,
        seconds: float,
        saved: float = 0.0,
    ) -> None:
        """Count one answered request (`saved`: what a cache hit saved)."""
        model = response.model
        series = self._answered.get((system, model, provider))
        if series is None:
            series = self._answered[(system, model, provider)] = _AnsweredSeries(
                requests=self.requests.labels(system, model, provider, "200"),
                latency=self.latency.labels(system),
                input_tokens=self.tokens.labels(system, model, "input"),
                output_tokens=self.tokens.labels(system, model, "output"),
                cost=self.cost.labels(system, model),
            )
        series.requests.inc()
        series.latency.observe(seconds)
        usage = response.usage
        decision = response.decision if isinstance(response, ChatResponse) else None
        if decision is None or not decision.children:
            # one call (or an exact cache hit): no split to make
            series.input_tokens.inc(usage.input_tokens)
            series.output_tokens.inc(usage.output_tokens)
            series.cost.inc(response.cost)
        else:  # every call's cost and tokens under its model, the answering one's once
            billed = billed_models(decision, response.cost, model, usage=usage)
            self._spent(system, billed.costs)
            self._used(system, billed.tokens)
            self._calls_failed(system, decision)
        if saved:
            self.cache_saved.labels(system).inc(saved)

    def refused(self, route: str, status: int, code: str, budget: str = "") -> None:
        """Count one request refused: before any system ran, or by `budget` (its name in the
        config, or a key's own: a bounded set of label values)."""
        self.refusals.labels(route, str(status), code, budget).inc()

    def failed(
        self,
        system: str,
        error: ModelError,
        status: int,
        seconds: float,
        *,
        billed: str | None = None,
        answered: str | None = None,
    ) -> None:
        """Count one failed request, and what its calls cost and used (`spend`)."""
        self.requests.labels(system, "", "", str(status)).inc()
        self.errors.labels(system, error.kind).inc()
        self.latency.labels(system).observe(seconds)
        self.spend(system, error, billed=billed, answered=answered)

    def spend(
        self,
        system: str,
        error: ModelError,
        *,
        billed: str | None = None,
        answered: str | None = None,
    ) -> None:
        """Count what the calls of a request that ended in `error` (failed, or refused by a
        budget after some ran) cost and used, split by model as the spend ledger splits it
        (its rows carry the same figures): the calls its decision names, also those that cost
        $0 (a free draft before the stage that failed), else `billed` (the model it was cut
        short on) with the error's cost and estimated tokens; `answered`: the model whose
        whole answer the client never took. And those of its calls that failed."""
        decision = error.decision
        if decision is not None:
            self._calls_failed(system, decision)
        usage = error.usage
        if decision is None and error.cost <= 0 and usage is None:
            return  # no call named, none billed: nothing to count
        default = billed or error.model or NO_MODEL
        split = billed_models(decision, error.cost, answered, default, usage=usage)
        self._spent(system, split.costs)
        self._used(system, split.tokens)

    def _calls_failed(self, system: str, decision: Decision) -> None:
        """Count each model call in `decision` that failed (its leaves with an error)."""
        for call in decision.walk():
            if call.error is None or not called(call):
                continue
            kind = call.error.split(":", 1)[0]
            # Only the error tree's kinds: a label never takes free text.
            self.call_errors.labels(
                system, call.node, kind if kind in ERROR_KINDS else "other"
            ).inc()

    def _spent(self, system: str, costs: dict[str, float]) -> None:
        for model, cost in costs.items():
            if cost > 0:
                series = self._costs.get((system, model))
                if series is None:
                    series = self._costs[(system, model)] = self.cost.labels(system, model)
                series.inc(cost)

    def _used(self, system: str, tokens: dict[str, Usage]) -> None:
        for model, usage in tokens.items():
            series = self._tokens.get((system, model))
            if series is None:
                series = self._tokens[(system, model)] = (
                    self.tokens.labels(system, model, "input"),
                    self.tokens.labels(system, model, "output"),
                )
            series[0].inc(usage.input_tokens)
            series[1].inc(usage.output_tokens)

    def store_health(self, backend: str, mode: str, ok: bool) -> None:
        """Show the state store's health (one series: the current mode)."""
        self.state_store.current = (backend, mode, 1.0 if ok else 0.0)

    def render(self) -> bytes:
        """The text exposition format: with several workers, the counts of them all (those a
        SIGHUP replaced too, so no counter ever drops), and the state store as this one sees
        it."""
        if self._shared is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(registry, path=self._shared)  # type: ignore[no-untyped-call]
        registry.register(self.state_store)
        return generate_latest(registry)


class _StoreHealth(Collector):
    """`modelyard_state_store_up`: one series, the mode the store is in now. Not a Gauge, whose
    series a worker of several would keep in the shared folder: a mode left would stay shown."""

    def __init__(self) -> None:
        self.current: tuple[str, str, float] | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelyard_state_store_up",
            "1 when the state store serves from where it should; 0 when a shared backend is "
            "down and this process refuses requests or counts budgets and limits alone (mode).",
            labels=("backend", "mode"),
        )
        if self.current is not None:
            backend, mode, value = self.current
            family.add_metric([backend, mode], value)
        yield family
