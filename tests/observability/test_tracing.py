"""OpenTelemetry traces, exported over OTLP/HTTP to a collector on 127.0.0.1: spans nest as the
calls do, carry each decision, mark failures, continue a gateway caller's trace, and never carry
message texts."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.config.loader import load_config
from modelyard.config.operations import TracingSpec
from modelyard.errors import (
    BudgetExceededError,
    ConfigError,
    RateLimitedError,
    UnavailableError,
)
from modelyard.evaluation.isolation import for_evaluation
from modelyard.local.classifier import ClassifierModel
from modelyard.model import Model, ModelInfo
from modelyard.observability.tracing import Traced, Tracing, _record, provider_attributes
from modelyard.topology import unwrap
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision, Message
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_collector import OtlpCollector, named
from tests.fakes.server import Fault, free_port

SECRET_QUESTION = "my card is Zanzibar-Quokka, what is my balance?"


def _config(endpoint: str, extra: str = "") -> str:
    return f"""
models:
  flaky:
    local: {{type: fake, default: {{error: unavailable}}}}
  steady:
    local: {{type: fake, default: "Marmalade-Otter"}}
    price: {{input: 1.0, output: 1.0}}
  other:
    local: {{type: fake, default: "Marmalade-Otter"}}
systems:
  main: {{type: fallback, chain: [flaky, steady]}}
  vote: {{type: ensemble, members: [steady, other], combine: vote}}
