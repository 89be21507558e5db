"""W3C trace context across modelyard's edges: a gateway request continues its caller's trace
(`continued`), and a provider request carries the `traceparent` of the span in progress
(`with_trace`), so a provider that traces (vLLM with `--otlp-traces-endpoint`) continues it.
Without OpenTelemetry installed, or with no span in progress, nothing is added (one context
lookup a request)."""

from __future__ import annotations

from collections.abc import Mapping

try:
    from opentelemetry import context, propagate, trace
except ImportError:  # the `otel` extra is not installed: there is never a span to pass on
    context = propagate = trace = None  # type: ignore[assignment]


def with_trace(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers`, plus `traceparent` (and `tracestate`) when a span is in progress."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return headers
    carried = dict(headers)
    propagate.inject(carried)
    return carried


class continued:  # used as a function: `with continued(headers):`
    """Run the block inside the caller's trace, as its W3C `traceparent` header names it (only
    made when the config traces, so OpenTelemetry is there). A class, not a `@contextmanager`
    generator: every traced gateway request enters one."""

    __slots__ = ("_headers", "_token")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers

    def __enter__(self) -> None:
        self._token = context.attach(propagate.extract(self._headers))

    def __exit__(self, *exc_info: object) -> None:
        context.detach(self._token)
