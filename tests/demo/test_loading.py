"""What the demo says while a config's local models load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from modelyard.config.build import build
from modelyard.config.loader import load_config
from modelyard.demo.loading import ReportingResources, local_models, resource_name

NAMES = {"classifier": ["intent"], "retriever": ["faq", "kb"]}


def test_a_load_is_named_in_words() -> None:
    assert resource_name("classifier|ab12", NAMES) == (
        "intent (classifier): embedding and fitting its labelled examples"
    )
    assert resource_name("retriever|cd34", NAMES) == "a FAQ retriever: embedding its knowledge base"
    assert resource_name("llama_cpp|/x/SmolLM2-135M.Q4_1.gguf|2048|1") == (
        "SmolLM2-135M.Q4_1 on llama.cpp"
    )
    assert resource_name("unknown|x") == "unknown"


SEMANTIC = """
embedders:
  hash: {local: {type: hashing, dimensions: 16}}
models:
  a: {local: {type: fake}}
  b: {local: {type: fake}}
systems:
  pick:
    type: router
    semantic: {embedder: hash, examples: {a: [hello], b: [bye]}}
    default: a
    routes: {a: a, b: b}
"""


def test_each_load_is_told_once_when_it_starts_and_when_it_ends(
    write_config: Callable[[str], Path],
) -> None:
    heard: list[tuple[str, float | None]] = []
    loaded = load_config(write_config(SEMANTIC))
    resources = ReportingResources(
        listener=lambda what, s: heard.append((what, s)), names=local_models(loaded.config)
    )
    build(loaded, resources)
    build(loaded, resources)  # a reload reuses what is loaded: nothing more to tell
    assert [what for what, _ in heard] == [
        "semantic routes: embedding their example utterances"
    ] * 2
    assert heard[0][1] is None and isinstance(heard[1][1], float)
    assert local_models(loaded.config) == {"fake": ["a", "b"]}