tracing:
  endpoint: {endpoint}
  service_name: support-desk
  headers: {{authorization: "Bearer ${{OTEL_TOKEN}}"}}
{extra}"""


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TOKEN", "collector-secret")


async def test_a_fallback_exports_its_system_and_each_attempt_as_nested_spans(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    text = _config(collector.url, "  decisions: true")
    async with modelyard.load(write_config(text)) as yard:
        await yard.complete("main", SECRET_QUESTION)
    spans = collector.wait_for(3)
    system, flaky, steady = (named(spans, n) for n in ("system main", "chat flaky", "chat steady"))
    assert system.parent_id == "" and system.service == "support-desk"
    assert flaky.parent_id == steady.parent_id == system.span_id
    assert len({s.trace_id for s in spans}) == 1
    assert flaky.error is not None and "unavailable" in flaky.error
    assert flaky.attributes["error.type"] == "unavailable"
    assert steady.error is None and system.error is None
    assert steady.attributes["gen_ai.usage.output_tokens"] > 0
    assert steady.attributes["modelyard.cost_usd"] > 0
    assert steady.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert system.attributes["modelyard.kind"] == "fallback"
    assert system.attributes["modelyard.answered_by"] == "steady"
    record = json.loads(system.attributes["modelyard.decision"])
    assert [child["node"] for child in record["children"]] == ["flaky", "steady"]
    assert "Zanzibar" not in json.dumps([s.attributes for s in spans])  # never a prompt
    assert all(h.get("authorization") == "Bearer collector-secret" for h in collector.headers)


async def test_a_model_answered_by_its_fallback_is_one_trace(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    lapsed = "  lapsed:\n    local: {type: fake, default: {error: unavailable}}\n"
    lapsed += "    fallbacks: [steady]\n  other:"
    text = _config(collector.url).replace("  other:", lapsed, 1)
    async with modelyard.load(write_config(text)) as yard:
        await yard.complete("lapsed", "hello")
    spans = collector.wait_for(3)
    roots = [s for s in spans if s.parent_id == ""]
    assert len(roots) == 1 and roots[0].name == "chat lapsed"
    assert roots[0].attributes["modelyard.cost_usd"] > 0
    assert len({s.trace_id for s in spans}) == 1
    assert named(spans, "chat steady").parent_id == roots[0].span_id


async def test_a_model_reached_as_another_models_fallback_brings_its_chains_span(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    # lapsed -> relay -> steady: relay's chain is a span of its own, under lapsed's chain, and
    # steady's attempt nests in it.
    chain = "  lapsed:\n    local: {type: fake, default: {error: unavailable}}\n"
    chain += "    fallbacks: [relay]\n"
    chain += "  relay:\n    local: {type: fake, default: {error: unavailable}}\n"
    chain += "    fallbacks: [steady]\n  other:"
    text = _config(collector.url).replace("  other:", chain, 1)
    async with modelyard.load(write_config(text)) as yard:
        await yard.complete("lapsed", "hello")
    spans = collector.wait_for(5)
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent_id == ""]
    assert root.name == "chat lapsed"
    relay_chain = by_id[named(spans, "chat steady").parent_id]
    assert relay_chain.name == "chat relay" and relay_chain.parent_id == root.span_id
    assert sorted(s.name for s in spans) == sorted(
        ["chat lapsed", "chat lapsed", "chat relay", "chat relay", "chat steady"]
    )


@pytest.mark.parametrize(
    ("setting", "decisions"),
    [("", False), ("  decisions: false", False), ("  decisions: true", True)],
)
async def test_ensemble_members_asked_together_are_siblings_under_the_system(
    setting: str, decisions: bool, collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    text = _config(collector.url, setting)
    async with modelyard.load(write_config(text)) as yard:
        await yard.complete("vote", "hello")
    spans = collector.wait_for(3)
    system = named(spans, "system vote")
    members = [named(spans, "chat steady"), named(spans, "chat other")]
    assert all(m.parent_id == system.span_id for m in members)
    assert system.attributes["modelyard.chosen"] == "steady"
    # A vote's record quotes the answers it counted: only with `decisions: true`.
    exported = json.dumps([s.attributes for s in spans]).lower()
    assert ("marmalade" in exported) is decisions
    assert ("modelyard.decision" in system.attributes) is decisions


async def test_a_stream_is_one_span_ended_with_its_answer_and_a_cut_stream_is_an_error(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    async with modelyard.load(write_config(_config(collector.url))) as yard:
        async for _ in yard.stream("steady", "hello"):
            pass
        chunks = yard.stream("main", "hello")
        await anext(chunks)
        await chunks.aclose()  # the caller stops reading
    # steady's stream; main cut: the system and its two members (waiting for a 5th, never
    # sent, took the collector's whole 10 s).
    spans = collector.wait_for(4)
    whole = [s for s in spans if s.name == "chat steady" and s.parent_id == ""]
    assert len(whole) == 1 and whole[0].error is None
    assert whole[0].attributes["gen_ai.usage.output_tokens"] > 0
    cut = named(spans, "system main")
    assert cut.error == "the stream ended without its answer"


def test_evaluation_runs_without_tracing(write_config: Callable[[str], Path]) -> None:
    loaded = load_config(write_config(_config("http://127.0.0.1:4318/v1/traces")))
    assert loaded.config.tracing is not None
    assert for_evaluation(loaded).config.tracing is None


@pytest.mark.parametrize(
    ("tracing", "expected"),
    [
        ("{exporter: console, endpoint: 'http://x:4318'}", "are for the otlp exporter"),
        ("{endpoint: 'ftp://user:pw@x/v1/traces'}", "must be an http:// or https:// URL"),
        ("{sample_ratio: 2}", "less than or equal to 1"),
        ("{exporter: jaeger}", "'otlp', 'console' or 'global'"),
        ("{exporter: global, sample_ratio: 0.5}", "'sample_ratio': the application's own"),
    ],
)
def test_a_bad_tracing_section_names_what_is_wrong(
    tracing: str, expected: str, write_config: Callable[[str], Path]
) -> None:
    text = _config("x").split("tracing:")[0] + f"tracing: {tracing}\n"
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(text))
    message = str(caught.value)
    assert expected in message and "tracing" in message and "pw" not in message


async def test_a_collector_that_is_down_costs_no_answer_and_its_url_secret_stays_out_of_logs(
    write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Port 9 (discard) refuses connections here; the exporter retries (quoting the URL, query
    # and all, in its warning), then gives up.
    text = _config("http://127.0.0.1:9/v1/traces?token=collector-query-secret", "  timeout: 3")
    async with modelyard.load(write_config(text)) as yard:
        assert (await yard.complete("main", "hello")).text == "Marmalade-Otter"
    quoting = [r for r in caplog.records if "/v1/traces" in r.getMessage()]
    assert quoting, "the exporter should have said where it could not export"
    assert "collector-query-secret" not in caplog.text and "collector-secret" not in caplog.text


class _SlowToClose(Model):
    """Streams two chunks; closing it waits (as a budget settles on a remote store)."""

    info = ModelInfo(name="slow-close", kind="fake")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        try:
            yield Chunk(text="a")
            yield Chunk(text="b")
        finally:
            await asyncio.sleep(10)


async def test_a_stream_cancelled_while_it_closes_still_ends_its_span(
    collector: OtlpCollector,
) -> None:
    tracing = Tracing(TracingSpec(endpoint=collector.url))
    traced = Traced(_SlowToClose(), tracing, system=False, config_version="v1")
    chunks = traced.stream(ChatRequest(messages=(Message(role="user", content="hi"),)))

    async def read_then_leave() -> None:
        await anext(chunks)
        await chunks.aclose()

    reader = asyncio.create_task(read_then_leave())
    await asyncio.sleep(0.05)  # the reader is closing the stream
    reader.cancel()  # the caller is cancelled meanwhile (a shutdown, a deadline)
    with pytest.raises(asyncio.CancelledError):
        await reader
    await tracing.aclose()
    span = named(collector.wait_for(1, timeout=2), "chat slow-close")
    assert span.error == "the stream ended without its answer"


async def test_a_collector_url_from_the_environment_keeps_its_secret_out_of_logs(
    write_config: Callable[[str], Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The endpoint the docs name as the default when the config sets none.
    endpoint = "http://127.0.0.1:9/v1/traces?token=environment-query-secret"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    text = _config("x").split("tracing:")[0] + "tracing: {timeout: 3}\n"
    async with modelyard.load(write_config(text)) as yard:
        assert (await yard.complete("main", "hello")).text == "Marmalade-Otter"
    assert [r for r in caplog.records if "/v1/traces" in r.getMessage()]
    assert "environment-query-secret" not in caplog.text


async def test_a_member_cancelled_once_the_vote_is_settled_is_not_an_error(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    text = _config(collector.url).replace(
        "systems:",
        """  quick:
    local: {type: fake, default: {text: "Marmalade-Otter", latency: 0.05}}
  slow:
    local: {type: fake, default: {text: "Marmalade-Otter", latency: 5}}
