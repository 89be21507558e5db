"""examples/anthropic.yaml: builds without a key, and works end to end against a fake Anthropic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.errors import UnavailableError
from modelyard.providers.local_basic import DisabledModel
from tests.conftest import EXAMPLES
from tests.fakes.anthropic_server import FakeAnthropic, overloaded

EXAMPLE = EXAMPLES / "anthropic.yaml"


async def test_example_builds_without_a_key_and_says_why_its_models_are_off() -> None:
    async with modelyard.load(EXAMPLE, env={}) as yard:
        assert any("ANTHROPIC_API_KEY" in note for note in yard.notes)
        assert all(isinstance(m, DisabledModel) for m in yard.models.values())
        with pytest.raises(UnavailableError, match="ANTHROPIC_API_KEY"):
            await yard.complete("claude-haiku", "hi")


async def test_example_pins_dated_ids_and_prices_each_model() -> None:
    async with modelyard.load(EXAMPLE, env={"ANTHROPIC_API_KEY": "k"}) as yard:
        for model in yard.models.values():
            assert model.info.kind == "anthropic"
            assert model.info.model_id is not None and model.info.model_id[-8:].isdigit()
            assert model.info.price.input > 0 and model.info.price.output > 0
            assert model.info.price.cached_input is not None


async def test_example_system_falls_back_to_haiku_when_opus_is_overloaded(
    write_config: Callable[[str], Path],
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    with FakeAnthropic(api_key="k-example").running() as fake:
        assert isinstance(fake, FakeAnthropic)
        fake.push(overloaded(), overloaded(), overloaded())  # the first try and two retries
        quick = f"    base_url: {fake.url}\n    retry: {{initial_backoff: 0.01, max_backoff: 0.02}}"
        path = write_config(text.replace("    optional: true", quick))
        async with modelyard.load(path, env={"ANTHROPIC_API_KEY": "k-example"}) as yard:
            response = await yard.complete("assistant", "Hello")
        assert [r.json["model"] for r in fake.requests] == [
            *["claude-opus-4-5-20251101"] * 3,
            "claude-haiku-4-5-20251001",
        ]
    assert response.model == "claude-haiku" and response.text == "You said: Hello"
    assert response.cost > 0


async def test_example_sonnet_asks_for_1m_context_and_bills_a_long_prompt_at_its_tier(
    write_config: Callable[[str], Path],
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    with FakeAnthropic(api_key="k-example").running() as fake:
        assert isinstance(fake, FakeAnthropic)
        path = write_config(text.replace("    optional: true", f"    base_url: {fake.url}"))
        async with modelyard.load(path, env={"ANTHROPIC_API_KEY": "k-example"}) as yard:
            response = await yard.complete("claude-sonnet", "x " * 450_000)
        sent = fake.requests[0]
        assert "context-1m-2025-08-07" in sent.headers["anthropic-beta"]
    usage = response.usage
    assert usage is not None and usage.input_tokens > 200_000
    # Anthropic's long-context rates for Sonnet 4.5: $6 input, $22.50 output.
    assert response.cost == pytest.approx(
        (usage.input_tokens * 6.0 + usage.output_tokens * 22.5) / 1e6
    )
