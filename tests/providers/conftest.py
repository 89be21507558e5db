"""Fixtures the provider tests share: the fake Anthropic on a socket and a yard on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import ROOMY
from tests.fakes.anthropic_server import FakeAnthropic
from tests.providers.test_anthropic_adapter import CONFIG, KEY, MODEL_ID

import modelyard


@pytest.fixture(scope="module")
def claude_fake() -> Iterator[FakeAnthropic]:
    """The fake Anthropic, taking the adapter tests' KEY."""
    server = FakeAnthropic(api_key=KEY)
    with server.running():
        yield server


@pytest.fixture
async def claude_yard(
    claude_fake: FakeAnthropic, write_config: Callable[[str], Path]
) -> AsyncIterator[modelyard.Yard]:
    """The adapter tests' config on `claude_fake` (reset, no turns scripted), with room for
    8,000 output tokens: enough for a thinking budget."""
    claude_fake.reset()
    claude_fake.turns.clear()
    text = CONFIG.format(url=claude_fake.url, model_id=MODEL_ID, timeouts=ROOMY)
    text = text.replace("1000", "8000")
    async with modelyard.load(write_config(text), env={"ANTHROPIC_API_KEY": KEY}) as loaded:
        yield loaded
