"""Extended thinking asked of a model that is not Anthropic's: OpenAI's `reasoning_effort` and
Gemini's `thinkingBudget` (checked against the official SDKs' types), history reasoning left out
(it is signed by the provider that wrote it), and a model whose `capabilities.reasoning` is off
sent none, with its decision saying so."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import types as gt
from tests.conftest import ROOMY
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openai_types import check_request
from tests.providers.test_openai_adapter import KEY
from tests.providers.test_openai_adapter import fake as fake  # the module-scoped server

import modelyard
from modelyard.errors import BadRequestError
from modelyard.providers import gemini_wire, openai_wire
from modelyard.providers.remote import THINKING_DROPPED
from modelyard.streaming import collect
from modelyard.types import ChatRequest, Message, RedactedThinkingPart, Thinking, ThinkingPart

HISTORY = (
    Message(role="user", content="2+2?"),
    Message(
        role="assistant",
        content="4",
        thinking=(
            ThinkingPart(text="two and two", signature="sig"),
            RedactedThinkingPart(data="x"),
        ),
    ),
    Message(role="user", content="and 3+3?"),
)


def asked(thinking: Thinking | None) -> ChatRequest:
    return ChatRequest(messages=HISTORY, max_tokens=20_000, thinking=thinking)


# --- OpenAI -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "effort"),
    [(1024, "low"), (4000, "low"), (4096, "medium"), (10_000, "medium"), (31_999, "high")],
)
def test_a_budget_becomes_the_reasoning_effort_it_comes_closest_to(
    budget: int, effort: str
) -> None:
    body = openai_wire.to_wire(asked(Thinking(budget_tokens=budget)), "o4-mini", stream=False)
    assert body["reasoning_effort"] == effort
    check_request(body)


@pytest.mark.parametrize("thinking", [None, Thinking(type="adaptive"), Thinking(type="disabled")])
def test_no_budget_leaves_the_models_own_effort(thinking: Thinking | None) -> None:
    assert "reasoning_effort" not in openai_wire.to_wire(asked(thinking), "o4-mini", stream=False)


def test_openai_leaves_the_historys_reasoning_out() -> None:
    body = openai_wire.to_wire(asked(Thinking(budget_tokens=2048)), "o4-mini", stream=False)
    assert body["messages"][1] == {"role": "assistant", "content": "4"}
    assert b"two and two" not in orjson.dumps(body)


# --- Gemini -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thinking", "config"),
    [
        (Thinking(budget_tokens=2048), {"thinkingBudget": 2048}),
        (Thinking(type="adaptive"), {"thinkingBudget": -1}),
        (Thinking(type="disabled"), None),
        (None, None),
    ],
)
def test_gemini_gets_a_thinking_budget(thinking: Thinking | None, config: Any) -> None:
    body = gemini_wire.to_wire(asked(thinking))
    gt.GenerationConfig.model_validate_json(orjson.dumps(body["generationConfig"]))
    assert body["generationConfig"].get("thinkingConfig") == config


def test_gemini_leaves_the_historys_reasoning_out() -> None:
    body = gemini_wire.to_wire(asked(Thinking(budget_tokens=2048)))
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "4"}]}


# --- which model gets it, against the fake OpenAI on a socket ---------------------------------

CONFIG = """
providers:
  oa:
    type: openai
    base_url: {url}/v1
    api_key: ${{OPENAI_KEY}}
    timeouts: {timeouts}
    retry: {{attempts: 0}}
    breaker: {{enabled: false}}
    limits: {{learn: false}}
x-price: &price {{input: 1, output: 2}}
models:
  mini: {{provider: oa, id: gpt-4o-mini, price: *price}}
  thinker: {{provider: oa, id: o4-mini, price: *price, capabilities: {{reasoning: true}}}}
  wrongly: {{provider: oa, id: gpt-4o-mini, price: *price, capabilities: {{reasoning: true}}}}
"""


@pytest.fixture
async def yard(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path]
) -> AsyncIterator[modelyard.Yard]:
    fake.reset()
    path = write_config(CONFIG.format(url=fake.url, timeouts=ROOMY), "config.yaml")
    async with modelyard.load(path, env={"OPENAI_KEY": KEY}) as loaded:
        yield loaded


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_reasoning_model_gets_the_effort_and_its_decision_says_nothing_dropped(
    yard: modelyard.Yard, fake: FakeOpenAI, streamed: bool
) -> None:
    request = asked(Thinking(budget_tokens=10_000))
    if streamed:
        response = await collect(yard.stream("thinker", request))
    else:
        response = await yard.complete("thinker", request)
    assert fake.requests[-1].json["reasoning_effort"] == "medium"
    assert response.decision is not None and "thinking" not in response.decision.details


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_model_that_does_not_reason_is_sent_no_thinking_and_its_decision_says_so(
    yard: modelyard.Yard,
    fake: FakeOpenAI,
    streamed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = asked(Thinking(budget_tokens=10_000))
    with caplog.at_level(logging.WARNING, logger="modelyard.providers"):
        for _ in range(2):
            if streamed:
                response = await collect(yard.stream("mini", request))
            else:
                response = await yard.complete("mini", request)
    assert "reasoning_effort" not in fake.requests[-1].json
    assert response.decision is not None
    assert response.decision.details["thinking"] == THINKING_DROPPED
    logged = [r.getMessage() for r in caplog.records if "thinking" in r.getMessage()]
    assert logged == [f"model mini: thinking {THINKING_DROPPED}"]  # once a model


async def test_disabled_thinking_on_a_model_that_does_not_reason_drops_nothing_worth_saying(
    yard: modelyard.Yard,
) -> None:
    response = await yard.complete("mini", asked(Thinking(type="disabled")))
    assert response.decision is not None and "thinking" not in response.decision.details


async def test_a_model_said_to_reason_that_does_not_answers_the_apis_400(
    yard: modelyard.Yard,
) -> None:
    # What `capabilities.reasoning: false` spares the models that do not reason.
    with pytest.raises(BadRequestError, match="'reasoning_effort' is not supported"):
        await yard.complete("wrongly", asked(Thinking(budget_tokens=2048)))
