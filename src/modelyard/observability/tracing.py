"""OpenTelemetry traces: a span for every call to a system, a named model or an embedder callers
reach by name, with its decision.

Built only when the config has a `tracing:` section, so without one the request path carries no
wrapper at all. Spans nest as the calls do: the context follows asyncio tasks, so an ensemble's
members are siblings under the ensemble's system, and a gateway request continues its caller's
trace from the `traceparent` header (`observability.propagation`). A model's span is named
as the GenAI semantic conventions ask (`chat <the id the provider is sent>`; the config's name is
`modelyard.node`) and carries their attributes (provider, model ids, tokens, finish reasons),
and each try of a model that retries is a span under it (`observability.attempts`); a system's
span carries its whole decision record as JSON, since nodes written inline in a system (an
unnamed cascade stage, say) have no span of their own. An embedding call's span is the GenAI
`embeddings` operation, with its input tokens and cost, whether a caller asked for it by name
or a node embeds inside a chat request (a semantic cache or router: then nested under it).
Messages are never recorded; reasons and decision records quote pieces of prompts and answers
(a regex rule's match, a semantic cache hit's matched question, an ensemble's votes), so they
are added only with `tracing.decisions: true`. A call cancelled by its caller (an ensemble's
straggler once the vote is settled, a client that left) is not an error of its own: its span
says `modelyard.cancelled`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from modelyard.config.operations import TracingSpec
from modelyard.cost.decoration import Decoration
from modelyard.errors import ConfigError, ModelError, redact
from modelyard.local.vectors import Matrix, SyncEncoder
from modelyard.model import Embedder, Model, ModelInfo
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

DECISION_LIMIT = 16_384
"""Most characters of a decision record on a span (collectors cap attribute sizes); a longer
record keeps its top node only, marked `truncated`, so it stays valid JSON."""


_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk.trace.export",
)
"""Where the SDK logs failed exports, quoting the collector's URL (query included)."""


_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Where the OTLP exporter finds its collector when the config names none."""


PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
"""`gen_ai.provider.name`'s well-known values (OpenTelemetry GenAI conventions), by the wire
format a provider speaks: an OpenAI-compatible server (vLLM, Ollama, Groq) is `openai`, as the
conventions ask of a client that knows only the API it calls."""


def provider_attributes(info: ModelInfo) -> dict[str, str]:
    """The span attributes naming where `info`'s model runs: the conventions' provider name and
    the config's own name for the provider (`modelyard.provider`); `local` for local models."""
    name = PROVIDER_NAMES.get(info.kind)
    if name is None or info.provider is None:
        return {"gen_ai.provider.name": info.provider or "local"}
    return {"gen_ai.provider.name": name, "modelyard.provider": info.provider}


def request_model(info: ModelInfo) -> str:
    """`gen_ai.request.model`, the second word of a model's span name: the id its provider is
    sent, or the config's name for a model that has none (a local one)."""
    return info.model_id or info.name


