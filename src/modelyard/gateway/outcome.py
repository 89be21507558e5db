"""How one served request ended: its row in the request log, its metrics, what it spent."""

from __future__ import annotations

import time
from dataclasses import replace

from modelyard.cost import scope as request_scope
from modelyard.cost.accounting import NO_MODEL, called, cut_short, spend_rows
from modelyard.cost.bounds import billed_node
from modelyard.cost.budget_counters import Hold
from modelyard.cost.embedding import embedding_row
from modelyard.cost.ledger import Ledger
from modelyard.errors import BudgetExceededError, ClientClosedError, ModelError
from modelyard.gateway.errors import ApiError, from_model_error
from modelyard.gateway.exchange import Call
from modelyard.gateway.headers import upstream_quota_fields
from modelyard.model import Model
from modelyard.observability.decision_log import DecisionLog, Exchange, RequestRecord
from modelyard.observability.metrics import Metrics
from modelyard.providers.upstream_quota import QuotaSeen
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
)


class Outcome:
    """Records how one chat or embedding request ended: the request log, the metrics, what it
    spent."""

    __slots__ = (
        "api",
        "cached",
        "call",
        "captured",
        "decisions",
        "holds",
        "metrics",
        "model",
        "quota",
        "recorded",
        "scope",
        "spent",
        "stream",
        "target",
        "tokens",
        "version",
    )

    def __init__(
        self,
        decisions: DecisionLog,
        metrics: Metrics,
        call: Call,
        target: str,
        api: str,
        stream: bool,
        version: str,
    ) -> None:
        self.decisions = decisions
        self.metrics = metrics
        self.call = call
        self.target = target
        self.api = api
        self.stream = stream
        self.version = version
        self.holds: list[Hold] = []
        self.spent = 0.0
        self.captured: ChatRequest | None = None
        """The request, when its exchange is to be kept (`gateway.capture`)."""
        self.scope = request_scope.RequestScope(entry=target)
        """What the cost wrappers learn while serving it (a cache hit, say)."""
        self.recorded = False
        """Whether its record is written: a request cancelled before that gets one then."""
        self.model: Model | None = None
        """The system or model serving it, once resolved: what a call cut short is billed to."""
        self.cached = False
        """Whether the response cache serves its target's answers (`x-modelyard-cache`)."""
        self.quota: QuotaSeen | None = None
        """The upstream quota headers its calls saw, kept when its caller may see them."""
        self.tokens = 0
        """The tokens it used, as recorded (estimated for a call cut short): what the key's
        tokens per minute are corrected to."""

    def answered(self, response: ChatResponse) -> None:
        """A chat request answered: logged and counted with the provider that answered."""
        self.spent = response.cost
        latency = self._record(200, response, None, response.decision)
        provider, saved = _provider_of(response)
        self.metrics.answered(self.target, response, provider, latency, saved=saved)

    def embedded(self, response: EmbeddingResponse, provider: str) -> None:
        """An embeddings call answered: logged and counted as an answered chat request is."""
        self.spent = response.cost
        latency = self._record(200, response, None, None)
        self.metrics.answered(self.target, response, provider, latency)

    def left(self, model: Model, request: ChatRequest, output_chars: int = 0) -> None:
        """The client left before the answer ended (after `output_chars` characters of a
        stream): recorded as 499, costing what the provider likely bills, as the ledger and
        the budgets count it (`cost.accounting.cut_short`: what its calls that finished were
        billed, by model with their tokens, and the estimate of the one cut)."""
        error = ClientClosedError("the client left before the answer ended")
        self._closed(cut_short(error, model, request, self.scope, output_chars), None)

    def abandoned(self, answer: ChatResponse | EmbeddingResponse, *, began: bool = False) -> None:
        """The client took none of the whole `answer` in time (`began`: it left a stream
        whose answer was generated in full before its last bytes): recorded as 499 with all
        of the answer's cost, split by model as the ledger splits it."""
        error = ClientClosedError(
            "the client left before the answer ended"
            if began
            else "the client took none of the answer in time"
        )
        error.cost, error.usage = answer.cost, answer.usage
        if isinstance(answer, ChatResponse):
            error.decision = answer.decision
        self._closed(error, answer)

    def _closed(
        self, error: ClientClosedError, answer: ChatResponse | EmbeddingResponse | None
    ) -> None:
        self.spent = error.cost  # what the key's budget is settled to
        self.captured = None  # `gateway.capture` keeps answers a caller got
        latency = self._record(ClientClosedError.status_default, answer, error, error.decision)
        status = error.status or 499
        answered = answer.model if answer is not None else None
        self.metrics.failed(
            self.target, error, status, latency, billed=self._billed(), answered=answered
        )

    def failed(self, exc: ModelError) -> ApiError:
        """The model failed, or a budget refused it: logged and counted (a budget's refusal,
        a configured one's or a key's own, with the gateway's refusals, naming the budget;
        what its calls had spent, if any ran, as a failure's); the API error to answer with,
        marked counted, with the cost and config version headers an answer has."""
        self.spent = exc.cost
        error = from_model_error(exc, api=self.api)
        latency = self._record(error.status, None, exc, exc.decision)
        if isinstance(exc, BudgetExceededError):
            route = self.call.scope["path"]  # a served route: a bounded label
            self.metrics.refused(route, error.status, error.type, budget=exc.code or "")
            self.metrics.spend(self.target, exc, billed=self._billed())
        else:
            self.metrics.failed(self.target, exc, error.status, latency, billed=self._billed())
        # what the failed attempts were billed, as an answer's headers say what it cost
        spent = {"x-modelyard-cost": f"{exc.cost:.8f}", "x-modelyard-config-version": self.version}
        quota = upstream_quota_fields(self.quota)
        return replace(error, counted=True, headers={**error.headers, **spent, **quota})

    def over_budget(
        self,
        exc: BudgetExceededError,
        request: ChatRequest | EmbeddingRequest,
        ledger: Ledger | None,
    ) -> ApiError:
        """A virtual key's own budget refused the request before any model ran: recorded and
        counted as a configured budget's refusal is (`failed`), in the ledger too (no model
        named). The API error to answer with."""
        if ledger is not None:
            if isinstance(request, EmbeddingRequest):
                ledger.record([embedding_row(self.target, request, None, exc, called=False)])
            else:
                ledger.record(spend_rows(self.target, request, None, exc))
        return self.failed(exc)

    def _billed(self) -> str | None:
        """The model the ledger charges a call cut short on what serves this request."""
        return billed_node(self.model) if self.model is not None else None

    def refused(self, error: ApiError) -> None:
        """The gateway refused the request itself (a key's limit, an unknown system, a store
        that is down): recorded with its status and reason; the metrics count it apart."""
        self._record(error.status, None, None, None, refusal=error)

    def _record(
        self,
        status: int,
        response: ChatResponse | EmbeddingResponse | None,
        error: ModelError | None,
        decision: Decision | None,
        *,
        refusal: ApiError | None = None,
    ) -> float:
        call = self.call
        self.recorded = True
        seconds = time.perf_counter() - call.started
        # A failure's tokens are the estimate its cost was worked out from, if it was billed.
        usage = response.usage if response is not None else error.usage if error else None
        self.tokens = usage.total_tokens if usage else 0
        exchange = None
        if self.captured is not None and isinstance(response, ChatResponse):
            request = self.captured
            system = (("system", request.system),) if request.system else ()
            asked = (*system, *((m.role, m.text) for m in request.messages))
            exchange = Exchange(messages=asked, answer=response.text)
        reason = None
        if error is not None:
            reason = f"{error.kind}: {error}"
        elif refusal is not None:
            reason = f"{refusal.code or refusal.type}: {refusal.message}"
        self.decisions.record(
            RequestRecord(
                id=call.id,
                at=time.time(),
                key_id=call.key.id if call.key else None,
                target=self.target,
                api=self.api,
                stream=self.stream,
                config_version=self.version,
                status=status,
                model=response.model if response else (_failed_model(error) if error else None),
                provider_model=response.provider_model if response else None,
                latency_ms=seconds * 1000,
                cost=response.cost if response else (error.cost if error else 0.0),
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                tokens_estimated=usage.estimated if usage else False,
                error=reason,
                decision=decision,
                exchange=exchange,
            )
        )
        return seconds


def _failed_model(error: ModelError) -> str | None:
    """The model a failed request's record names: the one that failed, or none (`NO_MODEL`,
    as its ledger row says) when its decision shows no model was called (a budget refused
    it)."""
    decision = error.decision
    if decision is not None and not any(called(d) for d in decision.walk()):
        return NO_MODEL
    return error.model


def _provider_of(response: ChatResponse) -> tuple[str, float]:
    """The provider that answered, and the USD a cache hit saved (0 otherwise)."""
    decision = response.decision
    while decision is not None:
        if decision.kind == "cache":  # a hit called no provider, whoever wrote the answer first
            return "cache", float(decision.details.get("saved", 0.0))
        provider = decision.details.get("provider") if decision.details else None
        if provider:
            return str(provider), 0.0
        decision = decision.children[-1] if decision.children else None
    return "local", 0.0
