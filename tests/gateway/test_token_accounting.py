"""Every upstream call a request makes is billed with its tokens under its own model, in the
ledger and in `modelyard_tokens_total`, once: a pipeline's draft, an ensemble's losing members
and its judge, a cascade's rejected cheap answer and its verifier, whole or streamed, and the
calls that had finished when the client left."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable

import httpx2
import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running
from tests.gateway.test_abandoned_spend import recorded
from tests.gateway.test_embedding_spend import ledger_rows


def config(url: str) -> str:
    models = "\n".join(
        f"  {name}: {{provider: up, id: {model_id}, price: {{input: 1, output: 2}}}}"
        for name, model_id in [
            ("draft", "gpt-4o-mini"),
            ("final", "gpt-4o"),
            ("a", "gpt-4o-mini"),
            ("b", "gpt-4o-mini"),
            ("c", "gpt-4o-mini"),
            ("judge", "gpt-4o"),
            ("cheap", "gpt-4o-mini"),
            ("verifier", "gpt-4o-mini"),
            ("big", "gpt-4o"),
        ]
    )
    return f"""
providers:
  up: {{type: openai, base_url: "{url}/v1", api_key: {UPSTREAM_KEY}, retry: {{attempts: 0}}}}
models:
{models}
systems:
  pipe:
    type: pipeline
    stages:
      - {{name: draft, model: draft}}
      - {{name: final, model: final, input: "Improve: {{previous}}"}}
  trio:
    type: ensemble
    members: [a, b, c]
    combine: judge
    judge: judge
  steps:
    type: cascade
    stages:
      - {{model: cheap, threshold: 0.99, estimator: {{type: verifier, model: verifier}}}}
      - {{model: big}}
ledger: {{flush_interval: 0.05}}
"""


# The model each upstream call was made for, by the id it was sent with and its order.
CALLS = {
    "pipe": ["draft", "final"],
    "trio": ["a", "b", "c", "judge"],
    "steps": ["cheap", "verifier", "big"],
}


def upstream_tokens(upstream: FakeOpenAI) -> tuple[int, int]:
    """The input and output tokens the fake upstream billed for every chat call it answered."""
    usages = [
        upstream.completion(r.json)["usage"]
        for r in upstream.requests
        if r.path.endswith("/chat/completions")
    ]
    return sum(u["prompt_tokens"] for u in usages), sum(u["completion_tokens"] for u in usages)


def metric_tokens(running: Running, system: str) -> Counter[tuple[str, str]]:
    """`modelyard_tokens_total` of `system`, by (model, direction)."""
    text = httpx2.get(f"{running.url}/metrics").text
    found: Counter[tuple[str, str]] = Counter()
    pattern = r'modelyard_tokens_total\{direction="(\w+)",model="([^"]*)",system="(\w+)"\} (\S+)'
    for direction, model, name, value in re.findall(pattern, text):
        if name == system:
            found[(model, direction)] += int(float(value))
    return found


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("system", list(CALLS))
def test_every_upstream_calls_tokens_are_in_the_ledger_and_metrics_once(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI, system: str, stream: bool
) -> None:
    running = serve_gateway(text=config(upstream.url))
    reply = httpx2.post(
        f"{running.url}/v1/chat/completions",
        json={
            "model": system,
            "messages": [{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
            "stream": stream,
        },
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    calls = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert len(calls) == len(CALLS[system])  # the cascade escalated; the judge was asked
    sent_in, sent_out = upstream_tokens(upstream)
    rows = ledger_rows(running, reply.headers["x-request-id"])
    assert {r["model"] for r in rows} == set(CALLS[system])
    assert sum(r["input_tokens"] for r in rows) == sent_in
    assert sum(r["output_tokens"] for r in rows) == sent_out
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in rows)
    assert sum(r["answered"] for r in rows) == 1
    metrics = metric_tokens(running, system)
    by_model_in = {m: n for (m, d), n in metrics.items() if d == "input"}
    assert by_model_in == {r["model"]: r["input_tokens"] for r in rows}
    assert sum(n for (_, d), n in metrics.items() if d == "output") == sent_out


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_request_its_client_left_bills_the_tokens_of_its_finished_calls_once(
    serve_gateway: Callable[..., Running],
    upstream: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    # The cascade's cheap answer and its verdict came back, and the client left while `big`
    # was answering. The ledger billed what those two calls cost under the system's name,
    # with only the estimate's tokens, and the metrics counted none of their tokens.
    running = serve_gateway(text=config(upstream.url))
    running.app.chat.leave_watch_after = 0.05
    records = recorded(running, monkeypatch)
    upstream.push(Fault(), Fault(), Fault(chunk_delay=0.3) if stream else Fault(hang=True))
    url = f"{running.url}/v1/chat/completions"
    body = {"model": "steps", "messages": [{"role": "user", "content": "Is it? Say so."}]}
    if stream:
        with httpx2.stream("POST", url, json={**body, "stream": True}, timeout=10) as reply:
            assert reply.status_code == 200
            next(line for line in reply.iter_lines() if '"content":"' in line)  # then leave
    else:
        with pytest.raises(httpx2.ReadTimeout):
            httpx2.post(url, json=body, timeout=1.0)
    started = time.monotonic()
    while not records and time.monotonic() - started < 10:
        time.sleep(0.02)
    (record,) = records
    assert record.status == 499
    rows = {r["model"]: r for r in ledger_rows(running, record.id)}
    calls = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    for name, call in zip(["cheap", "verifier"], calls, strict=False):
        usage = upstream.completion(call.json)["usage"]
        billed = (usage["prompt_tokens"], usage["completion_tokens"], 0)
        row = rows.pop(name)
        assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == billed
    (cut,) = rows.values()  # the estimate of the call in flight
    assert cut["tokens_estimated"] and cut["input_tokens"] > 0
    rows = {r["model"]: r for r in ledger_rows(running, record.id)}
    assert sum(r["cost"] for r in rows.values()) == pytest.approx(record.cost)
    assert metric_tokens(running, "steps") == Counter(
        {(m, d): r[f"{d}_tokens"] for m, r in rows.items() for d in ("input", "output")}
    )
