"""Helpers for pattern tests: configs of fake models priced at $1 per output token, so every
cost is the number of output tokens the answers take (len(text) / 4, rounded up)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.prices import estimate_tokens
from modelyard.errors import ConfigError
from modelyard.streaming import collect
from modelyard.types import ChatResponse, user
from modelyard.yard import Yard

PRICE = "price: {input: 0, output: 1000000}"
"""$1 per output token, input free."""


HOSTED = """
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}", optional: true}
models:
  hosted:
    provider: openai
    id: gpt-4o-mini-2024-07-18
    price: {input: 0.15, output: 0.6}"""
"""A hosted model (its provider optional) to put among a config's models: `with_hosted`."""


def with_hosted(text: str) -> str:
    """`text` (a config without `providers:`) with the model `hosted` among its models."""
    return text.replace("\nmodels:", HOSTED, 1)


def dollars(text: str) -> float:
    """What an answer of `text` costs at PRICE."""
    return float(estimate_tokens(text))


async def ask(yard: Yard, name: str, streamed: bool, text: str = "which one?") -> ChatResponse:
    """System `name`'s answer to `text`, streamed (and collected) or whole."""
    model = yard.get(name)
    request = user(text)
    return await (collect(model.stream(request)) if streamed else model.complete(request))


@pytest.fixture
def yard_of(write_config: Callable[[str], Path]) -> Callable[[str], Yard]:
    """Load a config given as YAML text."""

    def load(text: str) -> Yard:
        return modelyard.load(write_config(text))

    return load


@pytest.fixture
def config_error(write_config: Callable[[str], Path]) -> Callable[[str], ConfigError]:
    """The ConfigError loading a YAML text raises."""

    def load(text: str) -> ConfigError:
        with pytest.raises(ConfigError) as caught:
            modelyard.load(write_config(text))
        return caught.value

    return load
