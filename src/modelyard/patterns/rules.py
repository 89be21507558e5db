"""Routing rules on request features, compiled once so a decision costs about the same for 10
rules or 1,000.

A rule holds when all its conditions hold; the first rule (in config order) that holds wins.
Conditions: a regex on the last user message, keywords (any of them, whole words, case-blind),
prompt length in estimated tokens, metadata key=value pairs (all), tags (all), tools present,
images present, and the language of the last user message (any of the listed codes).

Rules are indexed by a condition that can be looked up (a metadata pair, a tag, a keyword), so
a request only checks the rules whose indexed condition it meets, plus the few rules that have
no such condition (regex-, length-, tools- or language-only rules are checked one by one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modelyard.cost.prices import estimate_input_tokens
from modelyard.types import ChatRequest

Detector = Callable[[str], tuple[str, float]]
"""Language detection: text -> (ISO 639-1 code, score in [0, 1])."""

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One routing rule: a route and the conditions that send a request there."""

    route: str
    regex: re.Pattern[str] | None = None
    keywords: tuple[str, ...] = ()
    min_tokens: int | None = None
    max_tokens: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    tags: frozenset[str] = frozenset()
    tools: bool | None = None
    images: bool | None = None
    languages: frozenset[str] = frozenset()
    min_language_score: float = 0.0

    def describe(self) -> str:
        """The rule's conditions in words, for `modelyard check` and decisions."""
        parts = []
        if self.regex is not None:
            parts.append(f"regex /{self.regex.pattern}/")
        if self.keywords:
            parts.append("keywords " + "|".join(self.keywords))
        if self.min_tokens is not None:
            parts.append(f"tokens >= {self.min_tokens}")
        if self.max_tokens is not None:
            parts.append(f"tokens <= {self.max_tokens}")
        parts.extend(f"metadata {k}={v}" for k, v in self.metadata)
        if self.tags:
            parts.append("tags " + "+".join(sorted(self.tags)))
        if self.tools is not None:
            parts.append("tools" if self.tools else "no tools")
        if self.images is not None:
            parts.append("images" if self.images else "no images")
        if self.languages:
            parts.append("language " + "|".join(sorted(self.languages)))
        return " and ".join(parts) + f" -> {self.route}"


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The rule that decided, its position, and what about the request matched it."""

    index: int
    rule: Rule
    matched: str


@dataclass(slots=True)
class _Features:
    """What rules read from one request, each computed at most once and only when needed."""

    request: ChatRequest
    text: str
    tokens: int | None = None
    language: tuple[str, float] | None = None
    keyword_hits: dict[int, str] | None = None
    lowered: str | None = None


def _keyword_tokens(keyword: str) -> tuple[str, ...] | None:
    """The keyword as a word sequence, or None when it has characters words cannot hold."""
    tokens = tuple(_WORD.findall(keyword.casefold()))
    return tokens if tokens and " ".join(tokens) == " ".join(keyword.casefold().split()) else None


@dataclass(slots=True)
class RuleSet:
    """Rules compiled into lookup indexes; `match` finds the first rule a request meets."""

    rules: Sequence[Rule]
    detect: Detector | None = None
    _keywords: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    _plain_keywords: dict[int, tuple[str, ...]] = field(default_factory=dict)
    _by_metadata: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    _by_tag: dict[str, list[int]] = field(default_factory=dict)
    _by_keyword: set[int] = field(default_factory=set)
    _unindexed: list[int] = field(default_factory=list)
    _single: dict[str, list[int]] = field(default_factory=dict)
    _longest: int = 0

    def __post_init__(self) -> None:
        for i, rule in enumerate(self.rules):
            if rule.languages and self.detect is None:
                raise ValueError(f"rule {i} needs a language detector")
            indexable = [_keyword_tokens(k) for k in rule.keywords]
            if rule.keywords and all(t is not None for t in indexable):
                for tokens in indexable:
                    assert tokens is not None
                    if len(tokens) == 1:
                        self._single.setdefault(tokens[0], []).append(i)
                    else:
                        self._keywords.setdefault(tokens, []).append(i)
                        self._longest = max(self._longest, len(tokens))
            elif rule.keywords:
                self._plain_keywords[i] = tuple(
                    " ".join(k.casefold().split()) for k in rule.keywords
                )
            if rule.metadata:
                self._by_metadata.setdefault(rule.metadata[0], []).append(i)
            elif rule.tags:
                self._by_tag.setdefault(min(rule.tags), []).append(i)
            elif rule.keywords and i not in self._plain_keywords:
                self._by_keyword.add(i)
            else:
                self._unindexed.append(i)

    def match(self, request: ChatRequest) -> RuleMatch | None:
        """The first rule `request` meets, or None."""
        features = _Features(request=request, text=request.last_user_text)
        candidates = list(self._unindexed)
        if self._by_metadata:
            for pair in request.metadata.items():
                candidates.extend(self._by_metadata.get(pair, ()))
        if self._by_tag:
            for tag in request.tags:
                candidates.extend(self._by_tag.get(tag, ()))
        if self._by_keyword:
            candidates.extend(i for i in self._hits(features) if i in self._by_keyword)
        if len(candidates) > 1:
            candidates.sort()
        for i in candidates:
            matched = self._holds(i, self.rules[i], features)
            if matched is not None:
                return RuleMatch(index=i, rule=self.rules[i], matched=matched)
        return None

    def _hits(self, features: _Features) -> dict[int, str]:
        """For every keyword rule the text meets, the first keyword that met it."""
        if features.keyword_hits is not None:
            return features.keyword_hits
        hits: dict[int, str] = {}
        words = _WORD.findall(features.text.casefold())
        single = self._single
        for word in words:
            rules = single.get(word)
            if rules is not None:
                for rule in rules:
                    hits.setdefault(rule, word)
        index = self._keywords
        for size in range(2, self._longest + 1):
            for start in range(len(words) - size + 1):
                key = tuple(words[start : start + size])
                for rule in index.get(key, ()):
                    hits.setdefault(rule, " ".join(key))
        features.keyword_hits = hits
        return hits

    def _holds(self, i: int, rule: Rule, f: _Features) -> str | None:
        """What matched, in words, when every condition of `rule` holds; else None."""
        said: list[str] = []
        request = f.request
        if rule.tools is not None and bool(request.tools) != rule.tools:
            return None
        if rule.images is not None:
            images = any(m.has_image for m in request.messages)
            if images != rule.images:
                return None
        for key, value in rule.metadata:
            if request.metadata.get(key) != value:
                return None
        if rule.tags and not rule.tags.issubset(request.tags):
            return None
        if rule.keywords:
            keyword = self._keyword(i, f)
            if keyword is None:
                return None
            said.append(f"keyword {keyword!r}")
        if rule.regex is not None:
            found = rule.regex.search(f.text)
            if found is None:
                return None
            said.append(f"regex /{rule.regex.pattern}/ matched {found.group(0)[:40]!r}")
        if rule.min_tokens is not None or rule.max_tokens is not None:
            if f.tokens is None:
                f.tokens = estimate_input_tokens(request)
            if rule.min_tokens is not None and f.tokens < rule.min_tokens:
                return None
            if rule.max_tokens is not None and f.tokens > rule.max_tokens:
                return None
            said.append(f"{f.tokens} tokens")
        if rule.languages:
            if f.language is None:
                assert self.detect is not None
                f.language = self.detect(f.text)
            code, score = f.language
            if code not in rule.languages or score < rule.min_language_score:
                return None
            said.append(f"language {code} ({score:.2f})")
        said.extend(f"metadata {k}={v}" for k, v in rule.metadata)
        if rule.tags:
            said.append("tags " + "+".join(sorted(rule.tags)))
        if rule.tools is not None:
            said.append("tools present" if rule.tools else "no tools")
        if rule.images is not None:
            said.append("images present" if rule.images else "no images")
        return ", ".join(said)

    def _keyword(self, i: int, f: _Features) -> str | None:
        plain = self._plain_keywords.get(i)
        if plain is None:
            return self._hits(f).get(i)
        if f.lowered is None:
            f.lowered = " ".join(f.text.casefold().split())
        return next((k for k in plain if k in f.lowered), None)
