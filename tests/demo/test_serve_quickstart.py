"""`modelyard serve examples/quickstart.yaml` answers the official OpenAI SDK with real local
models and real routing: an FAQ question and a product question that SmolLM2 answers, each
checked through the `x-modelyard-model` header and the request's decision record."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.gateway.conftest import Running, serve_gateway  # noqa: F401  (the fixture)

from ..conftest import EXAMPLES

pytestmark = pytest.mark.local


def _nodes(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield record
    for child in record.get("children", ()):
        yield from _nodes(child)


@pytest.fixture
def quickstart(
    serve_gateway: Callable[..., Running],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Running:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    shutil.copytree(EXAMPLES / "data" / "acme", tmp_path / "data" / "acme")
    return serve_gateway(text=(EXAMPLES / "quickstart.yaml").read_text(encoding="utf-8"))


def _ask(running: Running, question: str) -> tuple[str, str, dict[str, Any]]:
    client = openai.OpenAI(base_url=running.openai_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": question}], max_tokens=16
    )
    answer = raw.parse().choices[0].message.content or ""
    record = httpx2.get(f"{running.url}/v1/requests/{raw.headers['x-request-id']}").json()
    return raw.headers["x-modelyard-model"], answer, record


def test_an_faq_question_and_a_generated_answer_over_the_openai_sdk(
    quickstart: Running,
) -> None:
    model, answer, record = _ask(quickstart, "How do I reset my password?")
    assert model == "faq"
    assert answer.startswith('On the sign-in page choose "Forgot password?"')
    triage = next(n for n in _nodes(record["decision"]) if n["node"] == "triage")
    assert triage["details"]["label"] == "account"

    model, answer, record = _ask(quickstart, "Is the Ridge 40 backpack waterproof?")
    assert model == "smollm2"
    assert answer.strip()
    assert record["output_tokens"] <= 16
    nodes = {n["node"]: n for n in _nodes(record["decision"])}
    assert nodes["triage"]["details"]["label"] == "generalist"
    assert nodes["escalation"]["chosen"] == "smollm2"
    assert nodes["gpt-4o-mini"]["reason"].startswith("skipped: provider 'openai'")
