"""A call that failed after its provider received it is billed, and recorded so: the ledger row
carries the tokens its estimated cost was worked out from, marked estimated, so cost and tokens
reconcile. Against the fake OpenAI on a real socket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import modelyard
from modelyard.cost.ledger import SqliteLedgerFile
from modelyard.cost.prices import estimate_input_tokens, estimate_tokens
from modelyard.errors import ModelTimeoutError
from modelyard.types import Usage, user
from tests.conftest import tight_limits
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault

KEY = "sk-modelyard-TEST-tokens-0001"
TIGHT = "{connect: 1.0, total: 1.0, first_token: 0.3, stall: 0.3}"
"""The limits the calls that time out meet (marked `tight`)."""
tight = tight_limits(TIGHT)
CONFIG = """
providers:
  oa:
    type: openai
    base_url: {url}/v1
    api_key: {key}
    timeouts: {timeouts}
    retry: {{attempts: {retries}, initial_backoff: 0.01, jitter: none}}
    breaker: {{enabled: false}}
    limits: {{learn: false}}
models:
  mini: {{provider: oa, id: gpt-4o-mini, price: {{input: 0.15, output: 0.60}}}}
embedders:
  emb: {{provider: oa, id: text-embedding-3-small, price: {{input: 0.02}}}}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    with server.running():
        yield server


async def ledger_rows(path: Path) -> list[tuple[Any, ...]]:
    ledger = SqliteLedgerFile(path.parent / ".modelyard" / path.name / "ledger.db")
    rows = await ledger.query("SELECT model, cost, input_tokens, tokens_estimated FROM spend")
    await ledger.aclose()
    return rows


@tight
@pytest.mark.parametrize("retries", [0, 1])
async def test_a_chat_call_that_timed_out_after_sending_is_recorded_with_its_tokens(
    fake: FakeOpenAI, write_config: Callable[[str], Path], retries: int, timeouts: str
) -> None:
    fake.reset()
    for _ in range(retries + 1):
        fake.push(Fault(hang=True))
    path = write_config(CONFIG.format(url=fake.url, key=KEY, retries=retries, timeouts=timeouts))
    request = user("What is the capital of France?")
    async with modelyard.load(path) as yard:
        with pytest.raises(ModelTimeoutError) as caught:
            await yard.get("mini").complete(request)
        price = yard.models["mini"].info.price
    tokens = estimate_input_tokens(request) * (retries + 1)  # every try was received
    assert caught.value.usage == Usage(input_tokens=tokens, estimated=True)
    [(model, cost, input_tokens, estimated)] = await ledger_rows(path)
    assert (model, input_tokens, estimated) == ("mini", tokens, 1)
    assert cost == pytest.approx(price.cost(Usage(input_tokens=tokens))) and cost > 0


@tight
async def test_an_embedding_call_that_timed_out_after_sending_is_recorded_with_its_tokens(
    fake: FakeOpenAI, write_config: Callable[[str], Path], timeouts: str
) -> None:
    fake.reset()
    fake.push(Fault(hang=True))
    path = write_config(CONFIG.format(url=fake.url, key=KEY, retries=0, timeouts=timeouts))
    texts = ("one", "two words")
    async with modelyard.load(path) as yard:
        with pytest.raises(ModelTimeoutError):
            await yard.embed("emb", texts)
    tokens = sum(estimate_tokens(text) for text in texts)
    [(model, cost, input_tokens, estimated)] = await ledger_rows(path)
    assert (model, input_tokens, estimated) == ("emb", tokens, 1)
    assert cost == pytest.approx(tokens * 0.02 / 1e6) and cost > 0


async def test_an_answered_call_is_recorded_with_the_providers_tokens(
    fake: FakeOpenAI, write_config: Callable[[str], Path], timeouts: str
) -> None:
    fake.reset()
    path = write_config(CONFIG.format(url=fake.url, key=KEY, retries=0, timeouts=timeouts))
    async with modelyard.load(path) as yard:
        answer = await yard.complete("mini", "hi")
    [(_, _, input_tokens, estimated)] = await ledger_rows(path)
    assert (input_tokens, estimated) == (answer.usage.input_tokens, 0)
