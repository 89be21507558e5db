"""Loaded local models shared by the local tests: each loads once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.local.langdetect import LanguageDetector
from modelyard.local.llama_engine import LlamaEngine, resolve_gguf
from modelyard.local.minilm import MiniLMEmbedder, MiniLMRuntime, default_files
from modelyard.model import ModelInfo

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def engine() -> Iterator[LlamaEngine]:
    """SmolLM2-135M-Instruct on llama.cpp, one thread (fast even on a busy machine)."""
    loaded = LlamaEngine(resolve_gguf("smollm2", Path), n_ctx=1024, threads=1)
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The MiniLM embedder."""
    return MiniLMEmbedder(ModelInfo(name="minilm", kind="minilm"), MiniLMRuntime(*default_files()))


@pytest.fixture(scope="session")
def detector() -> LanguageDetector:
    """The fastText language detector."""
    return LanguageDetector()
