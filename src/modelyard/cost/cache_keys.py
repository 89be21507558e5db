"""Cache keys: two requests share an entry only if they must get the same answer.

The exact key hashes the canonical form of every field of the request — every field of
`ChatRequest`, read with `dataclasses.fields`, so a field added later is part of the key
without anyone remembering to add it — except the ones listed in `NOT_IN_KEY`, plus the identity
of what answers (the node's name, the pinned model ids under it, and the version of what decides
its answers: for a config's node, `config.answers`), the tenant (`key_id` is a request field,
so it is in the key) and the shape entries are stored in (`cache_codec.ENTRY_FORMAT`: a
modelyard that stores them otherwise never reads them). The semantic scope is the same hash
with the last user message's text left out, plus the embedder's version: a semantic hit may
differ from the cached request in that text only, and is found by vectors of the same embedder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

import orjson

from modelyard.cost.cache_codec import ENTRY_FORMAT, canonical
from modelyard.model import Model, Wrapper
from modelyard.types import ChatRequest, Message

NOT_IN_KEY = frozenset(
    {"deadline", "request_id", "system_cache", "response_cache", "fails_over_on_429"}
)
"""Request fields that never change the answer: when it must arrive, who is asking, where the
provider's prompt cache breaks (a breakpoint changes what a call is billed, not its text),
whether this cache may serve it, and whether a 429 is retried."""

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?(?:[-_/][^\W_]+)*")
_NEGATIONS = frozenset(
    {
        "not",
        "no",
        "never",
        "none",
        "nothing",
        "nobody",
        "nowhere",
        "neither",
        "nor",
        "cannot",
        "without",
    }
)


def request_form(request: ChatRequest) -> dict[str, Any]:
    """Every answer-changing field of `request`, canonical."""
    return {
        f.name: canonical(getattr(request, f.name))
        for f in dataclasses.fields(request)
        if f.name not in NOT_IN_KEY
    }


def identity(model: Model, version: str) -> str:
    """What answers: the node's name, every pinned model id under it, and `version`, a digest of
    what decides its answers (for a node built from a config, `config.answers.AnswerVersions`:
    the resolved specs it reaches, not the file's text)."""
    ids: list[str] = []

    def walk(node: Model) -> None:
        if isinstance(node, Wrapper):  # retries, breakers, deadlines, budgets: not who answers
            walk(node.inner)
            return
        info = node.info
        ids.append(f"{info.name}={info.provider or ''}:{info.model_id or ''}")
        for child in node.children:
            walk(child)

    walk(model)
    return f"{model.name}|{version}|{','.join(ids)}"


def _digest(parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def exact_key(request: ChatRequest, who: str) -> str:
    """The exact cache key of `request` answered by `who` (an `identity`)."""
    return _digest([who, ENTRY_FORMAT, request_form(request)])


def last_user_index(request: ChatRequest) -> int | None:
    """Where the last user message is, if the request ends with one."""
    if request.messages and request.messages[-1].role == "user":
        return len(request.messages) - 1
    return None


def semantic_scope(request: ChatRequest, who: str, space: str = "") -> str:
    """The exact key of `request` with its last user message's text blanked out, within the
    vector `space` (which embedder made the stored vectors)."""
    index = last_user_index(request)
    assert index is not None
    messages = list(request.messages)
    messages[index] = Message(role="user", content="\x00question\x00")
    form = request_form(dataclasses.replace(request, messages=tuple(messages)))
    return _digest([who, "semantic", space, ENTRY_FORMAT, form])


def details(text: str) -> tuple[list[str], list[str], int]:
    """What two questions must share to share an answer, however similar their embeddings: their
    numbers in order ("order 1234" vs "order 1235"), their codes (words with a digit or two
    capitals: "ORD-ABCD" vs "ORD-ABCE") and how many negations they hold ("is it waterproof"
    vs "is it not waterproof")."""
    words = _WORD.findall(text)
    codes = [w for w in words if any(c.isdigit() for c in w) or sum(c.isupper() for c in w) > 1]
    negations = sum(
        w.lower() in _NEGATIONS or w.lower().endswith(("n't", "n\u2019t")) for w in words
    )
    return _NUMBER.findall(text), codes, negations
