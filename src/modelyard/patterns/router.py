"""Router: sends each request to exactly one route. Rules on request features decide first (in
order); then, if configured, a classifier, semantic or learned policy; else the default route.
The decision records the rule or threshold that decided and every candidate's score."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from modelyard.errors import ModelError
from modelyard.model import Model, ModelInfo
from modelyard.patterns.records import (
    answered,
    common_capabilities,
    failed,
    raise_with,
    restamp,
    since_ms,
)
from modelyard.patterns.routing import RouteChoice, RoutePolicy
from modelyard.patterns.rules import RuleSet
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision


class RouterModel(Model):
    """Routes each request to one of `routes` by `rules`, then `policy`, then `default`."""

    def __init__(
        self,
        name: str,
        routes: Mapping[str, Model],
        default: str,
        *,
        rules: RuleSet | None = None,
        policy: RoutePolicy | None = None,
        deadline: float | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.default = default
        self.rules = rules if rules is not None and rules.rules else None
        self.policy = policy
        self.deadline = deadline
        self.info = ModelInfo(
            name=name, kind="router", capabilities=common_capabilities(list(self.routes.values()))
        )
        self._rule_scores = {route: {route: 1.0} for route in self.routes}

    @property
    def children(self) -> Sequence[Model]:
        extra = self.policy.models() if self.policy is not None else ()
        return (*extra, *self.routes.values())

    @property
    def contenders(self) -> Sequence[Model]:
        return tuple(self.routes.values())

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": "router", "default": self.default}
        if self.rules is not None:
            out["rules"] = "; ".join(rule.describe() for rule in self.rules.rules)
        if self.policy is not None:
            out["policy"] = self.policy.kind
            out.update(self.policy.describe())
        return out

    async def route(self, request: ChatRequest) -> RouteChoice:
        """Which route `request` goes to, and why (no route is called)."""
        if self.rules is not None:
            found = self.rules.match(request)
            if found is not None:
                return RouteChoice(
                    route=found.rule.route,
                    reason=f"rule {found.index} matched ({found.matched})",
                    scores=self._rule_scores[found.rule.route],
                )
        if self.policy is not None:
            choice = await self.policy.choose(request)
            if choice.route is not None:
                return choice
            return RouteChoice(
                route=self.default,
                reason=f"{choice.reason}; default route {self.default!r}",
                scores=choice.scores,
                threshold=choice.threshold,
                cost=choice.cost,
                children=choice.children,
                details=choice.details,
            )
        return RouteChoice(
            route=self.default, reason=f"no rule matched; default route {self.default!r}"
        )

    def _decision(
        self,
        choice: RouteChoice,
        attempt: Decision,
        cost: float,
        started: float,
        error: str | None = None,
    ) -> Decision:
        details: Mapping[str, Any] = choice.details
        return Decision(
            node=self.name,
            kind="router",
            chosen=choice.route,
            reason=choice.reason,
            scores=choice.scores,
            threshold=choice.threshold,
            latency_ms=since_ms(started),
            cost=cost,
            error=error,
            children=(*choice.children, attempt),
            details=details,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        choice = await self.route(request)
        assert choice.route is not None
        target = self.routes[choice.route]
        try:
            response = await target.complete(request)
        except ModelError as exc:
            cost = choice.cost + exc.cost
            decision = self._decision(choice, failed(target, exc), cost, started, str(exc))
            raise raise_with(exc, cost=cost, decision=decision) from None
        cost = choice.cost + response.cost
        decision = self._decision(choice, answered(target, response), cost, started)
        return restamp(response, cost=cost, decision=decision)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        choice = await self.route(request)
        assert choice.route is not None
        target = self.routes[choice.route]
        try:
            async for chunk in target.stream(request):
                if chunk.response is None:
                    yield chunk
                    continue
                response = chunk.response
                cost = choice.cost + response.cost
                decision = self._decision(choice, answered(target, response), cost, started)
                yield Chunk(response=restamp(response, cost=cost, decision=decision))
        except ModelError as exc:
            cost = choice.cost + exc.cost
            decision = self._decision(choice, failed(target, exc), cost, started, str(exc))
            raise raise_with(exc, cost=cost, decision=decision) from None
