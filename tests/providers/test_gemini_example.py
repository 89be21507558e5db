"""examples/gemini.yaml: valid without a key, and a working system when pointed at Gemini."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import EXAMPLES
from tests.fakes.gemini_server import FakeGemini

import modelyard
from modelyard.providers.local_basic import DisabledModel

EXAMPLE = EXAMPLES / "gemini.yaml"
KEY = "AIzaSy-example-key-00000000000000"


async def test_example_builds_without_a_key_with_its_models_disabled() -> None:
    async with modelyard.load(EXAMPLE, env={}) as yard:
        assert set(yard.systems) == {"assistant", "quick"}
        assert all(isinstance(m, DisabledModel) for m in yard.models.values())
        assert any("GEMINI_API_KEY" in note for note in yard.notes)


async def test_example_pins_model_versions_with_prices() -> None:
    async with modelyard.load(EXAMPLE, env={}) as yard:
        for model in yard.models.values():
            assert model.info.model_id is not None and model.info.model_id.startswith("gemini-")
            assert model.info.price.input > 0 and model.info.price.output > 0


async def test_example_answers_through_its_fallback_system(tmp_path: Path) -> None:
    fake = FakeGemini(api_key=KEY)
    with fake.running():
        text = EXAMPLE.read_text(encoding="utf-8").replace(
            "    optional: true\n", f"    optional: true\n    base_url: {fake.url}/v1beta\n"
        )
        path = tmp_path / "gemini.yaml"
        path.write_text(text, encoding="utf-8")
        async with modelyard.load(path, env={"GEMINI_API_KEY": KEY}) as yard:
            response = await yard.complete("assistant", "Why is the sky blue?")
    assert response.text == "Gemini heard: Why is the sky blue?"
    assert response.model == "gemini-flash" and response.cost > 0
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.5-flash:generateContent"