systems:
  quorum: {type: ensemble, members: [quick, other, slow], combine: vote, quorum: 2,
           wait: quorum}""",
    )
    async with modelyard.load(write_config(text)) as yard:
        await yard.complete("quorum", "hello")
        await asyncio.sleep(0.05)  # the straggler's cancellation lands on the loop's next turn
    spans = collector.wait_for(4)
    slow = named(spans, "chat slow")
    assert slow.attributes.get("modelyard.cancelled") is True and slow.error is None
    assert named(spans, "system quorum").error is None


def test_a_decision_record_too_long_for_a_span_stays_valid_json() -> None:
    children = tuple(
        Decision(node=f"member-{i}", kind="model", reason="answered " * 40) for i in range(100)
    )
    record = json.loads(_record(Decision(node="vote", kind="ensemble", children=children)))
    assert record["truncated"] is True and record["node"] == "vote"


HOSTED = """
providers:
  oa: {{type: openai, base_url: "{url}/v1", api_key: sk-test-not-a-real-key-0000}}
models:
  mini: {{provider: oa, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
systems:
  main: {{type: fallback, chain: [mini]}}
"""


RETRIED = HOSTED.replace(
    "api_key: sk-test-not-a-real-key-0000}",
    "api_key: sk-test-not-a-real-key-0000, retry: {{attempts: 2, initial_backoff: 0.01}}}",
)


async def _ask(yard: modelyard.Yard, stream: bool) -> None:
    if stream:
        async for _ in yard.stream("mini", "hello"):
            pass
    else:
        await yard.complete("mini", "hello")


@pytest.mark.parametrize("stream", [False, True])
async def test_each_try_of_a_retried_call_is_a_span_under_the_models(
    stream: bool, collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    upstream = FakeOpenAI()
    upstream.push(Fault(status=503), Fault(status=429, headers={"retry-after": "0.02"}))
    with upstream.running():
        text = RETRIED.format(url=upstream.url) + f"tracing: {{endpoint: {collector.url}}}\n"
        async with modelyard.load(write_config(text)) as yard:
            await _ask(yard, stream)
        sent = [r.headers["traceparent"].split("-")[2] for r in upstream.requests]
    spans = collector.wait_for(4)  # the model's and its 3 tries' (not 5: a 10 s wait)
    model = named(spans, "chat gpt-4o-mini-2024-07-18")
    tries = sorted(
        (s for s in spans if s.name == "attempt"), key=lambda s: s.attributes["modelyard.attempt"]
    )
    assert [t.attributes["modelyard.attempt"] for t in tries] == [1, 2, 3]
    assert all(t.parent_id == model.span_id for t in tries)
    assert [t.attributes.get("error.type") for t in tries] == ["overloaded", "rate_limited", None]
    statuses = [t.attributes.get("http.response.status_code") for t in tries]
    assert statuses == [503, 429, None]  # what the provider answered each failed try with
    assert tries[0].error is not None and tries[2].error is None
    assert [t.attributes.get("http.request.resend_count") for t in tries] == [None, 1, 2]
    assert tries[2].attributes["modelyard.retry_wait_ms"] == 20.0  # the Retry-After
    # Each request to the provider carries its own try's span.
    assert sent == [t.span_id for t in tries]
    # The call answered: the model's span has no error, and only it carries the tokens.
    assert model.error is None and model.attributes["gen_ai.usage.output_tokens"] > 0
    assert not any("gen_ai.usage.output_tokens" in t.attributes for t in tries)


async def test_a_call_whose_every_try_failed_ends_its_models_span_with_the_last_error(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    upstream = FakeOpenAI()
    upstream.push(Fault(status=503), Fault(status=503), Fault(status=429))
    with upstream.running():
        text = RETRIED.format(url=upstream.url) + f"tracing: {{endpoint: {collector.url}}}\n"
        async with modelyard.load(write_config(text)) as yard:
            with pytest.raises(RateLimitedError):
                await yard.complete("mini", "hello")
    spans = collector.wait_for(4)
    model = named(spans, "chat gpt-4o-mini-2024-07-18")
    assert model.attributes["error.type"] == "rate_limited" and model.error is not None
    tries = [s for s in spans if s.name == "attempt"]
    assert len(tries) == 3 and all(t.error is not None for t in tries)


async def test_a_try_that_got_no_reply_names_no_http_status(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    # Nothing listens: the error's own status (503, what the gateway would answer) is not the
    # provider's, so no try claims one.
    text = RETRIED.format(url=f"http://127.0.0.1:{free_port()}")
    text += f"tracing: {{endpoint: {collector.url}}}\n"
    async with modelyard.load(write_config(text)) as yard:
        with pytest.raises(UnavailableError) as caught:
            await yard.complete("mini", "hello")
    assert caught.value.upstream_status is None
    spans = collector.wait_for(4)
    tries = [s for s in spans if s.name == "attempt"]
    assert len(tries) == 3 and all(t.attributes["error.type"] == "unavailable" for t in tries)
    assert not any("http.response.status_code" in t.attributes for t in tries)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_request_carries_the_traceparent_of_its_models_span(
    stream: bool, collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    # A provider that traces (vLLM with --otlp-traces-endpoint) continues the request's trace.
    upstream = FakeOpenAI()
    with upstream.running():
        text = HOSTED.format(url=upstream.url) + f"tracing: {{endpoint: {collector.url}}}\n"
        async with modelyard.load(write_config(text)) as yard:
            if stream:
                async for _ in yard.stream("main", "hello"):
                    pass
            else:
                await yard.complete("main", "hello")
        sent = upstream.requests[-1].headers
    spans = collector.wait_for(3)
    _, trace_id, parent, _ = sent["traceparent"].split("-")
    # Named as the GenAI conventions ask, by the id the provider is sent; the config's name
    # for the model is an attribute.
    model = named(spans, "chat gpt-4o-mini-2024-07-18")
    assert model.attributes["modelyard.node"] == "mini"
    assert model.attributes["gen_ai.request.model"] == "gpt-4o-mini-2024-07-18"
    # The request is the model's one try (hosted models retry by default): its span's.
    attempt = named(spans, "attempt")
    assert (trace_id, parent) == (attempt.trace_id, attempt.span_id)
    assert attempt.parent_id == model.span_id and attempt.attributes["modelyard.attempt"] == 1
    assert model.attributes["gen_ai.provider.name"] == "openai"  # the conventions' name
    assert model.attributes["modelyard.provider"] == "oa"  # the config's
    assert model.attributes["gen_ai.response.id"].startswith("chatcmpl-")


async def test_without_tracing_a_provider_request_carries_no_traceparent(
    write_config: Callable[[str], Path],
) -> None:
    upstream = FakeOpenAI()
    with upstream.running():
        async with modelyard.load(write_config(HOSTED.format(url=upstream.url))) as yard:
            await yard.complete("main", "hello")
        sent = upstream.requests[-1].headers
    assert not {"traceparent", "tracestate"} & {h.lower() for h in sent}


EMBEDDER = """
providers:
  oa: {{type: openai, base_url: "{url}/v1", api_key: sk-test-not-a-real-key-0000}}
embedders:
  emb: {{provider: oa, id: text-embedding-3-small, price: {{input: 1000}}}}
budgets:
  - {{name: emb-cap, scope: model, selector: emb, limit: 0.5}}
tracing: {{endpoint: {collector}}}
"""


async def test_an_embedding_call_is_a_span_with_its_tokens_cost_and_failure(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    upstream = FakeOpenAI()
    with upstream.running():
        text = EMBEDDER.format(url=upstream.url, collector=collector.url)
        async with modelyard.load(write_config(text)) as yard:
            answer = await yard.embed("emb", ["hello world", SECRET_QUESTION])
            with pytest.raises(BudgetExceededError):  # its worst case alone passes the cap
                await yard.embed("emb", "x" * 100_000)
        sent = upstream.requests[-1].headers
    answered, refused = collector.wait_for(2)
    assert answered.name == refused.name == "embeddings text-embedding-3-small"
    assert answered.attributes["modelyard.node"] == "emb"
    assert answered.attributes["gen_ai.operation.name"] == "embeddings"
    # The conventions' name for the API (dashboards group by it), and the config's own name.
    assert answered.attributes["gen_ai.provider.name"] == "openai"
    assert answered.attributes["modelyard.provider"] == "oa"
    assert answered.attributes["gen_ai.request.model"] == "text-embedding-3-small"
    assert answered.attributes["gen_ai.usage.input_tokens"] == answer.usage.input_tokens > 0
    assert answered.attributes["modelyard.cost_usd"] == pytest.approx(answer.cost)
    assert answered.error is None and answered.parent_id == ""
    # The provider continues the trace, as a chat model's provider does.
    _, trace_id, parent, _ = sent["traceparent"].split("-")
    assert (trace_id, parent) == (answered.trace_id, answered.span_id)
    assert refused.error is not None and "budget_exceeded" in refused.error
    assert refused.attributes["error.type"] == "budget_exceeded"
    assert "Zanzibar" not in json.dumps([s.attributes for s in (answered, refused)])


def test_tracing_without_the_otel_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(ConfigError) as caught:
        modelyard.load(write_config(_config("http://127.0.0.1:4318/v1/traces")))
    assert "pip install 'modelyard[otel]'" in str(caught.value) and "tracing" in str(caught.value)


INSIDE = (
    HOSTED.split("systems:")[0]  # the provider and its model
    + """embedders:
  emb: {{provider: oa, id: text-embedding-3-small, price: {{input: 0.02}}}}
systems:
  front:
    type: router
    semantic: {{embedder: emb, threshold: 0.5, examples: {{chat: ["hello there"]}}}}
    routes: {{chat: mini}}
    default: chat
  faq: {{type: fallback, chain: [mini]}}
cache:
  targets: [faq]
  semantic: {{embedder: emb, systems: [faq], threshold: 0.9}}
tracing: {{endpoint: {collector}}}
"""
)


@pytest.mark.parametrize("system", ["front", "faq"])
async def test_an_embedding_a_node_makes_inside_a_chat_request_is_a_span_under_it(
    system: str, collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    # A semantic router and a semantic cache embed the question before a model answers.
    upstream = FakeOpenAI()
    with upstream.running():
        text = INSIDE.format(url=upstream.url, collector=collector.url)
        async with modelyard.load(write_config(text)) as yard:
            await yard.complete(system, SECRET_QUESTION, temperature=0)
        sent = [r.headers for r in upstream.requests if r.path.endswith("/embeddings")]
    spans = collector.wait_for(3)
    top = named(spans, f"system {system}")
    # The router embeds its examples on its first request too: a span each.
    embeddings = [s for s in spans if s.name == "embeddings text-embedding-3-small"]
    assert len(embeddings) == len(sent) > 0
    for embedding in embeddings:
        assert embedding.parent_id == top.span_id and embedding.trace_id == top.trace_id
        assert embedding.attributes["gen_ai.operation.name"] == "embeddings"
        assert embedding.attributes["gen_ai.usage.input_tokens"] > 0
        assert embedding.attributes["modelyard.cost_usd"] > 0
    # Each request to the provider continues the trace from its own span.
    parents = {tuple(h["traceparent"].split("-")[1:3]) for h in sent}
    assert parents == {(s.trace_id, s.span_id) for s in embeddings}
    assert "Zanzibar" not in json.dumps([s.attributes for s in spans])


@pytest.mark.local
async def test_a_local_embedder_a_classifier_calls_keeps_encoding_at_build_time(
    collector: OtlpCollector, write_config: Callable[[str], Path]
) -> None:
    # Tracing must not turn a synchronous embedder (MiniLM) into an async-only one: the
    # classifier is still trained when the config is built, and a request embeds its question
    # alone, under the classifier's span.
    text = f"""
embedders:
  mini: {{local: {{type: minilm}}}}
models:
  topic:
    local:
      type: classifier
      embedder: mini
      examples: {{billing: ["my invoice is wrong", "refund my payment"], other: ["hello"]}}
tracing: {{endpoint: {collector.url}}}
"""
    async with modelyard.load(write_config(text)) as yard:
        classifier = unwrap(yard.built.models["topic"])
        assert isinstance(classifier, ClassifierModel) and classifier.trained is not None
        answer = await yard.complete("topic", "my invoice is wrong")
    assert answer.text == "billing"
    spans = collector.wait_for(2)
    (embedding,) = [s for s in spans if s.attributes["modelyard.node"] == "mini"]
    assert embedding.name == f"embeddings {embedding.attributes['gen_ai.request.model']}"
    assert embedding.parent_id == named(spans, "chat topic").span_id


@pytest.mark.parametrize(
    ("kind", "provider", "expected"),
    [
        ("openai", "vllm", {"gen_ai.provider.name": "openai", "modelyard.provider": "vllm"}),
        (
            "anthropic",
            "claude",
            {"gen_ai.provider.name": "anthropic", "modelyard.provider": "claude"},
        ),
        ("gemini", "g", {"gen_ai.provider.name": "gcp.gemini", "modelyard.provider": "g"}),
        ("fake", None, {"gen_ai.provider.name": "local"}),
        ("classifier", "local", {"gen_ai.provider.name": "local"}),
    ],
)
def test_the_provider_is_named_as_the_genai_conventions_name_it(
    kind: str, provider: str | None, expected: dict[str, str]
) -> None:
    info = ModelInfo(name="m", kind=kind, provider=provider)
    assert provider_attributes(info) == expected
