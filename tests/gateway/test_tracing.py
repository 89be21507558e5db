"""A gateway request, chat or embeddings, continues its caller's trace (W3C traceparent) in the
spans it exports."""

from __future__ import annotations

from collections.abc import Callable

from openai import OpenAI
from tests.fakes.otlp_collector import OtlpCollector, named
from tests.gateway.conftest import Running


def test_the_gateway_continues_the_callers_trace(
    collector: OtlpCollector, serve_gateway: Callable[..., Running]
) -> None:
    running = serve_gateway(f"tracing: {{endpoint: {collector.url}}}\n")
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = OpenAI(base_url=running.openai_url, api_key="unused", max_retries=0)
    answer = client.chat.completions.with_raw_response.create(
        model="support",
        messages=[{"role": "user", "content": "ping"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    spans = collector.wait_for(3)
    system = named(spans, "system support")
    assert system.trace_id == trace_id and system.parent_id == parent
    assert system.attributes["modelyard.request_id"] == answer.headers["x-request-id"]
    assert {s.trace_id for s in spans} == {trace_id}


def test_an_embeddings_call_continues_the_callers_trace(
    collector: OtlpCollector, serve_gateway: Callable[..., Running]
) -> None:
    running = serve_gateway(f"tracing: {{endpoint: {collector.url}}}\n")
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = OpenAI(base_url=running.openai_url, api_key="unused", max_retries=0)
    answer = client.embeddings.with_raw_response.create(
        model="hash", input=["ping"], extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"}
    )
    (span,) = collector.wait_for(1)
    assert span.name == "embeddings hash"
    assert span.trace_id == trace_id and span.parent_id == parent
    assert span.attributes["modelyard.request_id"] == answer.headers["x-request-id"]
    assert span.attributes["gen_ai.provider.name"] == "local"
    assert span.attributes["gen_ai.usage.input_tokens"] > 0
