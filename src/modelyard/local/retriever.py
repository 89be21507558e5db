"""An FAQ answerer by semantic retrieval: the answer of the knowledge-base question closest in
meaning to the user's message.

The questions (each entry may list several paraphrases) are embedded once and kept in
`Resources`, so a hot reload does not re-embed them. An entry scores the best cosine similarity
of any of its paraphrases to the message; `confidence` is the best entry's score, clipped to
[0, 1]. With all-MiniLM-L6-v2, paraphrases of one question typically score 0.6-0.95 and
unrelated questions 0.0-0.3 — scores are absolute, not relative, so one threshold means the same
thing for every message.

It always answers and leaves the decision to the cascade or router reading its confidence,
unless `refuse_below` is set: then a best score under it raises `NoAnswerError`
(retryable=False), so a fallback moves on at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelyard.cost.dispatch import mark_sent
from modelyard.errors import BadRequestError, NoAnswerError
from modelyard.local.answers import scored_answer
from modelyard.local.datasets import FaqEntry
from modelyard.local.vectors import Matrix, encode
from modelyard.model import Embedder, Model, ModelInfo, elapsed_ms
from modelyard.types import ChatRequest, ChatResponse, Decision


@dataclass(frozen=True, slots=True)
class FaqIndex:
    """The knowledge base with one unit vector per question paraphrase."""

    entries: tuple[FaqEntry, ...]
    vectors: Matrix
    starts: np.ndarray
    """The first row of `vectors` of each entry (an entry's paraphrases are contiguous)."""

    @classmethod
    def of(cls, entries: Sequence[FaqEntry], vectors: Matrix) -> FaqIndex:
        """An index from entries and the vectors of `questions_of(entries)`, in order."""
        sizes = [len(e.questions) for e in entries]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        return cls(tuple(entries), vectors, starts)

    def search(self, vector: Matrix, k: int) -> list[tuple[FaqEntry, float, str]]:
        """The `k` best entries for one unit vector: (entry, similarity, matched question)."""
        similarities = self.vectors @ vector.reshape(-1)
        best = np.maximum.reduceat(similarities, self.starts)
        ranked = np.argsort(-best, kind="stable")[:k]
        out = []
        for i in ranked:
            entry = self.entries[int(i)]
            start = int(self.starts[i])
            offset = int(np.argmax(similarities[start : start + len(entry.questions)]))
            out.append((entry, float(best[i]), entry.questions[offset]))
        return out


def questions_of(entries: Sequence[FaqEntry]) -> list[str]:
    """Every paraphrase of every entry, in order: what `FaqIndex.of` expects vectors for."""
    return [q for entry in entries for q in entry.questions]


class RetrieverModel(Model):
    """Answers with the best-matching FAQ entry's answer; confidence = its cosine similarity."""

    def __init__(
        self,
        info: ModelInfo,
        embedder: Embedder,
        entries: Sequence[FaqEntry],
        *,
        index: FaqIndex | None = None,
        top_k: int = 3,
        refuse_below: float | None = None,
    ) -> None:
        self.info = info
        self.embedder = embedder
        self.entries = tuple(entries)
        self.index = index
        """None until the first request when the embedder can only embed asynchronously."""
        self.top_k = top_k
        self.refuse_below = refuse_below

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out["entries"] = len(self.entries)
        out["embedder"] = self.embedder.name
        if self.refuse_below is not None:
            out["refuse_below"] = self.refuse_below
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        text = request.last_user_text
        if not text.strip():
            raise BadRequestError("no user question to look up", model=self.name, provider="local")
        mark_sent()  # an in-process model starts at once
        index, spent = await self._index()
        vectors, cost = await encode(self.embedder, [text], deadline=request.deadline)
        spent += cost
        matches = index.search(vectors[0], self.top_k)
        entry, similarity, question = matches[0]
        confidence = min(max(similarity, 0.0), 1.0)
        scores = {e.id: round(s, 4) for e, s, _ in matches}
        if self.refuse_below is not None and confidence < self.refuse_below:
            reason = (
                f"best match {entry.id!r} has similarity {confidence:.2f}, "
                f"below refuse_below {self.refuse_below}"
            )
            error = NoAnswerError(
                f"no knowledge-base entry is close enough: {reason}",
                model=self.name,
                provider="local",
                code="no_match",
                retryable=False,
            )
            error.cost = spent
            decision = Decision(
                node=self.name,
                kind="model",
                reason="refused",
                scores=scores,
                threshold=self.refuse_below,
                latency_ms=elapsed_ms(started),
                cost=spent,
                error=f"{error.kind}: {error.message}",
            )
            raise error.with_decision(decision)
        return scored_answer(
            self.info,
            request,
            entry.answer,
            confidence=confidence,
            scores=scores,
            started=started,
            reason=f"closest: {question!r} (entry {entry.id!r}, similarity {confidence:.2f})",
            extra_cost=spent,
            details={"entry": entry.id, "matched_question": question},
        )

    async def _index(self) -> tuple[FaqIndex, float]:
        if self.index is not None:
            return self.index, 0.0
        vectors, cost = await encode(self.embedder, questions_of(self.entries))
        self.index = FaqIndex.of(self.entries, vectors)
        return self.index, cost