class _Redacting(logging.Filter):
    """Scrubs the collector's secrets (a `?token=` in its URL, header values) from the SDK's
    log lines, as modelyard's own errors are scrubbed."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = redact(message, *self.secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_REDACTING = _Redacting()


def _hide_in_logs(spec: TracingSpec) -> None:
    # Without `endpoint` the exporter reads the standard variables: their URL is logged too.
    urls = [spec.endpoint, *(os.environ.get(name) for name in _ENDPOINT_VARIABLES)]
    found = set(spec.headers.values())
    for parts in (urlsplit(url) for url in urls if url):
        found.update((parts.query, parts.password or ""))
    _REDACTING.secrets.update(s for s in found if s)
    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTING not in logger.filters:
            logger.addFilter(_REDACTING)


class Tracing:
    """The tracer a config's spans go to, and the exporter behind it (a `Resources` service)."""

    def __init__(self, spec: TracingSpec) -> None:
        here = version("modelyard")
        self.decisions = spec.decisions
        self.provider: TracerProvider | None = None
        try:
            from opentelemetry import trace

            if spec.exporter == "global":
                self.tracer: Tracer = trace.get_tracer("modelyard", here)
                return
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
            from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

            exporter: Any = ConsoleSpanExporter()
            if spec.exporter == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter(
                    endpoint=spec.endpoint, headers=spec.headers or None, timeout=spec.timeout
                )
                _hide_in_logs(spec)
        except ImportError:
            missing = "tracing needs OpenTelemetry: pip install 'modelyard[otel]'"
            raise ConfigError(missing) from None
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": spec.service_name, "service.version": here}),
            sampler=ParentBasedTraceIdRatio(spec.sample_ratio),
        )
        # Spans are exported in batches from the SDK's own thread, off the event loop.
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("modelyard", here)

    async def aclose(self) -> None:
        """Export what is left and stop the exporter."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


class Traced(Decoration):
    """A span around each call to `inner`: a system (`system=True`) or a named model.

    The span is made current with `context.attach` rather than `use_span` (a generator-based
    context manager), and its outcome is set in one `set_attributes` call, only when the span
    records: each SDK attribute write takes a lock and validates the value."""

    def __init__(
        self, inner: Model, tracing: Tracing, *, system: bool, config_version: str
    ) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        super().__init__(inner)
        self.tracer = tracing.tracer
        self.decisions = tracing.decisions
        self.system = system
        info = self.info
        # A model's span is named as the GenAI conventions ask, by the id the provider is sent
        # (`chat gpt-4o-2024-08-06`); the config's name for it is `modelyard.node`.
        self.span_name = f"system {self.name}" if system else f"chat {request_model(info)}"
        self._attach, self._detach, self._current = (
            context.attach,
            context.detach,
            trace.set_span_in_context,
        )
        self._status, self._error = Status, StatusCode.ERROR
        self.kind = SpanKind.CLIENT if info.provider and not system else SpanKind.INTERNAL
        self.fixed: dict[str, Any] = {"modelyard.node": self.name}
        """Attributes every span of this node starts with."""
        if system:
            self.fixed["modelyard.config_version"] = config_version
        else:
            self.fixed["gen_ai.operation.name"] = "chat"
            self.fixed |= provider_attributes(info)
            self.fixed["gen_ai.request.model"] = request_model(info)

    def _start(self, request: ChatRequest) -> Span:
        attributes = dict(self.fixed)
        if request.request_id:
            attributes["modelyard.request_id"] = request.request_id
        if not self.system:
            if request.max_tokens is not None:
                attributes["gen_ai.request.max_tokens"] = request.max_tokens
            if request.temperature is not None:
                attributes["gen_ai.request.temperature"] = request.temperature
        return self.tracer.start_span(self.span_name, kind=self.kind, attributes=attributes)

    def _end(
        self,
        span: Span,
        response: ChatResponse | None = None,
        error: ModelError | None = None,
        status: str | None = None,
    ) -> None:
        """Record the outcome (an answer, a ModelError, or another ending's `status`) and end."""
        if span.is_recording():
            if error is not None:
                status = f"{error.kind}: {error}"
            if status is not None:
                span.set_status(self._status(self._error, status))
            span.set_attributes(self._outcome(response, error))
        span.end()

    def _outcome(self, response: ChatResponse | None, error: ModelError | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        decision: Decision | None = None
        if error is not None:
            attributes["error.type"] = error.kind
            attributes["modelyard.cost_usd"] = error.cost
            decision = error.decision
        elif response is not None:
            attributes["modelyard.cost_usd"] = response.cost
            attributes["modelyard.answered_by"] = response.model
            if not self.system:
                usage = response.usage
                attributes["gen_ai.response.model"] = response.provider_model or response.model
                attributes["gen_ai.response.id"] = response.id  # the provider's, to look it up
                attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
                attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
                attributes["gen_ai.response.finish_reasons"] = [
                    str(c.finish_reason) for c in response.choices
                ]
            decision = response.decision
        if decision is None:
            return attributes
        attributes["modelyard.kind"] = decision.kind
        if decision.chosen is not None:
            attributes["modelyard.chosen"] = decision.chosen
        if self.decisions:
            attributes["modelyard.reason"] = decision.reason
            if self.system:
                attributes["modelyard.decision"] = _record(decision)
        return attributes

    async def complete(self, request: ChatRequest) -> ChatResponse:
        span = self._start(request)
        token = self._attach(self._current(span))
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            self._end(span, error=exc)
            raise
        except asyncio.CancelledError:  # by its caller: not this node's failure
            span.set_attribute("modelyard.cancelled", True)
            span.end()
            raise
        except BaseException as exc:  # a bug
            self._end(span, status=type(exc).__name__)
            raise
        finally:
            self._detach(token)
        self._end(span, response)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        span = self._start(request)
        chunks = self.inner.stream(request)
        answer: ChatResponse | None = None
        error: ModelError | None = None
        try:
            while True:
                # Current only while the inner stream runs: across a `yield` the caller's code
                # runs, and it must not find this span current.
                token = self._attach(self._current(span))
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except ModelError as exc:
                    error = exc
                    raise
                finally:
                    self._detach(token)
                if chunk.response is not None:
                    answer = chunk.response
                yield chunk
        finally:
            try:
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            finally:  # closing can be cancelled or fail (a budget settling): end the span anyway
                if answer is None and error is None:
                    self._end(span, status="the stream ended without its answer")
                else:
                    self._end(span, answer, error)


class TracedEmbedder(Embedder):
    """A span around each call to `inner`, an embedder as callers reach it by name (with its
    budgets and ledger, so a refusal is a failed span too); its HTTP request carries the span's
    `traceparent`, as a chat model's does. Made current the way `Traced` makes its spans."""

    def __init__(self, inner: Embedder, tracing: Tracing) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.inner = inner
        self.info = info = inner.info
        self.tracer = tracing.tracer
        self.span_name = f"embeddings {request_model(info)}"
        self._attach, self._detach, self._current = (
            context.attach,
            context.detach,
            trace.set_span_in_context,
        )
        self._status, self._error = Status, StatusCode.ERROR
        self.kind = SpanKind.CLIENT if info.provider else SpanKind.INTERNAL
        self.fixed: dict[str, Any] = {
            "modelyard.node": self.name,
            "gen_ai.operation.name": "embeddings",
            **provider_attributes(info),
            "gen_ai.request.model": request_model(info),
        }

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        attributes = dict(self.fixed)
        if request.request_id:
            attributes["modelyard.request_id"] = request.request_id
        if request.dimensions is not None:
            attributes["gen_ai.embeddings.dimension.count"] = request.dimensions
        span = self.tracer.start_span(self.span_name, kind=self.kind, attributes=attributes)
        token = self._attach(self._current(span))
        try:
            response = await self.inner.embed(request)
        except ModelError as exc:
            if span.is_recording():
                span.set_status(self._status(self._error, f"{exc.kind}: {exc}"))
                span.set_attributes({"error.type": exc.kind, "modelyard.cost_usd": exc.cost})
            span.end()
            raise
        except asyncio.CancelledError:  # by its caller: not this embedder's failure
            span.set_attribute("modelyard.cancelled", True)
            span.end()
            raise
        except BaseException as exc:  # a bug
            span.set_status(self._status(self._error, type(exc).__name__))
            span.end()
            raise
        finally:
            self._detach(token)
        if span.is_recording():
            span.set_attributes(
                {
                    "modelyard.cost_usd": response.cost,
                    "gen_ai.response.model": response.provider_model or response.model,
                    "gen_ai.usage.input_tokens": response.usage.input_tokens,
                }
            )
        span.end()
        return response


class _TracedEncoder(TracedEmbedder):
    """A traced embedder that can also encode in the calling thread, as its inner one can: a
    classifier or retriever embeds its examples that way when the config is built (no request,
    so no span), and only its per-request `embed` calls are traced."""

    def encode(self, texts: Sequence[str]) -> Matrix:
        """The inner embedder's rows, untraced."""
        inner: SyncEncoder = self.inner  # type: ignore[assignment]
        return inner.encode(texts)


def traced_embedder(inner: Embedder, tracing: Tracing) -> TracedEmbedder:
    """`inner` with a span around each `embed`, still a `SyncEncoder` if it is one."""
    if isinstance(inner, SyncEncoder):
        return _TracedEncoder(inner, tracing)
    return TracedEmbedder(inner, tracing)


def _record(decision: Decision) -> str:
    """The decision record as JSON, at most `DECISION_LIMIT` characters and always whole."""
    record = orjson.dumps(decision.to_dict(), option=orjson.OPT_NON_STR_KEYS).decode()
    if len(record) <= DECISION_LIMIT:
        return record
    top: dict[str, Any] = {"node": decision.node, "kind": decision.kind, "chosen": decision.chosen}
    top |= {"reason": decision.reason[:1000], "cost": decision.cost, "truncated": True}
    return orjson.dumps(top).decode()
