"""The W3C `traceparent` of the span in progress, added to a provider request's headers: a
provider that traces (vLLM with `--otlp-traces-endpoint`, a proxy in front of one) continues the
request's trace. Without OpenTelemetry installed, or with no span in progress, nothing is added
(one context lookup a request)."""

from __future__ import annotations

from collections.abc import Mapping

try:
    from opentelemetry import propagate, trace
except ImportError:  # the `otel` extra is not installed: there is never a span to pass on
    propagate = trace = None  # type: ignore[assignment]


def with_trace(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers`, plus `traceparent` (and `tracestate`) when a span is in progress."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return headers
    carried = dict(headers)
    propagate.inject(carried)
    return carried
