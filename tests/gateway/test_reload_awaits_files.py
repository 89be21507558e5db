"""A config refused because a file it names is missing is loaded once that file appears."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tests.gateway.conftest import SYSTEMS, until, watched

from modelyard.config.build import build
from modelyard.config.loader import parse
from modelyard.errors import ConfigError
from modelyard.live import LiveConfig

FAQ = "faq/answers.jsonl"
RETRIEVER = f"""  faq:
    local: {{type: retriever, embedder: hash, knowledge_base: {FAQ}}}
"""
WITH_FAQ = SYSTEMS.replace("embedders:", RETRIEVER + "embedders:")
ENTRY = {"question": "where is my order", "answer": "on its way"}


def write_faq(folder: Path, entry: dict[str, str]) -> None:
    faq = folder / FAQ
    faq.parent.mkdir(exist_ok=True)
    faq.write_text(json.dumps(entry) + "\n")


@pytest.mark.parametrize(
    ("local", "named"),
    [
        (f"{{type: retriever, embedder: hash, knowledge_base: {FAQ}}}", FAQ),
        (
            "{type: classifier, embedder: hash, examples_file: intents.jsonl}",
            "intents.jsonl",
        ),
        ("{type: replay, data: calls.jsonl, format: jsonl, model: m}", "calls.jsonl"),
        ("{type: llama_cpp, gguf: weights/tiny.gguf}", "weights/tiny.gguf"),
        ("{type: callable, factory: 'json:loads', files: {table: rows.csv}}", "rows.csv"),
    ],
)
def test_a_refused_build_names_the_missing_file_it_was_to_read(
    tmp_path: Path, local: str, named: str
) -> None:
    text = SYSTEMS.replace("embedders:", f"  it:\n    local: {local}\n" + "embedders:")
    with pytest.raises(ConfigError) as refused:
        build(parse(text, path=str(tmp_path / "config.yaml"), env={}))
    assert refused.value.missing == (tmp_path / named,)


def test_a_refusal_for_another_reason_names_no_file(tmp_path: Path) -> None:
    """A file the build writes (the response cache's) is not one it waits for."""
    text = SYSTEMS.replace("chain: [broken, cheap]", "chain: [broken, broken]")
    with pytest.raises(ConfigError) as refused:
        build(parse(text + "cache: {backend: sqlite}\n", path=str(tmp_path / "c.yaml"), env={}))
    assert refused.value.missing == ()


async def test_a_reload_refused_for_a_missing_file_awaits_it(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    live = LiveConfig(config)
    try:
        config.write_text(WITH_FAQ)
        with pytest.raises(ConfigError, match=r"answers\.jsonl"):
            await live.reload()
        assert live.awaited == {tmp_path / FAQ: None}
        write_faq(tmp_path, ENTRY)
        await live.reload()
        assert live.awaited == {}
    finally:
        await live.aclose()


async def test_a_watched_config_refused_for_a_missing_file_loads_when_it_appears(
    tmp_path: Path,
) -> None:
    """The config file is not touched again: the file it named appearing (in a folder that did
    not exist either) is what has it loaded, once that file has held still."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        config.write_text(WITH_FAQ)
        assert await until(lambda: bool(app.live.awaited))
        assert "answers.jsonl" in app.live.history[-1]["error"]
        write_faq(tmp_path, ENTRY)
        assert await until(lambda: "faq" in app.live.current.built.models)
        assert app.live.current.loaded.text == WITH_FAQ
        assert [entry["version"] is None for entry in app.live.history] == [True, False]


async def test_a_file_that_appeared_unusable_is_tried_again_when_it_changes(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        config.write_text(WITH_FAQ)
        assert await until(lambda: bool(app.live.awaited))
        write_faq(tmp_path, {"answer": "a question is missing"})
        assert await until(lambda: len(app.live.history) == 2)
        assert "'question' must be" in app.live.history[-1]["error"]
        write_faq(tmp_path, ENTRY)
        assert await until(lambda: "faq" in app.live.current.built.models)


async def test_a_file_written_in_pieces_is_loaded_only_whole(tmp_path: Path) -> None:
    """Each piece alone is a valid knowledge base: the retry waits for the file to hold still."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        config.write_text(WITH_FAQ)
        assert await until(lambda: bool(app.live.awaited))
        (tmp_path / "faq").mkdir()
        with (tmp_path / FAQ).open("w") as handle:
            for i in range(4):
                handle.write(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n")
                handle.flush()
                await asyncio.sleep(0.5)
        assert await until(lambda: "faq" in app.live.current.built.models)
        assert app.live.current.built.models["faq"].describe()["entries"] == 4
        assert len(app.live.history) == 2
