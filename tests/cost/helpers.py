"""Priced fake models and budget helpers: a fake whose real cost can equal its worst case."""

from __future__ import annotations

from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget, Refusal
from modelyard.cost.budgets import BudgetGuard
from modelyard.cost.prices import bound_input_tokens
from modelyard.model import Capabilities, Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.state.base import StateStore
from modelyard.types import ChatRequest, Usage, user

PRICE_IN = 1.0
PRICE_OUT = 2.0

LONG = "word " * 799 + "end"
"""About 1,000 tokens: a dear answer costs nearly its worst case."""

TIERS = f"""
models:
  cheap:
    local: {{type: fake, default: "cheap answer"}}
    price: {{input: 0.1, output: 0.1}}
  dear:
    local: {{type: fake, default: "{LONG}"}}
    price: {{input: 10.0, output: 30.0}}
    max_output_tokens: 1000
embedders:
  hash: {{local: {{type: hashing}}}}
systems:
  premium: {{type: fallback, chain: [dear]}}
  budget: {{type: fallback, chain: [cheap]}}
"""
"""Two systems: `premium` on a dear model, `budget` on a cheap one."""


def priced(
    name: str = "m", *, latency: float = 0.0, text: str = "ok", **reply: object
) -> ScriptedModel:
    """A fake model at $1/M input and $2/M output, max 100 output tokens."""
    from modelyard.cost.prices import Price

    return ScriptedModel(
        info=ModelInfo(
            name=name,
            kind="fake",
            price=Price(input=PRICE_IN, output=PRICE_OUT),
            capabilities=Capabilities(max_output_tokens=100),
        ),
        default=Reply(text=text, latency=latency, **reply),  # type: ignore[arg-type]
    )


def full_usage(request: ChatRequest) -> Usage:
    """Usage that costs exactly the request's worst case."""
    return Usage(input_tokens=bound_input_tokens(request), output_tokens=request.max_tokens or 100)


def worst(request: ChatRequest) -> float:
    """The worst case of `request` on a `priced` model."""
    usage = full_usage(request)
    return (usage.input_tokens * PRICE_IN + usage.output_tokens * PRICE_OUT) / 1e6


def question(text: str = "What is the capital of France?", **fields: object) -> ChatRequest:
    """A request with max_tokens 50 unless told."""
    fields.setdefault("max_tokens", 50)
    return user(text, **fields)  # type: ignore[arg-type]


class SpyBook(BudgetBook):
    """A BudgetBook that remembers every refusal."""

    def __init__(self, store: StateStore, **kwargs: object) -> None:
        super().__init__(store, **kwargs)  # type: ignore[arg-type]
        self.refusals: list[Refusal] = []

    async def reserve(self, holds):  # type: ignore[no-untyped-def]
        refusal = await super().reserve(holds)
        if refusal is not None:
            self.refusals.append(refusal)
        return refusal


def guard(
    inner: Model,
    book: BudgetBook,
    *budgets: Budget,
    targets: dict[str, Model] | None = None,
) -> BudgetGuard:
    """A guard charging `budgets` (own ones matched by name, the rest per request)."""
    own = [b for b in budgets if b.applies_to_node(inner.name)]
    per_request = [b for b in budgets if b.per_request]
    return BudgetGuard(inner, book=book, own=own, per_request=per_request, targets=targets or {})
